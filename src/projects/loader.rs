//! Batched member lists, so that listing projects with their members costs one query.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::entities::project_members;

/// Loads the members of projects by project id.
pub struct MembersLoader {
    db: DatabaseConnection,
}

impl MembersLoader {
    /// A loader on `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl Loader<Uuid> for MembersLoader {
    type Value = Vec<project_members::Model>;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = project_members::Entity::find()
            .filter(project_members::Column::ProjectId.is_in(keys.iter().copied()))
            .order_by_asc(project_members::Column::JoinedAt)
            .order_by_asc(project_members::Column::UserId)
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        let mut by_project: HashMap<Uuid, Self::Value> = HashMap::new();
        for row in rows {
            by_project.entry(row.project_id).or_default().push(row);
        }
        Ok(by_project)
    }
}
