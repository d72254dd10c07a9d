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
use crate::realtime::{Bus, BusStatus, ChannelHandler};
use room::{REPAIR_DELAY_TICKS, Room};

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

/// What goes on a project's presence channel besides events: "diff your room against the
/// registry", from an instance that wrote back users others had been told left.
#[derive(Serialize, Deserialize)]
struct RepairHint {
    repair: Uuid,
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

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `project`'s room here (its idle count reset), and whether it had to be opened.
    fn room(&self, project: Uuid) -> (broadcast::Sender<Arc<PresenceEvent>>, bool) {
        let mut rooms = self.rooms();
        let mut fresh = false;
        let room = rooms.entry(project).or_insert_with(|| {
            fresh = true;
            Room::new()
        });
        room.idle_ticks = 0;
        (room.events.clone(), fresh)
    }

    /// Opens `project`'s room here: once this resolves, the events other instances publish
    /// for the project arrive. A room that exists is followed already (closing one
    /// unfollows it and removes it).
    pub async fn open(&self, project: Uuid) {
        if self.room(project).1 {
            self.follow(project).await;
        }
    }

    /// `project`'s presence events from now on. Opens the room again if maintenance closed
    /// it since [`open`](Self::open).
    pub async fn subscribe(&self, project: Uuid) -> broadcast::Receiver<Arc<PresenceEvent>> {
        let (events, fresh) = self.room(project);
        let receiver = events.subscribe();
        if fresh {
            self.follow(project).await;
        }
        receiver
    }

    /// Follows a new room's channel, then reads who is present as its roster (with other
    /// instances there is something to repair later; alone, the events are all there is).
    async fn follow(&self, project: Uuid) {
        self.bus.follow(channel(project)).await;
        if self.bus.status() != BusStatus::InProcess {
            self.read_roster(project, false).await;
        }
    }

    /// Reads `project`'s presence from the registry into its room's roster; with
    /// `announce`, tells the subscribers what they missed.
    async fn read_roster(&self, project: Uuid, announce: bool) {
        match self.rooms().get_mut(&project) {
            Some(room) => room.begin_read(),
            None => return,
        }
        let listed = self.store.list(project).await;
        if let Err(err) = &listed {
            tracing::warn!(error = ?err, "presence: cannot read the registry for a room");
        }
        if let Some(room) = self.rooms().get_mut(&project) {
            room.end_read(project, listed.ok(), announce);
        }
    }

    /// Schedules a diff of `project`'s room (every room for `None`) against the registry.
    fn repair_later(&self, project: Option<Uuid>) {
        let mut rooms = self.rooms();
        let due = rooms
            .iter_mut()
            .filter(|(id, _)| project.is_none_or(|p| p == **id));
        for (_, room) in due {
            room.repair_in = REPAIR_DELAY_TICKS;
        }
    }

    /// Diffs the rooms whose repair is due (once the registry answers for everyone).
    async fn repair_due_rooms(&self) {
        let ready = self.store.lists_everyone();
        let due: Vec<Uuid> = self
            .rooms()
            .iter_mut()
            .filter_map(|(project, room)| match room.repair_in {
                0 => None,
                1 if ready => {
                    room.repair_in = 0;
                    Some(*project)
                }
                1 => None,
                _ => {
                    room.repair_in -= 1;
                    None
                }
            })
            .collect();
        for project in due {
            self.read_roster(project, true).await;
        }
    }

    /// Hands an event (from the bus or from this instance) to its project's subscribers here.
    fn deliver(&self, event: Arc<PresenceEvent>) {
        if let Some(room) = self.rooms().get_mut(&event.project_id) {
            room.deliver(event);
        }
    }

    /// Closes the rooms nobody has listened to for two ticks, and stops following them.
    fn close_idle_rooms(&self) {
        self.rooms().retain(|project, room| {
            if room.events.receiver_count() == 0 {
                room.idle_ticks += 1;
            } else {
                room.idle_ticks = 0;
            }
            let open = room.idle_ticks < 2;
            if !open {
                self.bus.unfollow(channel(*project));
            }
            open
        });
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

/// Presence events of the other instances arrive here from the bus, on the channels of the
/// projects this instance follows.
impl ChannelHandler for Presence {
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<PresenceEvent>(payload) {
            Ok(event) => self.deliver(Arc::new(event)),
            Err(err) => match serde_json::from_slice::<RepairHint>(payload) {
                Ok(hint) => self.repair_later(Some(hint.repair)),
                Err(_) => tracing::warn!(error = %err, "undecodable presence event on the bus"),
            },
        }
    }

    /// What the other instances published during the break is lost: every room is diffed
    /// against the registry once they have all had a heartbeat.
    fn reconnected(&self) {
        self.repair_later(None);
    }
}

/// `focusTask` by a user that holds no `presenceEvents` of the project.
fn not_present() -> AppError {
    AppError::bad_input(
        "projectId",
        "subscribe to presenceEvents of this project before focusing a task",
    )
}
