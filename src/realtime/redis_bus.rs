//! The Redis pub/sub bus: one publisher link and one subscriber connection per instance.
//! Each message is this instance's id followed by the owner's bytes, so that an instance
//! skips its own messages (it delivered them locally already). Redis only carries messages;
//! when its link blips, the owners repair (events from the log; presence rewrites its
//! registry).
//!
//! Family channels (one per project) are subscribed and unsubscribed as their owners follow
//! them, in the order asked, by the task that owns the subscriber connection; after a
//! reconnect it subscribes the whole current set again. On a Redis Cluster they are shard
//! channels (`SSUBSCRIBE`/`SPUBLISH`): a project's events go only to the node that owns its
//! slot and only to the instances following it, instead of to every node. The fixed channels
//! (presence, conflicts, token revocations) stay classic pub/sub.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bus::{Bus, BusStatus, Channels, Encode};
use crate::redis_link::{RedisLink, RedisTarget, cluster_client, timeouts};

const UP: u8 = 1;
const DOWN: u8 = 2;

/// Messages between instances through Redis.
pub struct RedisBus {
    target: RedisTarget,
    instance: Uuid,
    publisher: RedisLink,
    /// Whether the last publish went through (a cluster can fail one node's publishes while
    /// the subscriber connection is fine).
    publishing: Arc<AtomicBool>,
    /// Prefixes of the family channels, known once the bus listens (shard channels on a
    /// cluster).
    families: OnceLock<Vec<&'static str>>,
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
    /// A bus publishing on `publisher` and subscribing to `target` with a connection of its
    /// own. Connects lazily: a Redis that is down at start only makes the bus `down`.
    pub fn new(target: RedisTarget, publisher: RedisLink, instance: Uuid) -> Arc<Self> {
        let (changes, pending) = mpsc::unbounded_channel();
        Arc::new(Self {
            target,
            instance,
            publisher,
            publishing: Arc::new(AtomicBool::new(true)),
            families: OnceLock::new(),
            status: Arc::new(AtomicU8::new(DOWN)),
            followed: Mutex::new(HashSet::new()),
            changes,
            pending_changes: Mutex::new(Some(pending)),
        })
    }

    /// Whether `channel` goes out as a shard channel (`SPUBLISH`).
    fn sharded(&self, channel: &str) -> bool {
        self.target.is_cluster()
            && self
                .families
                .get()
                .is_some_and(|f| f.iter().any(|p| channel.starts_with(p)))
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
        let publishing = self.publishing.clone();
        let origin = self.instance;
        let command = if self.sharded(&channel) {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        tokio::spawn(async move {
            let Some(body) = encode() else { return };
            let mut payload = Vec::with_capacity(16 + body.len());
            payload.extend_from_slice(origin.as_bytes());
            payload.extend_from_slice(&body);
            let sent = redis::cmd(command)
                .arg(channel.as_ref())
                .arg(payload)
                .query_async::<()>(&mut conn)
                .await;
            match sent {
                Ok(()) => publishing.store(true, Ordering::Relaxed),
                Err(err) => {
                    tracing::warn!(error = %err, channel = %channel, "Redis publish failed");
                    publishing.store(false, Ordering::Relaxed);
                }
            }
        });
    }

    fn status(&self) -> BusStatus {
        match self.status.load(Ordering::Relaxed) {
            UP if self.publishing.load(Ordering::Relaxed) => BusStatus::Up,
            _ => BusStatus::Down,
        }
    }

    fn listen(self: Arc<Self>, channels: Channels, shutdown: CancellationToken) {
        let _ = self.families.set(channels.family_prefixes());
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
        match Subscriber::open(&self.target, push_tx) {
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

/// The subscriber connection. RESP3 delivers pub/sub messages as pushes on a normal
/// connection, which reconnects and resubscribes by itself (and reports the disconnection,
/// after which the owners repair).
enum Subscriber {
    Single(ConnectionManager),
    /// Connected on the first (re)subscription that finds the cluster up.
    Cluster(Box<ClusterClient>, Option<ClusterConnection>),
}

impl Subscriber {
    fn open(target: &RedisTarget, pushes: mpsc::UnboundedSender<PushInfo>) -> RedisResult<Self> {
        Ok(match target {
            RedisTarget::Single(url) => {
                let sub_url = if url.contains('?') {
                    format!("{url}&protocol=resp3")
                } else {
                    format!("{url}?protocol=resp3")
                };
                Self::Single(ConnectionManager::new_lazy_with_config(
                    redis::Client::open(sub_url)?,
                    timeouts()
                        .set_push_sender(pushes)
                        .set_automatic_resubscription(),
                )?)
            }
            RedisTarget::Cluster(nodes) => {
                let client = cluster_client(nodes, |builder| {
                    builder
                        .use_protocol(redis::ProtocolVersion::RESP3)
                        .push_sender(pushes)
                })?;
                Self::Cluster(Box::new(client), None)
            }
        })
    }

    /// Subscribes the fixed channels and every followed family channel.
    async fn subscribe_all(&mut self, fixed: &[&str], followed: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(conn) => {
                let mut names: Vec<&str> = fixed.to_vec();
                names.extend(followed.iter().map(String::as_str));
                conn.subscribe(&names).await
            }
            Self::Cluster(client, slot) => {
                let conn = match slot {
                    Some(conn) => conn,
                    None => slot.insert(client.get_async_connection().await?),
                };
                conn.subscribe(fixed).await?;
                // A shard subscription names channels of one slot: one each, sent together.
                let each = followed.iter().map(|channel| {
                    let mut conn = conn.clone();
                    async move { conn.ssubscribe(channel).await }
                });
                futures_util::future::try_join_all(each).await.map(|_| ())
            }
        }
    }

    async fn follow(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Single(conn) => conn.subscribe(channel).await,
            Self::Cluster(_, Some(conn)) => conn.ssubscribe(channel).await,
            // Not connected yet: the first subscription takes every followed channel.
            Self::Cluster(_, None) => Ok(()),
        }
    }

    async fn unfollow(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Self::Single(conn) => conn.unsubscribe(channel).await,
            Self::Cluster(_, Some(conn)) => conn.sunsubscribe(channel).await,
            Self::Cluster(_, None) => Ok(()),
        }
    }
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
    mut conn: Subscriber,
    mut inputs: Inputs,
    channels: Channels,
    shutdown: CancellationToken,
) {
    let status = &bus.status;
    loop {
        // (Re)subscribe everything until Redis answers. Follows asked meanwhile are answered
        // at once: they are in the set subscribed here, and the owners repair when it is.
        loop {
            let fixed = channels.names();
            let followed: Vec<String> = bus.followed().iter().cloned().collect();
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return,
                result = conn.subscribe_all(&fixed, &followed) => result,
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
        // The link is back; the next publish tells otherwise.
        bus.publishing.store(true, Ordering::Relaxed);
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
                PushKind::Message | PushKind::SMessage => {
                    route(&channels, bus.instance, &push.data);
                }
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
async fn apply(bus: &RedisBus, conn: &mut Subscriber, change: Change) {
    match change {
        Change::Follow(channel, ack) => {
            if bus.followed().contains(&channel)
                && let Err(err) = conn.follow(&channel).await
            {
                // The connection is failing: its Disconnection push follows, and the
                // reconnect subscribes the whole set again.
                tracing::debug!(error = %err, channel, "subscribe failed");
            }
            let _ = ack.send(());
        }
        Change::Unfollow(channel) => {
            if !bus.followed().contains(&channel)
                && let Err(err) = conn.unfollow(&channel).await
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
