//! Presence kept in this process: the single-instance default, and this instance's own
//! share of the registry when presence is shared through Redis (see [`super::fallback`]).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PresenceEntry, PresenceStore, Upkeep};
use crate::error::AppError;
use crate::events::UserSnapshot;

/// One user's presence in one project through this instance's connections.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Open `presenceEvents` subscriptions of the user here.
    pub connections: usize,
    /// What the user looks like to others.
    pub presence: PresenceEntry,
}

/// Presence in memory.
#[derive(Default)]
pub struct MemoryStore {
    projects: Mutex<HashMap<Uuid, HashMap<String, Entry>>>,
}

impl MemoryStore {
    fn projects(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<String, Entry>>> {
        self.projects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The user's entry in `project`, when it has connections here.
    pub fn entry(&self, project: Uuid, user_id: &str) -> Option<Entry> {
        self.projects()
            .get(&project)
            .and_then(|users| users.get(user_id))
            .cloned()
    }

    /// Every entry, with its project.
    pub fn entries(&self) -> Vec<(Uuid, Entry)> {
        self.projects()
            .iter()
            .flat_map(|(project, users)| users.values().map(|e| (*project, e.clone())))
            .collect()
    }

    /// Sets the user's focus when it is present here; false when it is not.
    pub fn set_focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> bool {
        let mut projects = self.projects();
        match projects
            .get_mut(&project)
            .and_then(|users| users.get_mut(user_id))
        {
            Some(entry) => {
                entry.presence.focus_task_id = task;
                entry.presence.last_seen_at = now;
                true
            }
            None => false,
        }
    }
}

#[async_trait::async_trait]
impl PresenceStore for MemoryStore {
    async fn connect(
        &self,
        project: Uuid,
        user: &UserSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, AppError> {
        let mut projects = self.projects();
        let entry = projects
            .entry(project)
            .or_default()
            .entry(user.id.clone())
            .or_insert_with(|| Entry {
                connections: 0,
                presence: PresenceEntry {
                    user: user.clone(),
                    focus_task_id: None,
                    online_since: now,
                    last_seen_at: now,
                },
            });
        entry.connections += 1;
        entry.presence.last_seen_at = now;
        Ok(entry.connections == 1)
    }

    async fn disconnect(&self, project: Uuid, user_id: &str) -> Result<bool, AppError> {
        let mut projects = self.projects();
        let Some(users) = projects.get_mut(&project) else {
            return Ok(false);
        };
        let Some(entry) = users.get_mut(user_id) else {
            return Ok(false);
        };
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections > 0 {
            return Ok(false);
        }
        users.remove(user_id);
        if users.is_empty() {
            projects.remove(&project);
        }
        Ok(true)
    }

    async fn focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        if self.set_focus(project, user_id, task, now) {
            Ok(())
        } else {
            Err(super::not_present())
        }
    }

    async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError> {
        let projects = self.projects();
        let mut entries: Vec<PresenceEntry> = projects
            .get(&project)
            .map(|users| users.values().map(|e| e.presence.clone()).collect())
            .unwrap_or_default();
        entries.sort_by(|a, b| {
            a.online_since
                .cmp(&b.online_since)
                .then(a.user.id.cmp(&b.user.id))
        });
        Ok(entries)
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Upkeep {
        for users in self.projects().values_mut() {
            for entry in users.values_mut() {
                entry.presence.last_seen_at = now;
            }
        }
        Upkeep::default()
    }
}
