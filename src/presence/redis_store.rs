//! Presence in Redis, shared by every instance.
//!
//! Per project: `…:entries` (one field per user and instance, with that instance's
//! connection count and heartbeat), `…:users` (each user's connection count over all
//! instances: HINCRBY makes "first in" and "last out" atomic), and `…:focus`. Survivors sweep
//! the entries of an instance whose heartbeat stopped; only the sweeper whose HDEL removed
//! the entry takes its connections off the user's count, so a dead instance's users leave
//! exactly once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PresenceEntry, PresenceEvent, PresenceEventKind, PresenceStore};
use crate::error::AppError;
use crate::events::UserSnapshot;

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
    /// This instance's entries, to heartbeat them.
    local: Mutex<HashMap<(Uuid, String), StoredEntry>>,
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
        }
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
                });
            entry.connections += 1;
            entry.last_seen_at = now;
            entry.expires_at = self.lease(now);
            entry.clone()
        };
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(&entry).map_err(anyhow::Error::from)?;
        let _: () = conn
            .sadd(PROJECTS, project.to_string())
            .await
            .map_err(internal)?;
        let _: () = conn
            .hset(entries_key(project), self.field(&user.id), json)
            .await
            .map_err(internal)?;
        let total: i64 = conn
            .hincr(users_key(project), &user.id, 1)
            .await
            .map_err(internal)?;
        Ok(total == 1)
    }

    async fn disconnect(&self, project: Uuid, user_id: &str) -> Result<bool, AppError> {
        let remaining_here = {
            let mut local = self.local();
            let key = (project, user_id.to_owned());
            match local.get_mut(&key) {
                Some(entry) => {
                    entry.connections -= 1;
                    let left = entry.connections;
                    let snapshot = entry.clone();
                    if left <= 0 {
                        local.remove(&key);
                    }
                    Some((left, snapshot))
                }
                None => None,
            }
        };
        let Some((left_here, snapshot)) = remaining_here else {
            return Ok(false);
        };
        let mut conn = self.conn.clone();
        if left_here <= 0 {
            let _: () = conn
                .hdel(entries_key(project), self.field(user_id))
                .await
                .map_err(internal)?;
        } else {
            let json = serde_json::to_string(&snapshot).map_err(anyhow::Error::from)?;
            let _: () = conn
                .hset(entries_key(project), self.field(user_id), json)
                .await
                .map_err(internal)?;
        }
        let total: i64 = conn
            .hincr(users_key(project), user_id, -1)
            .await
            .map_err(internal)?;
        if total <= 0 {
            let _: () = conn
                .hdel(users_key(project), user_id)
                .await
                .map_err(internal)?;
            let _: () = conn
                .hdel(focus_key(project), user_id)
                .await
                .map_err(internal)?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
        _now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let mut conn = self.conn.clone();
        let present: Option<i64> = conn
            .hget(users_key(project), user_id)
            .await
            .map_err(internal)?;
        if present.unwrap_or_default() <= 0 {
            return Err(AppError::bad_input(
                "projectId",
                "subscribe to presenceEvents of this project before focusing a task",
            ));
        }
        let json =
            serde_json::to_string(&StoredFocus { task_id: task }).map_err(anyhow::Error::from)?;
        let _: () = conn
            .hset(focus_key(project), user_id, json)
            .await
            .map_err(internal)?;
        Ok(())
    }

    async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError> {
        let mut conn = self.conn.clone();
        // One round trip for both hashes.
        let (entries, focus): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(entries_key(project))
            .hgetall(focus_key(project))
            .query_async(&mut conn)
            .await
            .map_err(internal)?;
        let now = Utc::now();
        let mut by_user: HashMap<String, PresenceEntry> = HashMap::new();
        for raw in entries.values() {
            let Ok(entry) = serde_json::from_str::<StoredEntry>(raw) else {
                continue;
            };
            if entry.expires_at < now || entry.connections <= 0 {
                continue;
            }
            let focus_task_id = focus
                .get(&entry.user.id)
                .and_then(|f| serde_json::from_str::<StoredFocus>(f).ok())
                .and_then(|f| f.task_id);
            by_user
                .entry(entry.user.id.clone())
                .and_modify(|p| {
                    p.online_since = p.online_since.min(entry.online_since);
                    p.last_seen_at = p.last_seen_at.max(entry.last_seen_at);
                })
                .or_insert(PresenceEntry {
                    user: entry.user.clone(),
                    focus_task_id,
                    online_since: entry.online_since,
                    last_seen_at: entry.last_seen_at,
                });
        }
        let mut list: Vec<PresenceEntry> = by_user.into_values().collect();
        list.sort_by(|a, b| {
            a.online_since
                .cmp(&b.online_since)
                .then(a.user.id.cmp(&b.user.id))
        });
        Ok(list)
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
                tracing::warn!(error = %err, "presence heartbeat failed");
            }
        }
        let projects: std::collections::HashSet<String> = match conn.smembers(PROJECTS).await {
            Ok(projects) => projects,
            Err(err) => {
                tracing::warn!(error = %err, "presence sweep failed");
                return Vec::new();
            }
        };
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
