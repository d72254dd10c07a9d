//! Presence: who is in a project right now and which task each is looking at. A user is
//! present while at least one of its connections holds `presenceEvents(projectId)`; the first
//! such subscription sends JOINED, the last one closing sends LEFT, `focusTask` sends
//! FOCUS_CHANGED (coalesced: the latest state within a short window wins). Presence is not
//! logged.
//!
//! The registry is in memory on a single instance, and in Redis when `REDIS_URL` is set, so
//! that every instance answers `presence` the same. Each instance heartbeats the entries of
//! its own connections; the survivors mark the users of an instance that died without
//! saying goodbye LEFT once its entries are older than the timeout. Events travel on one bus
//! channel per project (a family this service owns), which an instance follows only while it
//! has presence subscribers in the project: like task events, presence costs an instance
//! only its own rooms, and a burst in one project cannot push another project's events out
//! of a slow subscriber's queue.
//!
//! Presence is not logged, so what an instance misses is made up by a diff: each room keeps
//! who its subscribers were told is present, and when the instance hears the others again
//! after a break in its bus link, or another instance wrote back users that had been swept
//! while it was only late (it says so on the project's channel), the room is compared with
//! the registry and its subscribers get the JOINED, LEFT and FOCUS_CHANGED they missed.

mod fallback;
pub mod graphql;
mod memory;
mod redis_store;
mod room;
mod rooms;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::realtime::Bus;
use room::Room;
use rooms::RepairHint;

pub use fallback::FallbackStore;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// What happened to someone's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
pub enum PresenceEventKind {
    /// The user's first connection to the project subscribed.
    Joined,
    /// The user's last connection to the project went away.
    Left,
    /// The user focused another task, or none.
    FocusChanged,
}

/// A presence change, as delivered to `presenceEvents` subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub kind: PresenceEventKind,
    pub project_id: Uuid,
    pub user: UserSnapshot,
    pub focus_task_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

/// The prefix of the bus channels of presence events, one per project.
pub const CHANNELS: &str = "tasknest:presence:";

/// The bus channel of one project's presence events (hash-tagged like its keys, so that on a
/// Redis Cluster it is a shard channel of the same slot).
pub fn channel(project_id: Uuid) -> String {
    format!("{CHANNELS}{{{project_id}}}")
}

/// One present user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: UserSnapshot,
    pub focus_task_id: Option<Uuid>,
    pub online_since: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// Timing of presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceSettings {
    /// An instance silent for this long has its users marked LEFT.
    pub timeout: Duration,
    /// FOCUS_CHANGED events of one user are coalesced within this window.
    pub coalesce: Duration,
}

/// Where presence is kept: this process, or Redis shared by all instances.
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Counts one more connection of `user` in `project`; true when it is the user's first
    /// anywhere (the caller then announces JOINED).
    async fn connect(
        &self,
        project: Uuid,
        user: &UserSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, AppError>;
    /// Counts one connection less; true when it was the user's last anywhere (LEFT).
    async fn disconnect(&self, project: Uuid, user_id: &str) -> Result<bool, AppError>;
    /// Sets (or clears) the user's focus.
    async fn focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(), AppError>;
    /// Everyone present, in one round trip.
    async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError>;
    /// Heartbeats this instance's entries and sweeps other instances' stale ones.
    async fn maintain(&self, now: DateTime<Utc>) -> Upkeep;
    /// Whether [`list`](Self::list) answers for every instance (not only this one's users,
    /// as while the shared registry is out of reach).
    fn lists_everyone(&self) -> bool {
        true
    }
}

/// What a maintenance tick of the store found.
#[derive(Debug, Default)]
pub struct Upkeep {
    /// LEFT events of other instances' users who are gone.
    pub left: Vec<PresenceEvent>,
    /// Projects where this instance wrote back users that other instances had swept (and
    /// told their subscribers had left).
    pub written_back: Vec<Uuid>,
}

/// The presence service of one instance.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    /// Projects with presence subscribers here: their events, followed on the bus while open.
    rooms: Mutex<HashMap<Uuid, Room>>,
    bus: Arc<dyn Bus>,
    settings: PresenceSettings,
    /// Pending FOCUS_CHANGED per (project, user), sent when their window closes.
    pending_focus: Mutex<HashMap<(Uuid, String), PresenceEvent>>,
}

