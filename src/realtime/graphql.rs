//! The `projectEvents` subscription.

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::{Stream, StreamExt};

use crate::auth;
use crate::entities::project_members::Role;
use crate::error::AppError;
use crate::events::graphql::ProjectEvent;
use crate::graphql::app_state;
use crate::ids::parse_uuid;
use crate::projects::access;

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
    ) -> Result<impl Stream<Item = Result<ProjectEvent>> + use<>> {
        let viewer = auth::viewer(ctx)?;
        let state = app_state(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        if after.is_some_and(|a| a < 0) {
            return Err(AppError::bad_input("after", "after must be 0 or more").into());
        }
        access::require(&state.db, project_id, &viewer.user_id, Role::Viewer).await?;
        let stream =
            super::stream::project_events(state.clone(), viewer.user_id.clone(), project_id, after);
        Ok(stream.map(|item| item.map(ProjectEvent::from).map_err(Into::into)))
    }
}
