//! What joins, leaves, focus and `presence` do in Redis.

use std::collections::HashMap;

use chrono::Utc;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{
    LEASES, RedisStore, StoredEntry, StoredFocus, entries_key, focus_key, internal, users_key,
};
use crate::error::AppError;
use crate::presence::PresenceEntry;

/// KEYS: entries, users. ARGV: field, entry JSON, user id. Returns the user's connection
/// count after this one.
const CONNECT: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
";

/// KEYS: entries, users, focus. ARGV: field, entry JSON (empty: remove), user id.
const DISCONNECT: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
  return 1
end
return 0
";

impl RedisStore {
    pub(in crate::presence) async fn shared_connect(
        &self,
        project: Uuid,
        user_id: &str,
        entry: &StoredEntry,
    ) -> Result<bool, AppError> {
        let json = serde_json::to_string(entry).map_err(anyhow::Error::from)?;
        // The project's keys change together in one script (the recount after an outage
        // never sees the entry without its count). The lease is one key of its own (another
        // slot on a cluster), written alongside on the multiplexed link, so that an instance
        // that dies before its first heartbeat is still swept.
        let mut conn = self.conn.clone();
        let register = async {
            let mut conn = self.conn.clone();
            conn.zadd::<_, _, _, ()>(LEASES, self.lease_member(project), entry.expires_ms)
                .await
        };
        let script = redis::Script::new(CONNECT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(entries_key(project))
            .key(users_key(project))
            .arg(self.field(user_id))
            .arg(json)
            .arg(user_id);
        let connect = invocation.invoke_async::<i64>(&mut conn);
        let ((), total) = tokio::try_join!(register, connect).map_err(internal)?;
        Ok(total == 1)
    }

    /// Writes this instance's entry (or drops it when `remaining_here` is `None`) and takes
    /// one connection off the user's count, atomically in Redis, so that a join elsewhere
    /// cannot slip between the count reaching zero and its removal.
    pub(in crate::presence) async fn shared_disconnect(
        &self,
        project: Uuid,
        user_id: &str,
        remaining_here: Option<&StoredEntry>,
    ) -> Result<bool, AppError> {
        let entry = match remaining_here {
            Some(entry) => serde_json::to_string(entry).map_err(anyhow::Error::from)?,
            None => String::new(),
        };
        let mut conn = self.conn.clone();
        let last: i64 = redis::Script::new(DISCONNECT)
            .key(entries_key(project))
            .key(users_key(project))
            .key(focus_key(project))
            .arg(self.field(user_id))
            .arg(entry)
            .arg(user_id)
            .invoke_async(&mut conn)
            .await
            .map_err(internal)?;
        Ok(last == 1)
    }

    /// Sets the focus when `user_id` is present anywhere; false when it is not.
    pub(in crate::presence) async fn shared_focus(
        &self,
        project: Uuid,
        user_id: &str,
        task: Option<Uuid>,
    ) -> Result<bool, AppError> {
        let mut conn = self.conn.clone();
        let present: Option<i64> = conn
            .hget(users_key(project), user_id)
            .await
            .map_err(internal)?;
        if present.unwrap_or_default() <= 0 {
            return Ok(false);
        }
        let json =
            serde_json::to_string(&StoredFocus { task_id: task }).map_err(anyhow::Error::from)?;
        let _: () = conn
            .hset(focus_key(project), user_id, json)
            .await
            .map_err(internal)?;
        Ok(true)
    }

    pub(in crate::presence) async fn shared_list(
        &self,
        project: Uuid,
    ) -> Result<Vec<PresenceEntry>, AppError> {
        let mut conn = self.conn.clone();
        // One round trip for both hashes.
        let (entries, focus): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
            .hgetall(entries_key(project))
            .hgetall(focus_key(project))
            .query_async(&mut conn)
            .await
            .map_err(internal)?;
        let now = Utc::now();
        let entries = entries
            .values()
            .filter_map(|raw| serde_json::from_str::<StoredEntry>(raw).ok())
            .filter(|entry| entry.expires_at >= now && entry.connections > 0);
        Ok(merge_entries(entries, |user| {
            focus
                .get(user)
                .and_then(|f| serde_json::from_str::<StoredFocus>(f).ok())
                .and_then(|f| f.task_id)
        }))
    }
}

/// One entry per user (a user on several instances has several), oldest first.
fn merge_entries(
    entries: impl Iterator<Item = StoredEntry>,
    focus_of: impl Fn(&str) -> Option<Uuid>,
) -> Vec<PresenceEntry> {
    let mut by_user: HashMap<String, PresenceEntry> = HashMap::new();
    for entry in entries {
        by_user
            .entry(entry.user.id.clone())
            .and_modify(|p| {
                p.online_since = p.online_since.min(entry.online_since);
                p.last_seen_at = p.last_seen_at.max(entry.last_seen_at);
            })
            .or_insert(PresenceEntry {
                focus_task_id: focus_of(&entry.user.id),
                user: entry.user,
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
    list
}
