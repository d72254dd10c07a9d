//! Presence in Redis, shared by every instance.
//!
//! Per project: `…:entries` (one field per user and instance, with that instance's
//! connection count and heartbeat), `…:users` (each user's connection count over all
//! instances: HINCRBY makes "first in" and "last out" atomic), and `…:focus`. Beside them one
//! sorted set, `tasknest:presence:leases`, holds a lease per project and instance, scored by
//! when it runs out: each instance renews its own on every heartbeat, and survivors sweep
//! only the pairs whose lease ran out (see [`maintain`]), so no instance ever walks the
//! projects it has nobody in. Only the sweeper whose script removed an entry takes its
//! connections off the user's count, so a dead instance's users leave exactly once.
//!
//! This store keeps no state of its own: what this instance's connections amount to lives in
//! the memory store, and [`super::FallbackStore`] writes it here (and serves from it while
//! Redis is away).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::memory::Entry;
use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::redis_link::RedisLink;

mod maintain;
mod resync;
mod shared;

/// The sorted set of leases: member `<project>␟<instance>`, score the lease's end in
/// milliseconds since the epoch. One key (one slot on a cluster), touched once per tick by
/// each instance.
const LEASES: &str = "tasknest:presence:leases";
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
    /// `expires_at` in milliseconds since the epoch, for the sweep script (Lua compares
    /// numbers, not timestamps).
    #[serde(default)]
    expires_ms: i64,
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
            expires_ms: self.lease(now).timestamp_millis(),
        }
    }

    fn lease(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.timeout).unwrap_or_default()
    }

    fn field(&self, user_id: &str) -> String {
        format!("{user_id}{SEP}{}", self.instance)
    }

    /// This instance's member in [`LEASES`] for `project`.
    fn lease_member(&self, project: Uuid) -> String {
        format!("{project}{SEP}{}", self.instance)
    }
}
