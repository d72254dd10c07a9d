//! Rooms: one per project with live subscribers on this instance, each following its
//! project's bus channel while it is open (so an instance receives only the events of its
//! own rooms). A room's task receives
//! events in whatever order the bus brings them and re-emits them strictly by seq, fetching
//! any missing range from the log. A periodic check compares every room's last delivered
//! seq with the database's counters (one query for all rooms), which catches a lost event
//! that nothing follows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::bus::{Bus, ChannelHandler};
use super::events_channel;
use super::sequenced::{Joined, Sequenced};
use crate::entities::{events, projects};
use crate::events::{CommittedEvent, log};
use crate::metrics::Metrics;

/// How many events a room keeps for subscribers that fall behind; a subscriber further
/// behind catches up from the log.
pub const ROOM_BUFFER: usize = 1024;

/// Largest range fetched from the log in one query.
const FETCH_PAGE: u64 = 500;

enum Command {
    Deliver(Arc<CommittedEvent>),
    /// Fetch from the log everything after the last delivered seq (up to `until`, if known).
    Repair(Option<i64>),
}

struct Room {
    commands: mpsc::UnboundedSender<Command>,
    /// The events delivered, in seq order; ready once the room has read its starting point.
    events: Arc<Sequenced<Arc<CommittedEvent>>>,
    idle_checks: u32,
}

/// This instance's rooms.
pub struct Hub {
    db: DatabaseConnection,
    /// Rooms follow their project's channel while they are open.
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    rooms: Mutex<HashMap<Uuid, Room>>,
    shutdown: CancellationToken,
}

/// A subscriber's place in a room: live events after `last_seq` arrive on `receiver`.
pub type Membership = Joined<Arc<CommittedEvent>>;

