//! One project's presence on this instance: the broadcast its subscribers listen to, and
//! the roster of who they have been told is present, so that what they missed while this
//! instance could not hear the others can be made up by a diff against the registry.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{PresenceEntry, PresenceEvent, PresenceEventKind};
use crate::events::UserSnapshot;

/// Presence events a slow subscriber may fall behind by in one project before it skips some.
const CAPACITY: usize = 256;

/// Maintenance ticks between the moment a repair is asked for and the registry read it
/// diffs against: by then every live instance has heartbeated once and written back what
/// the registry lost, so the diff sees them all (a Redis that restarted empty is rewritten
/// by each instance at its next tick, not at once).
pub(super) const REPAIR_DELAY_TICKS: u8 = 2;

/// Ticks between a repair that finds someone missing from the registry and the read that
/// confirms it: one presence timeout (three ticks) and one more. An instance slow to write
/// back after Redis restarted empty (its link still reconnecting) is absent for a while
/// without being gone; by then it has written back, or its users have no lease and a sweep
/// could not keep them either.
pub(super) const CONFIRM_LEFT_TICKS: u8 = 4;

/// User id → the user and the task they focus, as this room's subscribers were told.
type Roster = HashMap<String, (UserSnapshot, Option<Uuid>)>;

/// One project's presence events on this instance.
pub(super) struct Room {
    pub(super) events: broadcast::Sender<Arc<PresenceEvent>>,
    /// Maintenance ticks in a row that found nobody listening; the room closes at two, so
    /// that one opened just before a tick is not closed before its subscriber arrives.
    pub(super) idle_ticks: u8,
    /// Who the subscribers have been told is present: every event delivered updates it.
    roster: Roster,
    /// Set while the registry is being read for this room: the events delivered meanwhile,
    /// replayed over what the read returns (it may predate some of them).
    replay: Option<Vec<Arc<PresenceEvent>>>,
    /// Ticks until this room is diffed against the registry (0: no repair due).
    pub(super) repair_in: u8,
    /// Users the last repair found missing from the registry and kept in the roster until
    /// the next one confirms they are gone.
    missing: HashSet<String>,
}

impl Room {
    pub(super) fn new() -> Self {
        Self {
            events: broadcast::channel(CAPACITY).0,
            idle_ticks: 0,
            roster: Roster::new(),
            replay: None,
            repair_in: 0,
            missing: HashSet::new(),
        }
    }

    /// Hands `event` to the subscribers and notes it in the roster.
    pub(super) fn deliver(&mut self, event: Arc<PresenceEvent>) {
        apply(&mut self.roster, &event);
        if let Some(replay) = &mut self.replay {
            replay.push(event.clone());
        }
        let _ = self.events.send(event);
    }

    /// Starts a read of the registry: from now on delivered events are kept for the replay.
    pub(super) fn begin_read(&mut self) {
        self.replay = Some(Vec::new());
    }

    /// Ends a read begun with [`begin_read`](Self::begin_read): `listed` (with the events
    /// delivered during the read replayed over it) becomes the roster. With `announce`, the
    /// subscribers first get the events that take them from the old roster to it, except
    /// that someone missing is announced LEFT only when the previous repair found them
    /// missing too; returns whether someone awaits that confirmation.
    pub(super) fn end_read(
        &mut self,
        project: Uuid,
        listed: Option<Vec<PresenceEntry>>,
        announce: bool,
    ) -> bool {
        let replay = self.replay.take().unwrap_or_default();
        let Some(listed) = listed else {
            return !self.missing.is_empty();
        };
        let mut target: Roster = listed
            .into_iter()
            .map(|entry| (entry.user.id.clone(), (entry.user, entry.focus_task_id)))
            .collect();
        for event in &replay {
            apply(&mut target, event);
        }
        let mut missing = HashSet::new();
        if announce {
            for (id, told) in &self.roster {
                if !target.contains_key(id) && !self.missing.contains(id) {
                    target.insert(id.clone(), told.clone());
                    missing.insert(id.clone());
                }
            }
            for event in diff(project, &self.roster, &target) {
                let _ = self.events.send(Arc::new(event));
            }
        }
        self.roster = target;
        self.missing = missing;
        !self.missing.is_empty()
    }
}

/// What `event` does to a roster. Each kind sets a user's state outright (present with no
/// focus, gone, focusing), so replaying an event the roster already reflects changes nothing.
fn apply(roster: &mut Roster, event: &PresenceEvent) {
    let id = event.user.id.clone();
    match event.kind {
        PresenceEventKind::Joined | PresenceEventKind::FocusChanged => {
            roster.insert(id, (event.user.clone(), event.focus_task_id));
        }
        PresenceEventKind::Left => {
            roster.remove(&id);
        }
    }
}

