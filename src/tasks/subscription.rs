//! The `conflicts` subscription: a user's lost writes, pushed to all of its connections.

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::graphql::TaskConflict;
use crate::auth;
use crate::entities::project_members::Role;
use crate::ids::parse_uuid;
use crate::projects::access;
use crate::state::AppState;

/// Subscriptions about the viewer's own task writes.
#[derive(Default)]
pub struct TaskSubscription;

#[Subscription]
impl TaskSubscription {
    /// Conflicts of the viewer's own writes in this project, from any of its connections
    /// and instances: the other tab or device that made an optimistic change learns here
    /// that it lost, with the server's task to roll back to.
    async fn conflicts(
        &self,
        ctx: &Context<'_>,
        project_id: ID,
    ) -> Result<BoxStream<'static, TaskConflict>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        access::require(&state.db, project_id, viewer, Role::Viewer).await?;
        let user_id = viewer.user_id.clone();
        let notices = tokio_stream::wrappers::BroadcastStream::new(state.conflicts.subscribe());
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
