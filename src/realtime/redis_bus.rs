//! The Redis pub/sub bus: one publisher and one subscriber connection per instance, one
//! channel for all projects. Redis only carries events; when its link blips, rooms repair
//! from the log, and the hub's periodic check catches events whose publish was lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Hub;
use super::bus::{Bus, BusStatus};
use super::conflicts::ConflictNotice;
use crate::entities::events;
use crate::events::CommittedEvent;
use crate::presence::redis_store::CHANNEL as PRESENCE;
use crate::presence::{Presence, PresenceEvent};

/// The channel every instance publishes events to and subscribes on.
pub const CHANNEL: &str = "tasknest:events";
/// The channel of conflict notices.
pub const CONFLICTS: &str = "tasknest:conflicts";

const UP: u8 = 1;
const DOWN: u8 = 2;

/// Events between instances through Redis.
pub struct RedisBus {
    hub: Arc<Hub>,
    publisher: ConnectionManager,
    status: Arc<AtomicU8>,
}

impl RedisBus {
    /// Connects lazily (a Redis that is down at start only makes the bus `down`) and starts
    /// the subscriber task.
    pub fn start(
        url: &str,
        hub: Arc<Hub>,
        presence: Arc<Presence>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let publisher = lazy_connection(url)?;
        // RESP3 delivers pub/sub messages as pushes on a normal connection, which the
        // manager reconnects and resubscribes by itself.
        let sub_url = if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let subscriber = ConnectionManager::new_lazy_with_config(
            redis::Client::open(sub_url)?,
            timeouts()
                .set_push_sender(push_tx)
                .set_automatic_resubscription(),
        )?;
        let router = Router {
            hub: hub.clone(),
            presence,
        };
        let status = Arc::new(AtomicU8::new(DOWN));
        tokio::spawn(subscribe_loop(
            subscriber,
            push_rx,
            router,
            status.clone(),
            shutdown,
        ));
        Ok(Arc::new(Self {
            hub,
            publisher,
            status,
        }))
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: Arc<CommittedEvent>) {
        // Local rooms first, straight from memory: this instance's subscribers do not
        // depend on Redis at all.
        self.hub.deliver(event.clone());
        let mut conn = self.publisher.clone();
        let status = self.status.clone();
        tokio::spawn(async move {
            let payload = match serde_json::to_vec(&event.row) {
                Ok(payload) => payload,
                Err(err) => {
                    tracing::error!(error = %err, "cannot encode event for Redis");
                    return;
                }
            };
            if let Err(err) = conn.publish::<_, _, ()>(CHANNEL, payload).await {
                // Other instances find this event through their periodic log check.
                tracing::warn!(error = %err, seq = event.seq(), "Redis publish failed");
                status.store(DOWN, Ordering::Relaxed);
            }
        });
    }

    fn publish_conflict(&self, notice: Arc<ConflictNotice>) {
        self.hub.deliver_conflict(notice.clone());
        let mut conn = self.publisher.clone();
        tokio::spawn(async move {
            let Ok(payload) = serde_json::to_vec(&*notice) else {
                return;
            };
            if let Err(err) = conn.publish::<_, _, ()>(CONFLICTS, payload).await {
                tracing::warn!(error = %err, "Redis publish of a conflict failed");
            }
        });
    }

    fn status(&self) -> BusStatus {
        match self.status.load(Ordering::Relaxed) {
            UP => BusStatus::Up,
            _ => BusStatus::Down,
        }
    }
}

/// Short timeouts, so that a Redis outage fails fast instead of holding anything up.
fn timeouts() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

/// A connection that reconnects by itself and connects on first use (a Redis that is down
/// at start does not stop the start).
pub fn lazy_connection(url: &str) -> anyhow::Result<ConnectionManager> {
    Ok(ConnectionManager::new_lazy_with_config(
        redis::Client::open(url)?,
        timeouts(),
    )?)
}

/// Where received messages go, by channel.
struct Router {
    hub: Arc<Hub>,
    presence: Arc<Presence>,
}

impl Router {
    /// Delivers one pub/sub message (`[channel, payload]`) to this instance. Notices and
    /// presence events this instance published were delivered locally already.
    fn route(&self, data: &[Value]) {
        let channel = match data.first() {
            Some(Value::BulkString(channel)) => channel.as_slice(),
            _ => return,
        };
        if channel == CONFLICTS.as_bytes() {
            if let Some(notice) =
                decode_json::<ConflictNotice>(data).filter(|n| n.origin != self.hub.instance())
            {
                self.hub.deliver_conflict(Arc::new(notice));
            }
        } else if channel == PRESENCE.as_bytes() {
            if let Some(event) =
                decode_json::<PresenceEvent>(data).filter(|e| e.origin != self.presence.instance())
            {
                self.presence.deliver(Arc::new(event));
            }
        } else if let Some(event) = decode(data) {
            self.hub.deliver(event);
        }
    }
}

/// Keeps the subscription alive and feeds received events to the hub. After every
/// (re)connection the rooms repair from the log, since messages sent meanwhile are lost.
async fn subscribe_loop(
    mut conn: ConnectionManager,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    router: Router,
    status: Arc<AtomicU8>,
    shutdown: CancellationToken,
) {
    loop {
        // (Re)subscribe until Redis answers.
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                result = conn.subscribe(&[CHANNEL, CONFLICTS, PRESENCE]) => result,
            };
            match attempt {
                Ok(()) => break,
                Err(err) => {
                    if status.swap(DOWN, Ordering::Relaxed) != DOWN {
                        tracing::warn!(error = %err, "Redis unreachable; events travel by the log check");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        if status.swap(UP, Ordering::Relaxed) != UP {
            tracing::info!("Redis bus connected");
        }
        router.hub.repair_all();
        // Deliver until the link drops.
        loop {
            let push = tokio::select! {
                () = shutdown.cancelled() => return,
                push = pushes.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
            };
            match push.kind {
                PushKind::Message => router.route(&push.data),
                PushKind::Disconnection => {
                    status.store(DOWN, Ordering::Relaxed);
                    tracing::warn!("Redis bus disconnected; reconnecting");
                    break;
                }
                _ => {}
            }
        }
    }
}

/// `[channel, payload]` of a JSON message.
fn decode_json<T: serde::de::DeserializeOwned>(data: &[Value]) -> Option<T> {
    match data.get(1)? {
        Value::BulkString(bytes) => serde_json::from_slice(bytes).ok(),
        _ => None,
    }
}

/// `[channel, payload]` of a pub/sub message into a decoded event.
fn decode(data: &[Value]) -> Option<Arc<CommittedEvent>> {
    let payload = match data.get(1)? {
        Value::BulkString(bytes) => bytes,
        _ => return None,
    };
    match serde_json::from_slice::<events::Model>(payload) {
        Ok(row) => Some(CommittedEvent::decode(row)),
        Err(err) => {
            tracing::warn!(error = %err, "undecodable event on the Redis bus");
            None
        }
    }
}
