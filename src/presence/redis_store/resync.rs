//! Rewriting the shared presence after a Redis outage, each project atomically in Redis.

use std::collections::HashSet;

use redis::AsyncCommands;
use serde_json::Value;
use uuid::Uuid;

use super::{LEASES, RedisStore, SEP, StoredEntry, StoredFocus, entries_key, focus_key, users_key};
use crate::redis_link::RedisLink;

impl RedisStore {
    /// Writes this instance's entries back into Redis after an outage and recounts the
    /// users of every project in `projects` (those it has entries in, and those whose
    /// entries changed while Redis was away) from all instances' entries. Returns the
    /// projects where some of this instance's users had been swept (counted out while the
    /// registry kept others of the project: a survivor took this instance for dead and told
    /// everyone they left), which the write brought back.
    pub(in crate::presence) async fn rewrite(
        &self,
        mine: &[(Uuid, StoredEntry)],
        projects: &HashSet<Uuid>,
    ) -> Result<Vec<Uuid>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let mut written_back = Vec::new();
        for project in projects {
            let mut entries = serde_json::Map::new();
            let mut focus = serde_json::Map::new();
            let mut lease = None;
            for (_, entry) in mine.iter().filter(|(p, _)| p == project) {
                lease = lease.max(Some(entry.expires_ms));
                let user = &entry.user.id;
                let json = serde_json::to_string(entry).unwrap_or_default();
                entries.insert(self.field(user), json.into());
                let f = serde_json::to_string(&StoredFocus {
                    task_id: entry.focus_task_id,
                })
                .unwrap_or_default();
                focus.insert(user.clone(), f.into());
            }
            let swept = rewrite_project(
                &mut conn,
                [
                    entries_key(*project),
                    users_key(*project),
                    focus_key(*project),
                ],
                &format!("{SEP}{}", self.instance),
                &serde_json::Value::Object(entries),
                &serde_json::Value::Object(focus),
            )
            .await?;
            if swept {
                written_back.push(*project);
            }
            if let Some(lease) = lease {
                let _: () = conn
                    .zadd(LEASES, self.lease_member(*project), lease)
                    .await?;
            }
        }
        Ok(written_back)
    }
}

/// KEYS: entries, users, focus. ARGV: this instance's field suffix, its entries (field →
/// JSON) and its users' focus (user → JSON). Drops this instance's entries that are gone,
/// writes the others, and recounts every user's connections from all instances' entries, so
/// the counts that joins and leaves missed during the outage are right again. Returns 1 when
/// one of this instance's users had no count while the project still counted someone: a
/// sweep took them out (a Redis that restarted empty counts nobody, and had told nobody).
const SCRIPT: &str = r"
local suffix = ARGV[1]
local mine = cjson.decode(ARGV[2])
local focus = cjson.decode(ARGV[3])
local swept = 0
if redis.call('HLEN', KEYS[2]) > 0 then
  for user, _ in pairs(focus) do
    if redis.call('HEXISTS', KEYS[2], user) == 0 then swept = 1 end
  end
end
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, -#suffix) == suffix and mine[field] == nil then
    redis.call('HDEL', KEYS[1], field)
  end
end
for field, entry in pairs(mine) do
  redis.call('HSET', KEYS[1], field, entry)
end
local all = redis.call('HGETALL', KEYS[1])
local counts = {}
for i = 1, #all, 2 do
  local ok, entry = pcall(cjson.decode, all[i + 1])
  if ok and type(entry) == 'table' and type(entry.connections) == 'number'
      and type(entry.user) == 'table' then
    local user = entry.user.id
    counts[user] = (counts[user] or 0) + entry.connections
  end
end
redis.call('DEL', KEYS[2])
for user, count in pairs(counts) do
  if count > 0 then redis.call('HSET', KEYS[2], user, count) end
end
for _, user in ipairs(redis.call('HKEYS', KEYS[3])) do
  if (counts[user] or 0) <= 0 then redis.call('HDEL', KEYS[3], user) end
end
for user, f in pairs(focus) do
  redis.call('HSET', KEYS[3], user, f)
end
return swept
";

/// Runs the rewrite for one project; whether it brought back swept users.
async fn rewrite_project(
    conn: &mut RedisLink,
    keys: [String; 3],
    suffix: &str,
    entries: &Value,
    focus: &Value,
) -> Result<bool, redis::RedisError> {
    redis::Script::new(SCRIPT)
        .key(&keys[0])
        .key(&keys[1])
        .key(&keys[2])
        .arg(suffix)
        .arg(entries.to_string())
        .arg(focus.to_string())
        .invoke_async::<i64>(conn)
        .await
        .map(|swept| swept == 1)
}
