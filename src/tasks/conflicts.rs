//! Conflict notices: a write that lost is pushed to the `conflicts` subscriptions of the same
//! user in the same project, on every connection and instance, so that the tab or device
//! that made the optimistic change can roll it back. Conflicts change nothing, so they are
//! not in the log; a notice lost on a Redis blip is not repaired (the mutation's own answer
//! carries the conflict too).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::service::Conflict;
use crate::realtime::{Bus, ChannelHandler};

/// The bus channel of conflict notices.
pub const CHANNEL: &str = "tasknest:conflicts";

/// A conflict, addressed to one user in one project.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConflictNotice {
    pub project_id: Uuid,
    pub user_id: String,
    pub conflict: Conflict,
}

/// This instance's conflict notices: published to every instance, received from them.
pub struct ConflictNotices {
    local: broadcast::Sender<Arc<ConflictNotice>>,
    bus: Arc<dyn Bus>,
}

impl ConflictNotices {
    /// Notices travelling to other instances on `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            // Rare messages, filtered by each subscriber: one channel is enough.
            local: broadcast::channel(256).0,
            bus,
        })
    }

    /// Tells `user_id`'s `conflicts` subscriptions in `project_id`, everywhere, that its
    /// write lost.
    pub fn publish(&self, project_id: Uuid, user_id: &str, conflict: &Conflict) {
        let notice = Arc::new(ConflictNotice {
            project_id,
            user_id: user_id.to_owned(),
            conflict: conflict.clone(),
        });
        let _ = self.local.send(notice.clone());
        self.bus.publish(
            CHANNEL.into(),
            Box::new(move || serde_json::to_vec(&*notice).ok()),
        );
    }

    /// Notices from now on (all projects and users; subscribers filter).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ConflictNotice>> {
        self.local.subscribe()
    }
}

impl ChannelHandler for ConflictNotices {
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<ConflictNotice>(payload) {
            Ok(notice) => {
                let _ = self.local.send(Arc::new(notice));
            }
            Err(err) => tracing::warn!(error = %err, "undecodable conflict notice on the bus"),
        }
    }
}
