//! Real-time delivery: the bus that carries committed events between instances, the rooms
//! that put them in order per project (repairing gaps from the log), the subscriber streams,
//! and TaskNest's own graphql-ws protocol layer.
//!
//! The database log is the source of truth; the bus is only a fast path. A room delivers
//! seq N+1 only after N, fetching from the log whatever the bus lost.

pub mod bus;
pub mod conflicts;
pub mod connections;
pub mod graphql;
pub mod hub;
pub mod multiplex;
mod operation;
pub mod redis_bus;
pub mod stream;
pub mod ws;

use std::sync::Arc;

use crate::entities::events;
use crate::events::CommittedEvent;
use crate::metrics::Metrics;
use crate::tasks::service::Conflict;

use conflicts::ConflictNotice;

pub use bus::{Bus, BusStatus, InProcessBus};
pub use hub::Hub;

/// The realtime side of the application state.
#[derive(Clone)]
pub struct Realtime {
    /// Per-project rooms of this instance.
    pub hub: Arc<Hub>,
    /// How committed events reach every instance.
    pub bus: Arc<dyn Bus>,
    /// Where events published are counted.
    pub metrics: Arc<Metrics>,
}

impl Realtime {
    /// Announces an event after its transaction committed. Never waits on the network: a
    /// mutation's answer does not depend on the bus.
    pub fn committed(&self, row: events::Model) {
        self.metrics.events_published.inc();
        self.bus.publish(CommittedEvent::decode(row));
    }

    /// Tells `user_id`'s `conflicts` subscriptions in `project_id` that its write lost.
    pub fn conflict(&self, project_id: uuid::Uuid, user_id: &str, conflict: &Conflict) {
        self.bus.publish_conflict(Arc::new(ConflictNotice {
            origin: self.hub.instance(),
            project_id,
            user_id: user_id.to_owned(),
            conflict: conflict.clone(),
        }));
    }
}
