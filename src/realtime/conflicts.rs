//! Conflict notices: a write that lost is pushed to the `conflicts` subscriptions of the same
//! user in the same project, on every connection and instance, so that the tab or device
//! that made the optimistic change can roll it back. Conflicts change nothing, so they are
//! not in the log; a notice lost on a Redis blip is not repaired (the mutation's own answer
//! carries the conflict too).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::tasks::service::Conflict;

/// A conflict, addressed to one user in one project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictNotice {
    /// The instance that published it (it delivers its own locally, not from Redis).
    pub origin: Uuid,
    pub project_id: Uuid,
    pub user_id: String,
    pub conflict: Conflict,
}