/// The events that take subscribers who were told `told` to `now`: JOINED (with the focus)
/// for who arrived, LEFT for who went, FOCUS_CHANGED for who looks elsewhere.
fn diff(project: Uuid, told: &Roster, now: &Roster) -> Vec<PresenceEvent> {
    let at = Utc::now();
    let event = |kind, user: &UserSnapshot, focus| PresenceEvent {
        kind,
        project_id: project,
        user: user.clone(),
        focus_task_id: focus,
        at,
    };
    let mut events = Vec::new();
    for (id, (user, focus)) in now {
        match told.get(id) {
            None => events.push(event(PresenceEventKind::Joined, user, *focus)),
            Some((_, before)) if before != focus => {
                events.push(event(PresenceEventKind::FocusChanged, user, *focus));
            }
            Some(_) => {}
        }
    }
    for (id, (user, _)) in told {
        if !now.contains_key(id) {
            events.push(event(PresenceEventKind::Left, user, None));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserSnapshot {
        UserSnapshot {
            id: id.into(),
            name: id.to_uppercase(),
            avatar_url: None,
        }
    }

    fn entry(id: &str, focus: Option<Uuid>) -> PresenceEntry {
        PresenceEntry {
            user: user(id),
            focus_task_id: focus,
            online_since: Utc::now(),
            last_seen_at: Utc::now(),
        }
    }

    fn event(kind: PresenceEventKind, id: &str, project: Uuid) -> Arc<PresenceEvent> {
        Arc::new(PresenceEvent {
            kind,
            project_id: project,
            user: user(id),
            focus_task_id: None,
            at: Utc::now(),
        })
    }

    /// What the subscribers hear from a repair that reads `listed`, sorted by user.
    fn repair(
        room: &mut Room,
        project: Uuid,
        listed: Option<Vec<PresenceEntry>>,
    ) -> Vec<(String, PresenceEventKind, Option<Uuid>)> {
        let mut receiver = room.events.subscribe();
        room.begin_read();
        room.end_read(project, listed, true);
        let mut heard = Vec::new();
        while let Ok(event) = receiver.try_recv() {
            heard.push((event.user.id.clone(), event.kind, event.focus_task_id));
        }
        heard.sort_by(|a, b| a.0.cmp(&b.0));
        heard
    }

    #[test]
    fn a_repair_announces_who_came_went_or_looks_elsewhere_and_nothing_else() {
        let project = Uuid::new_v4();
        let task = Some(Uuid::new_v4());
        let mut room = Room::new();
        room.begin_read();
        room.end_read(
            project,
            Some(vec![
                entry("ann", None),
                entry("ben", None),
                entry("cy", None),
            ]),
            false,
        );
        let now = vec![entry("ann", None), entry("cy", task), entry("dee", None)];
        assert_eq!(
            repair(&mut room, project, Some(now.clone())),
            vec![
                ("cy".into(), PresenceEventKind::FocusChanged, task),
                ("dee".into(), PresenceEventKind::Joined, None),
            ],
            "ben's instance may only be late to write back"
        );
        assert!(
            repair(&mut room, project, None).is_empty(),
            "a failed read changes nothing"
        );
        assert_eq!(
            repair(&mut room, project, Some(now.clone())),
            vec![("ben".into(), PresenceEventKind::Left, None)],
            "still missing at the next read: gone"
        );
        assert!(repair(&mut room, project, Some(now)).is_empty());
    }

    #[test]
    fn someone_missing_once_and_back_at_the_next_read_is_not_announced() {
        let project = Uuid::new_v4();
        let mut room = Room::new();
        room.begin_read();
        let both = vec![entry("ann", None), entry("ben", None)];
        room.end_read(project, Some(both.clone()), false);
        assert!(repair(&mut room, project, Some(vec![entry("ann", None)])).is_empty());
        assert!(repair(&mut room, project, Some(both)).is_empty());
        // Missing again later is a new suspicion, not a confirmation.
        assert!(repair(&mut room, project, Some(vec![entry("ann", None)])).is_empty());
    }

    #[test]
    fn events_delivered_during_the_read_win_over_what_it_returned() {
        let project = Uuid::new_v4();
        let mut room = Room::new();
        room.deliver(event(PresenceEventKind::Joined, "ann", project));
        room.begin_read();
        // The read was answered before these two happened.
        room.deliver(event(PresenceEventKind::Left, "ann", project));
        room.deliver(event(PresenceEventKind::Joined, "ben", project));
        let mut receiver = room.events.subscribe();
        room.end_read(project, Some(vec![entry("ann", None)]), true);
        assert!(
            receiver.try_recv().is_err(),
            "the subscribers already heard both; the stale read must not undo them"
        );
        assert_eq!(
            room.roster.keys().cloned().collect::<Vec<_>>(),
            vec!["ben".to_string()]
        );
    }
}