impl Presence {
    /// A presence service on `store`, with its maintenance task.
    pub fn start(
        store: Arc<dyn PresenceStore>,
        bus: Arc<dyn Bus>,
        settings: PresenceSettings,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let presence = Arc::new(Self {
            store,
            rooms: Mutex::new(HashMap::new()),
            bus,
            settings,
            pending_focus: Mutex::new(HashMap::new()),
        });
        tokio::spawn(presence.clone().maintain(shutdown));
        presence
    }

    /// Counts a connection in; announces JOINED for the user's first one. Returns a guard
    /// that counts it out when dropped.
    pub async fn join(
        self: &Arc<Self>,
        project: Uuid,
        user: UserSnapshot,
    ) -> Result<PresenceGuard, AppError> {
        let now = Utc::now();
        if self.store.connect(project, &user, now).await? {
            self.announce(PresenceEventKind::Joined, project, user.clone(), None, now)
                .await;
        }
        Ok(PresenceGuard {
            presence: self.clone(),
            project,
            user: Some(user),
        })
    }

    async fn leave(&self, project: Uuid, user: UserSnapshot) {
        match self.store.disconnect(project, &user.id).await {
            Ok(true) => {
                self.pending().remove(&(project, user.id.clone()));
                self.announce(PresenceEventKind::Left, project, user, None, Utc::now())
                    .await;
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(error = ?err, "presence leave failed"),
        }
    }

    /// Sets what the user is looking at; the FOCUS_CHANGED event is coalesced.
    pub async fn focus(
        self: &Arc<Self>,
        project: Uuid,
        user: UserSnapshot,
        task: Option<Uuid>,
    ) -> Result<(), AppError> {
        let now = Utc::now();
        self.store.focus(project, &user.id, task, now).await?;
        let event = PresenceEvent {
            kind: PresenceEventKind::FocusChanged,
            project_id: project,
            user,
            focus_task_id: task,
            at: now,
        };
        let key = (project, event.user.id.clone());
        let first = self.pending().insert(key.clone(), event).is_none();
        if first {
            let presence = self.clone();
            let window = self.settings.coalesce;
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let latest = presence.pending().remove(&key);
                if let Some(latest) = latest {
                    presence.send(latest).await;
                }
            });
        }
        Ok(())
    }

    /// Everyone present in `project`.
    pub async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError> {
        self.store.list(project).await
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), PresenceEvent>> {
        self.pending_focus.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn announce(
        &self,
        kind: PresenceEventKind,
        project: Uuid,
        user: UserSnapshot,
        focus: Option<Uuid>,
        at: DateTime<Utc>,
    ) {
        self.send(PresenceEvent {
            kind,
            project_id: project,
            user,
            focus_task_id: focus,
            at,
        })
        .await;
    }

    async fn send(&self, event: PresenceEvent) {
        let event = Arc::new(event);
        self.deliver(event.clone());
        self.bus.publish(
            channel(event.project_id).into(),
            Box::new(move || serde_json::to_vec(&*event).ok()),
        );
    }

    async fn maintain(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.timeout / 3);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let upkeep = self.store.maintain(Utc::now()).await;
            for left in upkeep.left {
                self.send(left).await;
            }
            for project in upkeep.written_back {
                // This instance's rooms may have heard the sweep's LEFT too.
                self.repair_later(Some(project));
                let hint = RepairHint { repair: project };
                self.bus.publish(
                    channel(project).into(),
                    Box::new(move || serde_json::to_vec(&hint).ok()),
                );
            }
            self.repair_due_rooms().await;
            self.close_idle_rooms();
        }
    }
}

/// Holds one connection's presence; dropping it counts the connection out.
pub struct PresenceGuard {
    presence: Arc<Presence>,
    project: Uuid,
    user: Option<UserSnapshot>,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            let presence = self.presence.clone();
            let project = self.project;
            tokio::spawn(async move { presence.leave(project, user).await });
        }
    }
}

/// `focusTask` by a user that holds no `presenceEvents` of the project.
fn not_present() -> AppError {
    AppError::bad_input(
        "projectId",
        "subscribe to presenceEvents of this project before focusing a task",
    )
}
