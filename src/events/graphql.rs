//! GraphQL for the log: `ProjectEvent`, `EventPage` and the `events` catch-up query.

use std::sync::Arc;

use async_graphql::{Context, ID, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::CommittedEvent;
use super::service;
use crate::auth;
use crate::entities::events::{self, EventKind};
use crate::graphql::app_state;
use crate::ids::parse_uuid;
use crate::tasks::graphql::Task;
use crate::users::{User, resolve_user};

/// One change in a project, numbered 1, 2, 3, … per project without gaps.
#[derive(Clone)]
pub struct ProjectEvent(Arc<CommittedEvent>);

impl ProjectEvent {
    /// Wraps a log row, decoding its payload.
    pub fn new(event: events::Model) -> Self {
        Self(CommittedEvent::decode(event))
    }
}

impl From<Arc<CommittedEvent>> for ProjectEvent {
    fn from(event: Arc<CommittedEvent>) -> Self {
        Self(event)
    }
}

/// One change in a project, numbered 1, 2, 3, … per project without gaps.
#[Object]
impl ProjectEvent {
    /// Position in the project's log: 1, 2, 3, … with no gaps and no repeats.
    async fn seq(&self) -> i64 {
        self.0.row.seq
    }

    /// The project the event belongs to.
    async fn project_id(&self) -> ID {
        self.0.row.project_id.into()
    }

    /// What happened.
    async fn kind(&self) -> EventKind {
        self.0.row.kind
    }

    /// When it was committed.
    async fn at(&self) -> DateTime<Utc> {
        self.0.row.created_at
    }

    /// Who did it.
    async fn actor(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(resolve_user(ctx, &self.0.row.actor_id, Some(&self.0.users)).await?)
    }

    /// The task concerned, for task events.
    async fn task_id(&self) -> Option<ID> {
        self.0.row.task_id.map(Into::into)
    }

    /// The task as it is after this event; null for TASK_DELETED and non-task events.
    async fn task(&self) -> Option<Task> {
        if self.0.row.kind == EventKind::TaskDeleted {
            return None;
        }
        self.0
            .payload
            .task
            .clone()
            .map(|t| Task::with_users(t, self.0.users.clone()))
    }

    /// The fields that changed, `{"field": newValue}` by GraphQL input name: the task's
    /// fields for TASK_UPDATED, `name`/`description` for PROJECT_UPDATED, `userId`/`role`
    /// for member events.
    async fn changes(&self) -> Option<Json<Value>> {
        self.0
            .payload
            .changes
            .clone()
            .map(|c| Json(Value::Object(c)))
    }

    /// Echoed from the mutation input that caused the event.
    async fn client_mutation_id(&self) -> Option<&str> {
        self.0.row.client_mutation_id.as_deref()
    }
}

/// A page of a project's log.
#[derive(SimpleObject)]
pub struct EventPage {
    /// Events in ascending seq.
    events: Vec<ProjectEvent>,
    /// The project's newest seq (the same as `Project.lastSeq`).
    last_seq: i64,
    /// Whether events after this page exist: ask again with `after` = the last seq here.
    has_more: bool,
}

/// Queries of the event log.
#[derive(Default)]
pub struct EventQuery;

#[Object]
impl EventQuery {
    /// Committed events with seq > `after`, ascending, at most `limit` (capped at 1,000):
    /// how a client catches up after being away.
    async fn events(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        #[graphql(
            default_with = "Some(0)",
            desc = "Return events after this seq (null means 0)."
        )]
        after: Option<i64>,
        #[graphql(
            default_with = "Some(100)",
            desc = "Page size, 1–1,000 (null means 100)."
        )]
        limit: Option<i32>,
    ) -> Result<EventPage> {
        let viewer = auth::viewer(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        let range = service::list(
            app_state(ctx)?,
            viewer,
            project_id,
            after.unwrap_or(0),
            limit.unwrap_or(100),
        )
        .await?;
        Ok(EventPage {
            events: range.events.into_iter().map(ProjectEvent::new).collect(),
            last_seq: range.last_seq,
            has_more: range.has_more,
        })
    }
}
