//! `project_members`: who belongs to a project, with which role.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A member's role in a project. Each role can do what the ones below it can.
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
pub enum Role {
    /// Changes or deletes the project and manages its members.
    #[sea_orm(string_value = "OWNER")]
    Owner,
    /// Creates, changes and deletes tasks.
    #[sea_orm(string_value = "EDITOR")]
    Editor,
    /// Reads the project, its tasks and its events.
    #[sea_orm(string_value = "VIEWER")]
    Viewer,
}

impl Role {
    /// Rank for "at least this role" checks.
    pub fn rank(self) -> u8 {
        match self {
            Role::Viewer => 1,
            Role::Editor => 2,
            Role::Owner => 3,
        }
    }

    /// Whether this role includes everything `other` may do.
    pub fn at_least(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "project_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub project_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub role: Role,
    pub joined_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
