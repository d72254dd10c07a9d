//! GraphQL for presence: `Presence`, `PresenceEvent`, `presence`, `focusTask` and
//! `presenceEvents`.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sea_orm::EntityTrait;

use super::{PresenceEntry, PresenceEventKind};
use crate::auth::{self, Viewer};
use crate::entities::project_members::Role;
use crate::entities::tasks;
use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::ids::parse_uuid;
use crate::projects::access;
use crate::state::AppState;
use crate::users::User;

/// Someone present in a project.
#[derive(SimpleObject)]
#[graphql(name = "Presence")]
pub struct PresenceView {
    /// Who.
    user: User,
    /// The task this user is viewing or editing, if any.
    focus_task_id: Option<ID>,
    /// Since when the user has been present (its first connection).
    online_since: DateTime<Utc>,
    /// The last sign of life from the user's connections.
    last_seen_at: DateTime<Utc>,
}

impl From<PresenceEntry> for PresenceView {
    fn from(entry: PresenceEntry) -> Self {
        Self {
            user: entry.user.into(),
            focus_task_id: entry.focus_task_id.map(Into::into),
            online_since: entry.online_since,
            last_seen_at: entry.last_seen_at,
        }
    }
}

/// A presence change in a project.
#[derive(SimpleObject)]
#[graphql(name = "PresenceEvent")]
pub struct PresenceEventView {
    /// What happened.
    kind: PresenceEventKind,
    /// The project.
    project_id: ID,
    /// Who.
    user: User,
    /// The focused task after the change (FOCUS_CHANGED), if any.
    focus_task_id: Option<ID>,
    /// When it happened.
    at: DateTime<Utc>,
}

fn snapshot(viewer: &Viewer) -> UserSnapshot {
    UserSnapshot {
        id: viewer.user_id.clone(),
        name: viewer.name.clone(),
        avatar_url: viewer.avatar_url.clone(),
    }
}

/// Queries about presence.
#[derive(Default)]
pub struct PresenceQuery;

#[Object]
impl PresenceQuery {
    /// Who is present in the project now, with focus; the same answer on every instance.
    async fn presence(&self, ctx: &Context<'_>, project_id: ID) -> Result<Vec<PresenceView>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        access::require(&state.db, project_id, viewer, Role::Viewer).await?;
        Ok(state
            .presence
            .list(project_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }
}

/// Mutations of presence.
#[derive(Default)]
pub struct PresenceMutation;

#[Object]
impl PresenceMutation {
    /// Sets the task the viewer is viewing or editing (null clears it). The viewer must be
    /// present (hold `presenceEvents` of the project). Others get a FOCUS_CHANGED event,
    /// coalesced when focus changes quickly.
    async fn focus_task(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
        task_id: Option<ID>,
    ) -> Result<PresenceView> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        let task_id = task_id.map(|t| parse_uuid("taskId", &t)).transpose()?;
        access::require(&state.db, project_id, viewer, Role::Viewer).await?;
        if let Some(task_id) = task_id {
            let task = tasks::Entity::find_by_id(task_id)
                .one(&state.db)
                .await
                .map_err(AppError::from)?;
            if !task.is_some_and(|t| t.project_id == project_id && t.deleted_at.is_none()) {
                return Err(AppError::NotFound("task").into());
            }
        }
        state
            .presence
            .focus(project_id, snapshot(viewer), task_id)
            .await?;
        let me = state
            .presence
            .list(project_id)
            .await?
            .into_iter()
            .find(|p| p.user.id == viewer.user_id)
            .ok_or_else(|| {
                AppError::bad_input("projectId", "you are not present in this project")
            })?;
        Ok(me.into())
    }
}

/// Presence subscriptions.
#[derive(Default)]
pub struct PresenceSubscription;

#[Subscription]
impl PresenceSubscription {
    /// Presence changes in the project. The viewer counts as present while it holds this
    /// subscription: the first one sends JOINED to the others, the last one ending sends
    /// LEFT.
    async fn presence_events(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> Result<BoxStream<'static, PresenceEventView>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        access::require(&state.db, project_id, viewer, Role::Viewer).await?;
        // Following the project before joining, so that whoever reacts to this JOINED is
        // heard; subscribing after it, so that the viewer is not told of its own arrival.
        state.presence.open(project_id).await;
        let guard = Arc::new(state.presence.join(project_id, snapshot(viewer)).await?);
        let events = tokio_stream::wrappers::BroadcastStream::new(
            state.presence.subscribe(project_id).await,
        );
        Ok(events
            .filter_map(move |event| {
                // The stream owns the guard: when the subscription ends, the viewer leaves.
                let _present = &guard;
                let view = event.ok().map(|e| PresenceEventView {
                    kind: e.kind,
                    project_id: e.project_id.into(),
                    user: e.user.clone().into(),
                    focus_task_id: e.focus_task_id.map(Into::into),
                    at: e.at,
                });
                std::future::ready(view)
            })
            .boxed())
    }
}
