//! Presence in Redis, shared by every instance.
//!
//! Per project: `…:entries` (one field per user and instance, with that instance's
//! connection count and heartbeat), `…:users` (each user's connection count over all
//! instances: HINCRBY makes "first in" and "last out" atomic), and `…:focus`. Survivors sweep
//! the entries of an instance whose heartbeat stopped; only the sweeper whose HDEL removed
//! the entry takes its connections off the user's count, so a dead instance's users leave
//! exactly once.
//!
//! This store keeps no state of its own: what this instance's connections amount to lives in
//! the memory store, and [`super::FallbackStore`] writes it here (and serves from it while
//! Redis is away).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::memory::Entry;
use super::{PresenceEvent, PresenceEventKind};
use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::redis_link::RedisLink;

mod resync;
mod shared;

const PROJECTS: &str = "tasknest:presence:projects";
const SEP: char = '\u{1f}';

// A project's keys share the hash tag `{<project id>}`: on a Redis Cluster they live in one
// slot, so the scripts and pipelines that touch them together run there.
fn entries_key(project: Uuid) -> String {
    format!("tasknest:presence:{{{project}}}:entries")
}
fn users_key(project: Uuid) -> String {
    format!("tasknest:presence:{{{project}}}:users")
}
fn focus_key(project: Uuid) -> String {
    format!("tasknest:presence:{{{project}}}:focus")
}

/// An instance's entry for one user, as stored in `…:entries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredEntry {
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
    conn: RedisLink,
    instance: Uuid,
    timeout: Duration,
}

fn internal(err: redis::RedisError) -> AppError {
    AppError::Internal(anyhow::anyhow!("presence store: {err}"))
}

impl RedisStore {
    /// A store on `conn` for this `instance`, whose entries live `timeout` past each
    /// heartbeat.
    pub fn new(conn: RedisLink, instance: Uuid, timeout: Duration) -> Self {
        Self {
            conn,
            instance,
            timeout,
        }
    }

    /// The entry this instance writes for a user's local connections, leased until `now`
    /// plus the timeout.
    pub(super) fn stored(&self, entry: &Entry, now: DateTime<Utc>) -> StoredEntry {
        StoredEntry {
            user: entry.presence.user.clone(),
            connections: i64::try_from(entry.connections).unwrap_or(i64::MAX),
            online_since: entry.presence.online_since,
            last_seen_at: entry.presence.last_seen_at,
            expires_at: self.lease(now),
            focus_task_id: entry.presence.focus_task_id,
        }
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
                });
            }
        }
        Ok(left)
    }
}

/// Presence maintenance: heartbeats and sweeps.
impl RedisStore {
    /// Renews this instance's entries: one pipeline per project (a cluster takes a pipeline
    /// per slot), all sent at once on the multiplexed link.
    pub(super) async fn heartbeat(
        &self,
        mine: &[(Uuid, StoredEntry)],
    ) -> Result<(), redis::RedisError> {
        let mut pipes: HashMap<Uuid, redis::Pipeline> = HashMap::new();
        for (project, entry) in mine {
            if let Ok(json) = serde_json::to_string(entry) {
                pipes
                    .entry(*project)
                    .or_insert_with(redis::pipe)
                    .hset(entries_key(*project), self.field(&entry.user.id), json)
                    .ignore();
            }
        }
        let sends = pipes.into_values().map(|pipe| {
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await }
        });
        futures_util::future::try_join_all(sends).await.map(|_| ())
    }

    /// The projects that have anyone present, on any instance.
    pub(super) async fn projects(&self) -> Result<HashSet<Uuid>, redis::RedisError> {
        let projects: HashSet<String> = self.conn.clone().smembers(PROJECTS).await?;
        Ok(projects
            .iter()
            .filter_map(|p| Uuid::parse_str(p).ok())
            .collect())
    }

    /// Sweeps every project: the LEFT events of users whose last instance died.
    pub(super) async fn sweep_all(
        &self,
        projects: &HashSet<Uuid>,
        now: DateTime<Utc>,
    ) -> Vec<PresenceEvent> {
        let mut left = Vec::new();
        for project in projects {
            match self.sweep(*project, now).await {
                Ok(mut gone) => left.append(&mut gone),
                Err(err) => tracing::warn!(error = %err, "presence sweep failed"),
            }
        }
        left
    }
}
