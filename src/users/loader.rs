//! Batched user lookups, so that a page of tasks costs one user query, not one per task.

use std::collections::HashMap;

use async_graphql::Context;
use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use super::User;
use crate::entities::users;
use crate::error::AppError;
use crate::events::UserSnapshot;

/// Loads users by id in batches.
pub struct UserLoader {
    db: DatabaseConnection,
}

impl UserLoader {
    /// A loader on `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl Loader<String> for UserLoader {
    type Value = users::Model;
    type Error = std::sync::Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = users::Entity::find()
            .filter(users::Column::Id.is_in(keys.iter().cloned()))
            .all(&self.db)
            .await
            .map_err(std::sync::Arc::new)?;
        Ok(rows.into_iter().map(|u| (u.id.clone(), u)).collect())
    }
}

/// The per-request user loader type.
pub type UserDataLoader = DataLoader<UserLoader, HashMapCache>;

/// Loads every user in `ids` in one batch, so that the resolvers that follow hit the
/// request's cache instead of racing the batch window.
pub async fn prefetch_users(
    ctx: &Context<'_>,
    ids: impl IntoIterator<Item = String>,
) -> Result<(), AppError> {
    let loader = ctx
        .data::<UserDataLoader>()
        .map_err(|_| anyhow::anyhow!("UserLoader missing from the request"))?;
    loader
        .load_many(ids)
        .await
        .map_err(|e| anyhow::anyhow!("loading users: {e}"))?;
    Ok(())
}

/// The user `id`: from `embedded` (an event's own snapshot) when it has it, otherwise
/// through the request's [`UserLoader`]. A user row that vanished reads as its bare id.
pub async fn resolve_user(
    ctx: &Context<'_>,
    id: &str,
    embedded: Option<&HashMap<String, UserSnapshot>>,
) -> Result<User, AppError> {
    if let Some(user) = embedded.and_then(|users| users.get(id)) {
        return Ok(user.clone().into());
    }
    let loader = ctx
        .data::<UserDataLoader>()
        .map_err(|_| anyhow::anyhow!("UserLoader missing from the request"))?;
    let user = loader
        .load_one(id.to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("loading user {id}: {e}"))?;
    Ok(match user {
        Some(user) => user.into(),
        None => User {
            id: id.to_owned().into(),
            name: id.to_owned(),
            avatar_url: None,
        },
    })
}
