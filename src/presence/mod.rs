//! Presence: who is in a project right now and which task each is looking at. A user is
//! present while at least one of its connections holds `presenceEvents(projectId)`; the first
//! such subscription sends JOINED, the last one closing sends LEFT, `focusTask` sends
//! FOCUS_CHANGED (coalesced: the latest state within a short window wins). Presence is not
//! logged.
//!
//! The registry is in memory on a single instance, and in Redis when `REDIS_URL` is set, so
//! that every instance answers `presence` the same. Each instance heartbeats the entries of
//! its own connections; the survivors mark the users of an instance that died without
//! saying goodbye LEFT once its entries are older than the timeout. Events reach the other
//! instances on the bus's presence channel, which this service owns.

mod fallback;
pub mod graphql;
mod memory;
mod redis_store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::realtime::{Bus, ChannelHandler};

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

/// The bus channel of presence events.
pub const CHANNEL: &str = "tasknest:presence";

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
    /// Heartbeats this instance's entries and sweeps other instances' stale ones; returns
    /// the LEFT events of users who are gone.
    async fn maintain(&self, now: DateTime<Utc>) -> Vec<PresenceEvent>;
}

/// The presence service of one instance.
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    events: broadcast::Sender<Arc<PresenceEvent>>,
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
            events: broadcast::channel(1024).0,
            bus,
            settings,
            pending_focus: Mutex::new(HashMap::new()),
        });
        tokio::spawn(presence.clone().maintain(shutdown));
        presence
    }

    /// Presence events from now on (all projects; subscribers filter).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<PresenceEvent>> {
        self.events.subscribe()
    }

    /// Hands an event (from the bus or from this instance) to local subscribers.
    fn deliver(&self, event: Arc<PresenceEvent>) {
        let _ = self.events.send(event);
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
            CHANNEL.into(),
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
            for left in self.store.maintain(Utc::now()).await {
                self.send(left).await;
            }
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

/// Presence events of the other instances arrive here from the bus.
impl ChannelHandler for Presence {
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<PresenceEvent>(payload) {
            Ok(event) => self.deliver(Arc::new(event)),
            Err(err) => tracing::warn!(error = %err, "undecodable presence event on the bus"),
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
