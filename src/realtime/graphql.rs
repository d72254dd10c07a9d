//! The `projectEvents` subscription.

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::multiplex::{ResumeAfter, SharedFeed};

use crate::auth;
use crate::entities::project_members::Role;
use crate::error::AppError;
use crate::events::graphql::ProjectEvent;
use crate::graphql::app_state;
use crate::ids::parse_uuid;
use crate::projects::access;
use crate::tasks::graphql::TaskConflict;

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
        let state = app_state(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        // A shared execution group feeds its events in; its members were checked one by one.
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
        let after = after.or_else(|| ctx.data_opt::<ResumeAfter>().map(|r| r.0));
        if after.is_some_and(|a| a < 0) {
            return Err(AppError::bad_input("after", "after must be 0 or more").into());
        }
        access::require(&state.db, project_id, &viewer.user_id, Role::Viewer).await?;
        let stream =
            super::stream::project_events(state.clone(), viewer.user_id.clone(), project_id, after);
        Ok(stream
            .map(|item| item.map(ProjectEvent::from).map_err(Into::into))
            .boxed())
    }

    /// Conflicts of the viewer's own writes in this project, from any of its connections
    /// and instances: the other tab or device that made an optimistic change learns here
    /// that it lost, with the server's task to roll back to.
    async fn conflicts(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> Result<BoxStream<'static, TaskConflict>> {
        let viewer = auth::viewer(ctx)?;
        let state = app_state(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        access::require(&state.db, project_id, &viewer.user_id, Role::Viewer).await?;
        let user_id = viewer.user_id.clone();
        let notices =
            tokio_stream::wrappers::BroadcastStream::new(state.realtime.hub.conflict_notices());
        Ok(notices
            .filter_map(move |notice| {
                let wanted = notice
                    .ok()
                    .filter(|n| n.project_id == project_id && n.user_id == user_id)
                    .map(|n| TaskConflict::from(n.conflict.clone()));
                std::future::ready(wanted)
            })
            .boxed())
    }
}
