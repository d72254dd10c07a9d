//! Real-time delivery: carrying committed events to subscribers. The bus between instances
//! (opaque channel messages; each channel's owner registers its handler), the rooms that put
//! a project's events in order (repairing gaps from the log), the sequenced broadcast
//! subscribers join without a gap, and the subscriber streams. No wire protocol lives here:
//! transports (`crate::http`) consume these streams.
//!
//! The database log is the source of truth; the bus is only a fast path. A room delivers
//! seq N+1 only after N, fetching from the log whatever the bus lost.

pub mod bus;
pub mod hub;
pub mod redis_bus;
pub mod runtime;
pub mod sequenced;
pub mod stream;

use std::sync::Arc;

use crate::entities::events;
use crate::events::CommittedEvent;
use crate::events::txn::Announce;
use crate::metrics::Metrics;

pub use bus::{Bus, BusStatus, ChannelHandler, Channels, LocalBus};
pub use hub::Hub;

/// The bus channels of committed events: one per project, `tasknest:events:{<project id>}`,
/// followed by the instances that have a room for it. The braces are a Redis Cluster hash
/// tag: a project's channel and its keys hash to one slot.
pub const EVENTS: &str = "tasknest:events:";

/// The bus channel of one project's committed events.
pub fn events_channel(project_id: uuid::Uuid) -> String {
    format!("{EVENTS}{{{project_id}}}")
}

/// The realtime side of the application state.
#[derive(Clone)]
pub struct Realtime {
    /// Per-project rooms of this instance.
    pub hub: Arc<Hub>,
    /// How messages reach the other instances.
    pub bus: Arc<dyn Bus>,
    /// Where events published are counted.
    pub metrics: Arc<Metrics>,
    /// The fan-out's own runtime (see [`runtime`]), where WebSocket connections run.
    pub runtime: tokio::runtime::Handle,
}

/// Committed events go to this instance's rooms straight from memory (its subscribers do
/// not depend on the bus at all), then to the other instances. Never waits on the network:
/// a mutation's answer does not depend on the bus.
impl Announce for Realtime {
    fn committed(&self, row: events::Model) {
        self.metrics.events_published.inc();
        let event = CommittedEvent::decode(row);
        self.hub.deliver(event.clone());
        self.bus.publish(
            events_channel(event.row.project_id).into(),
            Box::new(move || match serde_json::to_vec(&event.row) {
                Ok(bytes) => Some(bytes),
                Err(err) => {
                    tracing::error!(error = %err, "cannot encode an event for the bus");
                    None
                }
            }),
        );
    }
}
