//! The Redis pub/sub bus: one publisher and one subscriber connection per instance. Each
//! message is this instance's id followed by the owner's bytes, so that an instance skips its
//! own messages (it delivered them locally already). Redis only carries messages; when its
//! link blips, the owners repair (events from the log; presence rewrites its registry).
//!
//! Family channels (one per project) are subscribed and unsubscribed as their owners follow
//! them, in the order asked, by the task that owns the subscriber connection; after a
//! reconnect it subscribes the whole current set again.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bus::{Bus, BusStatus, Channels, Encode};

const UP: u8 = 1;
const DOWN: u8 = 2;

/// Messages between instances through Redis.
pub struct RedisBus {
    url: String,
    instance: Uuid,
    publisher: ConnectionManager,
    status: Arc<AtomicU8>,
    /// The family channels followed now.
    followed: Mutex<HashSet<String>>,
    changes: mpsc::UnboundedSender<Change>,
    /// Taken by the subscriber task when the bus starts listening.
    pending_changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

/// A change to the followed channels, applied in order by the subscriber task.
enum Change {
    /// Subscribe, then answer.
    Follow(String, oneshot::Sender<()>),
    Unfollow(String),
}

impl RedisBus {
    /// Connects lazily: a Redis that is down at start only makes the bus `down`.
    pub fn new(url: &str, instance: Uuid) -> anyhow::Result<Arc<Self>> {
        let (changes, pending) = mpsc::unbounded_channel();
        Ok(Arc::new(Self {
            url: url.to_owned(),
            instance,
            publisher: lazy_connection(url)?,
            status: Arc::new(AtomicU8::new(DOWN)),
            followed: Mutex::new(HashSet::new()),
            changes,
            pending_changes: Mutex::new(Some(pending)),
        }))
    }

    fn followed(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.followed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bus for RedisBus {
    fn follow(&self, channel: String) -> BoxFuture<'static, ()> {
        self.followed().insert(channel.clone());
        let (ack, acked) = oneshot::channel();
        let _ = self.changes.send(Change::Follow(channel, ack));
        // Resolves when subscribed, or at once if the subscriber task is not running.
        Box::pin(async move {
            let _ = acked.await;
        })
    }

    fn unfollow(&self, channel: String) {
        self.followed().remove(&channel);
        let _ = self.changes.send(Change::Unfollow(channel));
    }

    fn publish(&self, channel: Cow<'static, str>, encode: Encode) {
        let mut conn = self.publisher.clone();
        let status = self.status.clone();
        let origin = self.instance;
        tokio::spawn(async move {
            let Some(body) = encode() else { return };
            let mut payload = Vec::with_capacity(16 + body.len());
            payload.extend_from_slice(origin.as_bytes());
            payload.extend_from_slice(&body);
            if let Err(err) = conn.publish::<_, _, ()>(channel.as_ref(), payload).await {
                tracing::warn!(error = %err, channel = %channel, "Redis publish failed");
                status.store(DOWN, Ordering::Relaxed);
            }
        });
    }

    fn status(&self) -> BusStatus {
        match self.status.load(Ordering::Relaxed) {
            UP => BusStatus::Up,
            _ => BusStatus::Down,
        }
    }

    fn listen(self: Arc<Self>, channels: Channels, shutdown: CancellationToken) {
        // RESP3 delivers pub/sub messages as pushes on a normal connection, which the
        // manager reconnects and resubscribes by itself.
        let url = &self.url;
        let sub_url = if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        };
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let Some(changes) = self
            .pending_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            tracing::error!("the Redis bus was started twice");
            return;
        };
        let subscriber = redis::Client::open(sub_url).and_then(|client| {
            ConnectionManager::new_lazy_with_config(
                client,
                timeouts()
                    .set_push_sender(push_tx)
                    .set_automatic_resubscription(),
            )
        });
        match subscriber {
            Ok(subscriber) => {
                let inputs = Inputs {
                    pushes: push_rx,
                    changes,
                };
                tokio::spawn(subscribe_loop(self, subscriber, inputs, channels, shutdown));
            }
            // The URL was checked at start; this is not expected.
            Err(err) => tracing::error!(error = %err, "cannot open the Redis subscriber"),
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

/// What the subscriber task reacts to besides shutdown.
struct Inputs {
    /// Messages and connection news from Redis.
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// Follows and unfollows, in the order asked.
    changes: mpsc::UnboundedReceiver<Change>,
}

/// Keeps the subscriptions alive and hands received messages to their channel's owner.
/// After every (re)connection the owners repair, since messages sent meanwhile are lost.
async fn subscribe_loop(
    bus: Arc<RedisBus>,
    mut conn: ConnectionManager,
    mut inputs: Inputs,
    channels: Channels,
    shutdown: CancellationToken,
) {
    let status = &bus.status;
    loop {
        // (Re)subscribe everything until Redis answers. Follows asked meanwhile are answered
        // at once: they are in the set subscribed here, and the owners repair when it is.
        loop {
            let mut names: Vec<String> = channels.names().into_iter().map(str::to_owned).collect();
            names.extend(bus.followed().iter().cloned());
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                result = conn.subscribe(&names) => result,
            };
            match attempt {
                Ok(()) => break,
                Err(err) => {
                    if status.swap(DOWN, Ordering::Relaxed) != DOWN {
                        tracing::warn!(error = %err, "Redis unreachable; events travel by the log check");
                    }
                    let retry = tokio::time::sleep(Duration::from_millis(500));
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = &mut retry => break,
                            Some(change) = inputs.changes.recv() => {
                                if let Change::Follow(_, ack) = change {
                                    let _ = ack.send(());
                                }
                            }
                        }
                    }
                }
            }
        }
        if status.swap(UP, Ordering::Relaxed) != UP {
            tracing::info!("Redis bus connected");
        }
        channels.reconnected();
        // Deliver until the link drops.
        loop {
            let push = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(change) = inputs.changes.recv() => {
                    apply(&bus, &mut conn, change).await;
                    continue;
                }
                push = inputs.pushes.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
            };
            match push.kind {
                PushKind::Message => route(&channels, bus.instance, &push.data),
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

/// Subscribes or unsubscribes one family channel, unless a later change undid it already
/// (the set is current; the queue is history).
async fn apply(bus: &RedisBus, conn: &mut ConnectionManager, change: Change) {
    match change {
        Change::Follow(channel, ack) => {
            if bus.followed().contains(&channel)
                && let Err(err) = conn.subscribe(&channel).await
            {
                // The connection is failing: its Disconnection push follows, and the
                // reconnect subscribes the whole set again.
                tracing::debug!(error = %err, channel, "subscribe failed");
            }
            let _ = ack.send(());
        }
        Change::Unfollow(channel) => {
            if !bus.followed().contains(&channel)
                && let Err(err) = conn.unsubscribe(&channel).await
            {
                tracing::debug!(error = %err, channel, "unsubscribe failed");
            }
        }
    }
}

/// Hands one pub/sub message (`[channel, origin ++ payload]`) to its owner, unless this
/// instance sent it.
fn route(channels: &Channels, instance: Uuid, data: &[Value]) {
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(message))) =
        (data.first(), data.get(1))
    else {
        return;
    };
    let Some((origin, payload)) = message.split_first_chunk::<16>() else {
        tracing::warn!("malformed message on the Redis bus");
        return;
    };
    if *origin == *instance.as_bytes() {
        return;
    }
    if let Some(handler) = channels.handler(channel) {
        handler.receive(payload);
    }
}
