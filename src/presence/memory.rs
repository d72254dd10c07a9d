//! Presence kept in this process: the single-instance default.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{PresenceEntry, PresenceEvent, PresenceStore};
use crate::error::AppError;
use crate::events::UserSnapshot;

struct Entry {
    connections: usize,
    presence: PresenceEntry,
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
        let mut projects = self.projects();
        let entry = projects
            .get_mut(&project)
            .and_then(|users| users.get_mut(user_id))
            .ok_or_else(|| {
                AppError::bad_input(
                    "projectId",
                    "subscribe to presenceEvents of this project before focusing a task",
                )
            })?;
        entry.presence.focus_task_id = task;
        entry.presence.last_seen_at = now;
        Ok(())
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

    async fn publish(&self, _event: &PresenceEvent) {
        // One instance: local delivery is all there is.
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Vec<PresenceEvent> {
        for users in self.projects().values_mut() {
            for entry in users.values_mut() {
                entry.presence.last_seen_at = now;
            }
        }
        Vec::new()
    }
}
