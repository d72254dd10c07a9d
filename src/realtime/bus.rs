//! The bus: how a committed event reaches the rooms of every instance.

use std::sync::Arc;

use super::Hub;
use super::conflicts::ConflictNotice;
use crate::events::CommittedEvent;

/// Health of the bus, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusStatus {
    /// In-process only: nothing to be down.
    InProcess,
    /// Connected to Redis.
    Up,
    /// Redis unreachable: local delivery and the log repair still work; other instances see
    /// this instance's events through their periodic log checks only.
    Down,
}

impl BusStatus {
    /// The word `/readyz` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "disabled",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Carries committed events to every instance's rooms, this instance's included.
pub trait Bus: Send + Sync + 'static {
    /// Publishes without waiting; failures are logged and repaired from the log.
    fn publish(&self, event: Arc<CommittedEvent>);
    /// Publishes a conflict notice without waiting; a lost one is not repaired.
    fn publish_conflict(&self, notice: Arc<ConflictNotice>);
    /// Current health.
    fn status(&self) -> BusStatus;
}

/// The single-instance bus: hands events straight to this instance's rooms.
pub struct InProcessBus {
    hub: Arc<Hub>,
}

impl InProcessBus {
    /// A bus delivering into `hub`.
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Bus for InProcessBus {
    fn publish(&self, event: Arc<CommittedEvent>) {
        self.hub.deliver(event);
    }

    fn publish_conflict(&self, notice: Arc<ConflictNotice>) {
        self.hub.deliver_conflict(notice);
    }

    fn status(&self) -> BusStatus {
        BusStatus::InProcess
    }
}
