//! This instance's rooms: opening and following them, delivering to them, closing the idle
//! ones, and repairing what their subscribers missed.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::room::{CONFIRM_LEFT_TICKS, REPAIR_DELAY_TICKS, Room};
use super::{Presence, PresenceEvent, channel};
use crate::realtime::{BusStatus, ChannelHandler};

/// What goes on a project's presence channel besides events: "diff your room against the
/// registry", from an instance that wrote back users others had been told left.
#[derive(Serialize, Deserialize)]
pub(super) struct RepairHint {
    pub(super) repair: Uuid,
}

impl Presence {
    /// The rooms, even if a thread panicked holding them (each change leaves them whole).
    pub(super) fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Room>> {
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
    /// `announce`, tells the subscribers what they missed, and tries again later if the
    /// read failed or someone missing awaits confirmation.
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
            let failed = listed.is_err();
            let unconfirmed = room.end_read(project, listed.ok(), announce);
            if announce && failed {
                room.repair_in = REPAIR_DELAY_TICKS;
            } else if unconfirmed {
                room.repair_in = CONFIRM_LEFT_TICKS;
            }
        }
    }

    /// Schedules a diff of `project`'s room (every room for `None`) against the registry.
    pub(super) fn repair_later(&self, project: Option<Uuid>) {
        let mut rooms = self.rooms();
        let due = rooms
            .iter_mut()
            .filter(|(id, _)| project.is_none_or(|p| p == **id));
        for (_, room) in due {
            // Never sooner than one already due later: that may be the read confirming who
            // left, which must wait its full time.
            room.repair_in = room.repair_in.max(REPAIR_DELAY_TICKS);
        }
    }

    /// Diffs the rooms whose repair is due (once the registry answers for everyone).
    pub(super) async fn repair_due_rooms(&self) {
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
    pub(super) fn deliver(&self, event: Arc<PresenceEvent>) {
        if let Some(room) = self.rooms().get_mut(&event.project_id) {
            room.deliver(event);
        }
    }

    /// Closes the rooms nobody has listened to for two ticks, and stops following them.
    pub(super) fn close_idle_rooms(&self) {
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