impl Hub {
    /// A hub reading the log from `db` and other instances' events from `bus`; its tasks
    /// stop when `shutdown` is cancelled.
    pub fn new(
        db: DatabaseConnection,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            bus,
            metrics,
            rooms: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// The database the log is read from.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands an event to its project's room, if this instance has one.
    pub fn deliver(&self, event: Arc<CommittedEvent>) {
        if let Some(room) = self.rooms().get(&event.row.project_id) {
            let _ = room.commands.send(Command::Deliver(event));
        }
    }

    /// Asks every room to fetch what it may have missed (after a bus reconnect).
    pub fn repair_all(&self) {
        for room in self.rooms().values() {
            let _ = room.commands.send(Command::Repair(None));
        }
    }

    /// Joins a project's room, creating it when needed.
    pub async fn join(&self, project_id: Uuid) -> Membership {
        loop {
            let events = {
                let mut rooms = self.rooms();
                let room = rooms
                    .entry(project_id)
                    .or_insert_with(|| self.open_room(project_id));
                room.idle_checks = 0;
                room.events.clone()
            };
            match events.join().await {
                Some(membership) => return membership,
                // The room closed while we waited: open a fresh one.
                None => continue,
            }
        }
    }

    fn open_room(&self, project_id: Uuid) -> Room {
        let (commands, inbox) = mpsc::unbounded_channel();
        let events = Sequenced::new(ROOM_BUFFER);
        let task = RoomTask {
            project_id,
            db: self.db.clone(),
            bus: self.bus.clone(),
            metrics: self.metrics.clone(),
            events: events.clone(),
            pending: BTreeMap::new(),
        };
        tokio::spawn(task.run(inbox, self.shutdown.clone()));
        Room {
            commands,
            events,
            idle_checks: 0,
        }
    }

    /// Every `interval`: closes rooms nobody listens to, and compares the others' last
    /// delivered seq with the database in one query.
    pub async fn run_checks(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let ids: Vec<Uuid> = {
                let mut rooms = self.rooms();
                rooms.retain(|id, room| {
                    if room.events.receiver_count() == 0 {
                        room.idle_checks += 1;
                    } else {
                        room.idle_checks = 0;
                    }
                    let open = room.idle_checks < 2;
                    if !open {
                        self.bus.unfollow(events_channel(*id));
                    }
                    open
                });
                rooms.keys().copied().collect()
            };
            if ids.is_empty() {
                continue;
            }
            match self.counters(&ids).await {
                Ok(counters) => {
                    let rooms = self.rooms();
                    for (id, db_last) in counters {
                        if let Some(room) = rooms.get(&id) {
                            let behind = room.events.last().is_some_and(|l| l < db_last);
                            if behind {
                                let _ = room.commands.send(Command::Repair(Some(db_last)));
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "gap check failed"),
            }
        }
    }

    async fn counters(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, sea_orm::DbErr> {
        projects::Entity::find()
            .select_only()
            .column(projects::Column::Id)
            .column(projects::Column::LastSeq)
            .filter(projects::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(&self.db)
            .await
    }

    /// Rooms open on this instance.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}

/// The task that owns one room's ordering.
struct RoomTask {
    project_id: Uuid,
    db: DatabaseConnection,
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    events: Arc<Sequenced<Arc<CommittedEvent>>>,
    /// Events that arrived ahead of a gap, waiting for it to be filled.
    pending: BTreeMap<i64, Arc<CommittedEvent>>,
}

impl RoomTask {
    async fn run(self, inbox: mpsc::UnboundedReceiver<Command>, shutdown: CancellationToken) {
        let events = self.events.clone();
        self.serve(inbox, shutdown).await;
        // Joiners still waiting for this room's start open a fresh one.
        events.close();
    }

    async fn serve(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        // Follow the project's channel first, so that every event committed after the
        // starting point read below arrives (or is found by the gap check).
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = self.bus.follow(events_channel(self.project_id)) => {}
        }
        // Starting point: the project's counter now. Events up to it are history (replayed
        // from the log by subscribers that ask); events after it are this room's to deliver.
        let start = loop {
            match self.counter().await {
                Ok(seq) => break seq,
                Err(err) => {
                    tracing::warn!(project = %self.project_id, error = %err, "room cannot read its start; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        };
        self.events.start(start);
        loop {
            let command = tokio::select! {
                () = shutdown.cancelled() => return,
                command = inbox.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
            };
            match command {
                Command::Deliver(event) => {
                    if event.seq() > self.last() {
                        self.pending.insert(event.seq(), event);
                    }
                    self.drain();
                    if !self.pending.is_empty() {
                        self.fill(None).await;
                    }
                }
                Command::Repair(until) => self.fill(until).await,
            }
        }
    }

    fn last(&self) -> i64 {
        self.events.last().unwrap_or_default()
    }

    /// Emits pending events for as long as they continue the sequence.
    fn drain(&mut self) {
        loop {
            let next = self.last() + 1;
            let Some(event) = self.pending.remove(&next) else {
                break;
            };
            self.emit(event);
        }
        let last = self.last();
        self.pending.retain(|seq, _| *seq > last);
    }

    fn emit(&self, event: Arc<CommittedEvent>) {
        let seq = event.seq();
        let age = (chrono::Utc::now() - event.row.created_at)
            .to_std()
            .unwrap_or_default();
        self.metrics.commit_to_delivery.observe(age.as_secs_f64());
        let receivers = self.events.send(seq, event);
        self.metrics.events_delivered.inc_by(receivers as u64);
    }

    /// Fetches from the log what comes after the last delivered seq: up to the first
    /// pending event, or up to `until`, or everything there is.
    async fn fill(&mut self, until: Option<i64>) {
        loop {
            let last = self.last();
            let target = match (self.pending.keys().next().copied(), until) {
                (Some(pending), _) => pending - 1,
                (None, Some(until)) => until,
                (None, None) => i64::MAX,
            };
            if target <= last {
                self.drain();
                return;
            }
            let limit = FETCH_PAGE.min((target - last).try_into().unwrap_or(FETCH_PAGE));
            match log::range(&self.db, self.project_id, last, limit).await {
                Ok(rows) if rows.is_empty() => {
                    // The log has nothing more (yet): a pending event beyond a gap waits for
                    // the next check.
                    return;
                }
                Ok(rows) => {
                    self.metrics.gap_repairs.inc_by(rows.len() as u64);
                    for row in rows {
                        if row.seq > self.last() {
                            self.pending.insert(row.seq, CommittedEvent::decode(row));
                        }
                    }
                    self.drain();
                }
                Err(err) => {
                    tracing::warn!(project = %self.project_id, error = %err, "cannot fetch missing events; will retry");
                    return;
                }
            }
        }
    }

    async fn counter(&self) -> Result<i64, sea_orm::DbErr> {
        let seq: Option<i64> = projects::Entity::find_by_id(self.project_id)
            .select_only()
            .column(projects::Column::LastSeq)
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(seq.unwrap_or_default())
    }
}

/// Events other instances committed arrive here from the bus.
impl ChannelHandler for Hub {
    fn receive(&self, payload: &[u8]) {
        self.metrics.bus_events_received.inc();
        match serde_json::from_slice::<events::Model>(payload) {
            Ok(row) => self.deliver(CommittedEvent::decode(row)),
            Err(err) => tracing::warn!(error = %err, "undecodable event on the bus"),
        }
    }

    fn reconnected(&self) {
        self.repair_all();
    }
}
