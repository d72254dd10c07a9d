//! The bus: how messages reach the other instances. It carries opaque bytes on named
//! channels; each channel's owner (events, conflicts, presence) registers a handler before
//! the bus starts, delivers to its own instance itself, and publishes for the others. The bus
//! never hands an instance its own messages back.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

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

/// What a channel's owner does with what other instances publish on it.
pub trait ChannelHandler: Send + Sync + 'static {
    /// One message another instance published.
    fn receive(&self, payload: &[u8]);
    /// The link to the other instances is back after a break: messages sent meanwhile are
    /// lost, so an owner that can repair (from the log) does it now.
    fn reconnected(&self) {}
}

/// The channels this instance listens on, each with its owner's handler.
#[derive(Default)]
pub struct Channels {
    handlers: HashMap<&'static str, Arc<dyn ChannelHandler>>,
}

impl Channels {
    /// Registers `handler` as the owner of `channel`.
    pub fn register(&mut self, channel: &'static str, handler: Arc<dyn ChannelHandler>) {
        self.handlers.insert(channel, handler);
    }

    /// The registered channel names.
    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// The handler of a channel, by its name as bytes (as Redis reports it).
    pub fn handler(&self, channel: &[u8]) -> Option<&Arc<dyn ChannelHandler>> {
        self.handlers
            .iter()
            .find(|(name, _)| name.as_bytes() == channel)
            .map(|(_, handler)| handler)
    }

    /// Tells every owner the link is back.
    pub fn reconnected(&self) {
        for handler in self.handlers.values() {
            handler.reconnected();
        }
    }
}

/// A message's bytes, made only when some other instance will read them.
pub type Encode = Box<dyn FnOnce() -> Option<Vec<u8>> + Send>;

/// Carries channel messages to the other instances.
pub trait Bus: Send + Sync + 'static {
    /// Publishes to the other instances without waiting; `encode` runs off the caller's
    /// path. A lost message is the owner's to repair (events from the log) or to accept.
    fn publish(&self, channel: &'static str, encode: Encode);
    /// Current health.
    fn status(&self) -> BusStatus;
    /// Starts handing other instances' messages to `channels`' owners.
    fn listen(self: Arc<Self>, channels: Channels, shutdown: CancellationToken);
}

/// The single-instance bus: there is nobody else to tell.
pub struct LocalBus;

impl Bus for LocalBus {
    fn publish(&self, _channel: &'static str, _encode: Encode) {}

    fn status(&self) -> BusStatus {
        BusStatus::InProcess
    }

    fn listen(self: Arc<Self>, _channels: Channels, _shutdown: CancellationToken) {}
}
