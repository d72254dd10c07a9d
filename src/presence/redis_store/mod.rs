//! Presence in Redis, shared by every instance.
//!
//! Per project: `…:entries` (one field per user and instance, with that instance's
//! connection count and heartbeat), `…:users` (each user's connection count over all
//! instances: HINCRBY makes "first in" and "last out" atomic), and `…:focus`. Survivors sweep
//! the entries of an instance whose heartbeat stopped; only the sweeper whose HDEL removed
//! the entry takes its connections off the user's count, so a dead instance's users leave
//! exactly once.
//!
//! While Redis is away the store runs on this instance's own entries (see [`fallback`]):
//! joins, leaves and focus keep working for this instance's users, and `presence` lists
//! them. The maintenance tick probes Redis and, once it answers, writes the local state back
//! and recounts, so the shared registry is right again without anyone reconnecting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PresenceEntry, PresenceEvent, PresenceEventKind, PresenceStore};
use crate::error::AppError;
use crate::events::UserSnapshot;

mod resync;
mod shared;

/// The channel presence events travel on.
pub const CHANNEL: &str = "tasknest:presence";
const PROJECTS: &str = "tasknest:presence:projects";
const SEP: char = '\u{1f}';

fn entries_key(project: Uuid) -> String {
    format!("tasknest:presence:{project}:entries")
}
fn users_key(project: Uuid) -> String {
    format!("tasknest:presence:{project}:users")
}
fn focus_key(project: Uuid) -> String {
    format!("tasknest:presence:{project}:focus")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEntry {
    user: UserSnapshot,
    connections: i64,
    online_since: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    /// The lease the writing instance took: its heartbeat time plus its own timeout. Sweepers
    /// go by this, not by their own setting, so instances need not agree on the timeout.
    expires_at: DateTime<Utc>,
    /// The user's focus as this instance last set it, written back after an outage.
    #[serde(default)]
    focus_task_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFocus {
    task_id: Option<Uuid>,
}

/// Presence in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    instance: Uuid,
    timeout: Duration,
    /// This instance's entries, to heartbeat them (and to serve from while Redis is away).
    local: Mutex<HashMap<(Uuid, String), StoredEntry>>,
    /// Redis failed and the shared registry has not been rewritten since.
    degraded: AtomicBool,
    /// Joins and leaves hold it shared; the resync after an outage holds it alone.
    gate: tokio::sync::RwLock<()>,
    /// Projects whose entries changed while degraded (a user that left entirely is no
    /// longer in `local`, but its entry in Redis must still go).
    touched: Mutex<std::collections::HashSet<Uuid>>,
}

fn internal(err: redis::RedisError) -> AppError {
    AppError::Internal(anyhow::anyhow!("presence store: {err}"))
}

impl RedisStore {
    /// A store on `conn` for this `instance`.
    pub fn new(conn: ConnectionManager, instance: Uuid, timeout: Duration) -> Self {
        Self {
            conn,
            instance,
            timeout,
            local: Mutex::new(HashMap::new()),
            degraded: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            touched: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether the store is serving from local state until Redis is back.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Switches to local state after a failed Redis call.
    fn degrade(&self, project: Uuid, err: &AppError) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = ?err, "presence: Redis unavailable, serving local state");
        }
        self.touch(project);
    }

    /// Notes that `project`'s shared entries must be rewritten when Redis is back.
    fn touch(&self, project: Uuid) {
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(project);
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, String), StoredEntry>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.timeout).unwrap_or_default()
    }

    fn field(&self, user_id: &str) -> String {
        format!("{user_id}{SEP}{}", self.instance)
    }

    async fn sweep(
        &self,
        project: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<PresenceEvent>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let entries: HashMap<String, String> = conn.hgetall(entries_key(project)).await?;
        if entries.is_empty() {
            let _: () = conn.srem(PROJECTS, project.to_string()).await?;
            return Ok(Vec::new());
        }
        let mut left = Vec::new();
        for (field, raw) in entries {
            let Ok(entry) = serde_json::from_str::<StoredEntry>(&raw) else {
                continue;
            };
            let mine = field.ends_with(&self.instance.to_string());
            if mine || entry.expires_at >= now {
                continue;
            }
            let removed: i64 = conn.hdel(entries_key(project), &field).await?;
            if removed != 1 {
                continue; // another survivor swept it
            }
            let remaining: i64 = conn
                .hincr(users_key(project), &entry.user.id, -entry.connections)
                .await?;
            if remaining <= 0 {
                let _: () = conn.hdel(users_key(project), &entry.user.id).await?;
                let _: () = conn.hdel(focus_key(project), &entry.user.id).await?;
                left.push(PresenceEvent {
                    kind: PresenceEventKind::Left,
                    project_id: project,
                    user: entry.user,
                    focus_task_id: None,
                    at: now,
                    origin: self.instance,
                });
            }
        }
        Ok(left)
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisStore {
    async fn connect(
        &self,
        project: Uuid,
        user: &UserSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, AppError> {
        let _gate = self.gate.read().await;
        let entry = {
            let mut local = self.local();
            let entry = local
                .entry((project, user.id.clone()))
                .or_insert_with(|| StoredEntry {
                    user: user.clone(),
                    connections: 0,
                    online_since: now,
                    last_seen_at: now,
                    expires_at: now,
                    focus_task_id: None,
                });
            entry.connections += 1;
            entry.last_seen_at = now;
            entry.expires_at = self.lease(now);
            entry.clone()
        };
        let first_here = entry.connections == 1;
        if self.is_degraded() {
            self.touch(project);
            return Ok(first_here);
        }
        match self.shared_connect(project, &user.id, &entry).await {
            Ok(first) => Ok(first),
            Err(err) => {
                self.degrade(project, &err);
                Ok(first_here)
            }
        }
    }

    async fn disconnect(&self, project: Uuid, user_id: &str) -> Result<bool, AppError> {
        let _gate = self.gate.read().await;
        let remaining_here = {
            let mut local = self.local();
            let key = (project, user_id.to_owned());
            let Some(entry) = local.get_mut(&key) else {
                return Ok(false);
            };
            entry.connections -= 1;
            if entry.connections <= 0 {
                local.remove(&key);
                None
            } else {
                Some(entry.clone())
            }
        };
        let last_here = remaining_here.is_none();
        if self.is_degraded() {
            self.touch(project);
            return Ok(last_here);
        }
        match self
            .shared_disconnect(project, user_id, remaining_here.as_ref())
            .await
        {
            Ok(last) => Ok(last),
            Err(err) => {
                self.degrade(project, &err);
                Ok(last_here)
            }
        }
    }

    async fn focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
        _now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let _gate = self.gate.read().await;
        let present_here = {
            let mut local = self.local();
            match local.get_mut(&(project, user_id.to_owned())) {
                Some(entry) => {
                    entry.focus_task_id = task;
                    true
                }
                None => false,
            }
        };
        let present = if self.is_degraded() {
            present_here
        } else {
            match self.shared_focus(project, user_id, task).await {
                Ok(present) => present,
                Err(err) => {
                    self.degrade(project, &err);
                    present_here
                }
            }
        };
        if !present {
            return Err(AppError::bad_input(
                "projectId",
                "subscribe to presenceEvents of this project before focusing a task",
            ));
        }
        Ok(())
    }

    async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError> {
        if !self.is_degraded() {
            match self.shared_list(project).await {
                Ok(list) => return Ok(list),
                Err(err) => self.degrade(project, &err),
            }
        }
        Ok(self.local_list(project))
    }

    async fn publish(&self, event: &PresenceEvent) {
        let mut conn = self.conn.clone();
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        if let Err(err) = conn.publish::<_, _, ()>(CHANNEL, payload).await {
            tracing::warn!(error = %err, "presence publish failed");
        }
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Vec<PresenceEvent> {
        if self.is_degraded()
            && let Err(err) = self.resync().await
        {
            tracing::debug!(error = %err, "presence: Redis still unavailable");
            return Vec::new();
        }
        let mine: Vec<((Uuid, String), StoredEntry)> = {
            let mut local = self.local();
            local
                .iter_mut()
                .map(|(k, e)| {
                    e.last_seen_at = now;
                    e.expires_at = self.lease(now);
                    (k.clone(), e.clone())
                })
                .collect()
        };
        let mut conn = self.conn.clone();
        if !mine.is_empty() {
            let mut pipe = redis::pipe();
            for ((project, user), entry) in &mine {
                if let Ok(json) = serde_json::to_string(entry) {
                    pipe.hset(entries_key(*project), self.field(user), json)
                        .ignore();
                }
            }
            if let Err(err) = pipe.query_async::<()>(&mut conn).await {
                for ((project, _), _) in &mine {
                    self.degrade(*project, &internal(err.clone()));
                }
                return Vec::new();
            }
        }
        let projects: std::collections::HashSet<String> = match conn.smembers(PROJECTS).await {
            Ok(projects) => projects,
            Err(err) => {
                tracing::warn!(error = %err, "presence sweep failed");
                return Vec::new();
            }
        };
        // A Redis that restarted between two ticks (and keeps nothing on disk) forgot this
        // instance's projects: write everything back rather than wait for a failed call.
        if mine
            .iter()
            .any(|((project, _), _)| !projects.contains(&project.to_string()))
        {
            for ((project, _), _) in &mine {
                self.touch(*project);
            }
            if let Err(err) = self.resync().await {
                self.degraded.store(true, Ordering::Release);
                tracing::warn!(error = %err, "presence resync failed");
            }
        }
        let mut left = Vec::new();
        for project in projects.iter().filter_map(|p| Uuid::parse_str(p).ok()) {
            match self.sweep(project, now).await {
                Ok(mut gone) => left.append(&mut gone),
                Err(err) => tracing::warn!(error = %err, "presence sweep failed"),
            }
        }
        left
    }
}
