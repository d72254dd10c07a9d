//! GraphQL for the log: `ProjectEvent`, `EventPage`, the `events` catch-up query and the
//! `projectEvents` subscription.

use std::sync::Arc;

use async_graphql::{Context, ID, Json, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::CommittedEvent;
use super::service;
use crate::auth;
use crate::entities::events::{self, ActorVia, EventKind};
use crate::entities::project_members::Role;
use crate::error::AppError;
use crate::ids::parse_uuid;
use crate::projects::access;
use crate::realtime::stream::{self, ResumeAfter, SeqTap, SharedFeed, Subscriber};
use crate::state::AppState;
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

    /// How the actor acted: in a session of their own, or through one of their API tokens.
    async fn actor_via(&self) -> ActorVia {
        self.0.row.actor_via
    }

    /// The name of the API token the actor used (as it was then); null for a session.
    async fn actor_token_name(&self) -> Option<&str> {
        self.0.row.actor_token_name.as_deref()
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
            &AppState::from_ctx(ctx)?.db,
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

/// Subscriptions to a project's events.
#[derive(Default)]
pub struct EventSubscription;

#[Subscription]
impl EventSubscription {
    /// Replays committed events with seq > `after` (when given), then goes on live:
    /// strictly ascending seq, no gaps, no duplicates. Without `after`, live from now.
    /// Ends with `FORBIDDEN` if the viewer is removed from the project, and after
    /// PROJECT_DELETED. An `after` older than the log keeps gives `CURSOR_EXPIRED`.
    async fn project_events(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        #[graphql(desc = "Replay events after this seq first.")] after: Option<i64>,
    ) -> Result<BoxStream<'static, Result<ProjectEvent>>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        // A shared execution feeds its events in; its members were checked one by one.
        if let Some(feed) = ctx.data_opt::<SharedFeed>() {
            let receiver = feed
                .0
                .lock()
                .map_err(|_| AppError::Internal(anyhow::anyhow!("shared feed poisoned")))?
                .take()
                .ok_or_else(|| AppError::Internal(anyhow::anyhow!("shared feed taken twice")))?;
            let events = tokio_stream::wrappers::ReceiverStream::new(receiver);
            return Ok(events.map(|event| Ok(ProjectEvent::from(event))).boxed());
        }
        // A transport's resume point (SSE's Last-Event-ID, a shared member continuing alone)
        // is where the client really is: it wins over the `after` the operation was first
        // sent with.
        let after = ctx.data_opt::<ResumeAfter>().map(|r| r.0).or(after);
        if after.is_some_and(|a| a < 0) {
            return Err(AppError::bad_input("after", "after must be 0 or more").into());
        }
        access::require(&state.db, project_id, viewer, Role::Viewer).await?;
        let stream = stream::project_events(
            state.realtime.hub.clone(),
            Subscriber::User(viewer.user_id.clone()),
            project_id,
            after,
        );
        let tap = ctx.data_opt::<SeqTap>().map(|tap| SeqTap(tap.0.clone()));
        Ok(stream
            .map(move |item| {
                if let (Ok(event), Some(tap)) = (&item, &tap) {
                    tap.note(event.seq());
                }
                item.map(ProjectEvent::from).map_err(Into::into)
            })
            .boxed())
    }
}
