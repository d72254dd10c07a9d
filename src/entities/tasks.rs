//! `tasks`: a card on a board. Deleted tasks keep a tombstone row (`deleted_at`).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// Where a task stands.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    EnumIter,
    DeriveActiveEnum,
    Serialize,
    Deserialize,
    async_graphql::Enum,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Not started.
    #[sea_orm(string_value = "TODO")]
    Todo,
    /// Being worked on.
    #[sea_orm(string_value = "IN_PROGRESS")]
    InProgress,
    /// Waiting for review.
    #[sea_orm(string_value = "IN_REVIEW")]
    InReview,
    /// Finished.
    #[sea_orm(string_value = "DONE")]
    Done,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "tasks")]
#[serde(rename_all = "camelCase")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TaskStatus,
    pub position: f64,
    pub priority: i32,
    pub due_at: Option<DateTimeUtc>,
    pub assignee_id: Option<String>,
    pub version: i32,
    pub created_by: String,
    pub updated_by: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

impl Model {
    /// The ids of the users this task names (for batching and event payloads).
    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        [
            Some(&self.created_by),
            Some(&self.updated_by),
            self.assignee_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
