//! The bus: how messages reach the other instances. It carries opaque bytes on named
//! channels; each channel's owner (events, conflicts, presence) registers a handler before
//! the bus starts, delivers to its own instance itself, and publishes for the others. The bus
//! never hands an instance its own messages back.
//!
//! Fixed channels are listened to from the start. A family of channels (one per project for
//! events) is registered by its prefix, and the owner follows and unfollows its members as
//! it needs them, so an instance receives only what it has listeners for.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
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
    families: Vec<(&'static str, Arc<dyn ChannelHandler>)>,
}

impl Channels {
    /// Registers `handler` as the owner of `channel`.
    pub fn register(&mut self, channel: &'static str, handler: Arc<dyn ChannelHandler>) {
        self.handlers.insert(channel, handler);
    }

    /// Registers `handler` as the owner of every channel named `prefix…`; it follows the
    /// ones it wants with [`Bus::follow`].
    pub fn register_family(&mut self, prefix: &'static str, handler: Arc<dyn ChannelHandler>) {
        self.families.push((prefix, handler));
    }

    /// The fixed channels' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// The family prefixes.
    pub fn family_prefixes(&self) -> Vec<&'static str> {
        self.families.iter().map(|(prefix, _)| *prefix).collect()
    }

    /// The handler of a channel, by its name as bytes (as Redis reports it).
    pub fn handler(&self, channel: &[u8]) -> Option<&Arc<dyn ChannelHandler>> {
        let fixed = self
            .handlers
            .iter()
            .find(|(name, _)| name.as_bytes() == channel)
            .map(|(_, handler)| handler);
        fixed.or_else(|| {
            self.families
                .iter()
                .find(|(prefix, _)| channel.starts_with(prefix.as_bytes()))
                .map(|(_, handler)| handler)
        })
    }

    /// Tells every owner the link is back.
    pub fn reconnected(&self) {
        let families = self.families.iter().map(|(_, handler)| handler);
        for handler in self.handlers.values().chain(families) {
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
    fn publish(&self, channel: Cow<'static, str>, encode: Encode);
    /// Starts receiving a family member channel. Resolves once messages published from now
    /// on will arrive (or at once when the link is down: the owner repairs on reconnect).
    fn follow(&self, channel: String) -> BoxFuture<'static, ()>;
    /// Stops receiving a family member channel.
    fn unfollow(&self, channel: String);
    /// Current health.
    fn status(&self) -> BusStatus;
    /// Starts handing other instances' messages to `channels`' owners.
    fn listen(self: Arc<Self>, channels: Channels, shutdown: CancellationToken);
}

/// The single-instance bus: there is nobody else to tell.
pub struct LocalBus;

impl Bus for LocalBus {
    fn publish(&self, _channel: Cow<'static, str>, _encode: Encode) {}

    fn follow(&self, _channel: String) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    fn unfollow(&self, _channel: String) {}

    fn status(&self) -> BusStatus {
        BusStatus::InProcess
    }

    fn listen(self: Arc<Self>, _channels: Channels, _shutdown: CancellationToken) {}
}
