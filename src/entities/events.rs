//! `events`: the per-project log, unique on (project_id, seq).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// What an event records.
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
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(32))")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    /// The project's name or description changed; `changes` holds the new values.
    #[sea_orm(string_value = "PROJECT_UPDATED")]
    ProjectUpdated,
    /// The project was deleted; nothing follows.
    #[sea_orm(string_value = "PROJECT_DELETED")]
    ProjectDeleted,
    /// A user joined the project; `changes` holds `userId` and `role`.
    #[sea_orm(string_value = "MEMBER_ADDED")]
    MemberAdded,
    /// A member's role changed; `changes` holds `userId` and the new `role`.
    #[sea_orm(string_value = "MEMBER_ROLE_CHANGED")]
    MemberRoleChanged,
    /// A member left or was removed; `changes` holds `userId`.
    #[sea_orm(string_value = "MEMBER_REMOVED")]
    MemberRemoved,
    /// A task was created; `task` holds it.
    #[sea_orm(string_value = "TASK_CREATED")]
    TaskCreated,
    /// A task changed; `changes` holds the changed fields, `task` the result.
    #[sea_orm(string_value = "TASK_UPDATED")]
    TaskUpdated,
    /// A task was deleted; `task` is null.
    #[sea_orm(string_value = "TASK_DELETED")]
    TaskDeleted,
    /// A webhook was added; `changes` holds `webhookId`, `urlHost` and `eventKinds`.
    #[sea_orm(string_value = "WEBHOOK_CREATED")]
    WebhookCreated,
    /// A webhook changed (or its secret was rotated); `changes` holds `webhookId` and
    /// what changed (`urlHost`, `eventKinds`, `description`, `enabled`, `secretRotated`).
    #[sea_orm(string_value = "WEBHOOK_UPDATED")]
    WebhookUpdated,
    /// A webhook was deleted; `changes` holds `webhookId`.
    #[sea_orm(string_value = "WEBHOOK_DELETED")]
    WebhookDeleted,
}

/// How an event's actor acted.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
pub enum ActorVia {
    /// A signed-in user's session token (the server's own or an identity provider's).
    #[default]
    #[sea_orm(string_value = "SESSION")]
    Session,
    /// One of the user's API tokens; `actorTokenName` names it.
    #[sea_orm(string_value = "API_TOKEN")]
    ApiToken,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub project_id: Uuid,
    pub seq: i64,
    pub kind: EventKind,
    pub task_id: Option<Uuid>,
    pub actor_id: String,
    /// Through what the actor acted.
    pub actor_via: ActorVia,
    /// The API token's name when `actor_via` is `ApiToken`.
    pub actor_token_name: Option<String>,
    pub payload: Json,
    pub client_mutation_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
