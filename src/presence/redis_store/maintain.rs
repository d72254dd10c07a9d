//! Presence maintenance in Redis: each instance renews its own entries and leases, and
//! sweeps the (project, instance) pairs whose lease ran out.
//!
//! Why leases in one sorted set rather than every instance walking every project: the walk
//! costs each instance a round trip per project in the whole system on every tick, so it
//! grows with the system rather than with the instance's own rooms, and a slow walk delays
//! the walker's own heartbeat until others take it for dead. With the set, a tick is the
//! instance's own renewals plus one script that hands out the expired pairs, each to exactly
//! one sweeper.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use uuid::Uuid;

use super::{LEASES, RedisStore, SEP, StoredEntry, entries_key, focus_key, users_key};
use crate::presence::{PresenceEvent, PresenceEventKind};

/// Most expired pairs one sweeper takes per tick (the rest wait for the next tick, or for
/// another instance).
const SWEEP_BATCH: usize = 100;

/// KEYS: leases. ARGV: now (ms), claimed until (ms), this instance's id, most to take.
/// Returns the other instances' expired pairs, each claimed (its score moved to ARGV[2], so
/// no other sweeper takes it until then); this instance's own expired leases are dropped,
/// since the heartbeat just before renewed every one it still needs.
const CLAIM: &str = r"
local claimed = {}
local own = ARGV[3]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, member in ipairs(due) do
  if string.sub(member, -#own) == own then
    redis.call('ZREM', KEYS[1], member)
  else
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    table.insert(claimed, member)
  end
end
return claimed
";

/// KEYS: entries, users, focus. ARGV: the swept instance's field suffix, now (ms). Removes
/// that instance's expired entries and takes their connections off the users' counts;
/// returns how many of its entries are still live (it came back) and the removed entries
/// of users who are now gone everywhere.
const SWEEP: &str = r"
local suffix = ARGV[1]
local now = tonumber(ARGV[2])
local live = 0
local left = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field = all[i]
  if string.sub(field, -#suffix) == suffix then
    local ok, entry = pcall(cjson.decode, all[i + 1])
    if not ok or type(entry) ~= 'table' then entry = {} end
    if (tonumber(entry.expires_ms) or 0) >= now then
      live = live + 1
    else
      redis.call('HDEL', KEYS[1], field)
      if type(entry.user) == 'table' then
        local user = entry.user.id
        local count = redis.call('HINCRBY', KEYS[2], user, -(tonumber(entry.connections) or 0))
        if count <= 0 then
          redis.call('HDEL', KEYS[2], user)
          redis.call('HDEL', KEYS[3], user)
          table.insert(left, all[i + 1])
        end
      end
    end
  end
end
return {live, left}
";

/// KEYS: entries. ARGV: field, entry JSON, field, entry JSON, … Renews the fields that are
/// there and counts the ones that are not: an entry of a live connection is missing only
/// when Redis lost it (a restart that kept nothing) or a survivor swept it (this instance
/// was late and taken for dead), and either way the users' counts must be rebuilt too.
const RENEW: &str = r"
local missing = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    missing = missing + 1
  end
end
return missing
";

/// KEYS: leases. ARGV: member, the score it was claimed with. Drops the lease unless its
/// instance renewed it meanwhile.
const RELEASE: &str = r"
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
";

impl RedisStore {
    /// Renews this instance's entries (one script per project: a cluster runs a script in
    /// its keys' slot) and its leases (one command), all sent at once on the multiplexed
    /// link. True when Redis lacked some of them (see [`RENEW`]) and the caller must write
    /// everything back. A join or leave racing the tick can make that true once too; the
    /// rewrite is then merely redundant.
    pub(in crate::presence) async fn heartbeat(
        &self,
        mine: &[(Uuid, StoredEntry)],
    ) -> Result<bool, redis::RedisError> {
        let script = redis::Script::new(RENEW);
        let mut renewals: HashMap<Uuid, redis::ScriptInvocation<'_>> = HashMap::new();
        let mut leases: HashMap<Uuid, i64> = HashMap::new();
        for (project, entry) in mine {
            if let Ok(json) = serde_json::to_string(entry) {
                renewals
                    .entry(*project)
                    .or_insert_with(|| {
                        let mut invocation = script.prepare_invoke();
                        invocation.key(entries_key(*project));
                        invocation
                    })
                    .arg(self.field(&entry.user.id))
                    .arg(json);
                let lease = leases.entry(*project).or_default();
                *lease = (*lease).max(entry.expires_ms);
            }
        }
        if leases.is_empty() {
            return Ok(false);
        }
        let renew_leases = async {
            let members: Vec<(i64, String)> = leases
                .iter()
                .map(|(project, lease)| (*lease, self.lease_member(*project)))
                .collect();
            let mut conn = self.conn.clone();
            // ZADD answers how many members were new: a renewal adds none.
            conn.zadd_multiple::<_, _, _, usize>(LEASES, &members).await
        };
        let renew_entries = renewals.into_values().map(|invocation| {
            let mut conn = self.conn.clone();
            async move { invocation.invoke_async::<usize>(&mut conn).await }
        });
        let (added, missing) = tokio::try_join!(
            renew_leases,
            futures_util::future::try_join_all(renew_entries)
        )?;
        Ok(added > 0 || missing.iter().any(|m| *m > 0))
    }

    /// Sweeps the pairs whose lease ran out: the LEFT events of users whose last instance
    /// died.
    pub(in crate::presence) async fn sweep_expired(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<PresenceEvent>, redis::RedisError> {
        let now_ms = now.timestamp_millis();
        let claim_ms = self.lease(now).timestamp_millis();
        let claimed: Vec<String> = redis::Script::new(CLAIM)
            .key(LEASES)
            .arg(now_ms)
            .arg(claim_ms)
            .arg(self.instance.to_string())
            .arg(SWEEP_BATCH)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let sweeps = claimed.iter().filter_map(|member| {
            let (project, instance) = member.split_once(SEP)?;
            let project = Uuid::parse_str(project).ok()?;
            Some(self.sweep_pair(project, instance, member, now, claim_ms))
        });
        let mut left = Vec::new();
        for swept in futures_util::future::join_all(sweeps).await {
            match swept {
                Ok(mut gone) => left.append(&mut gone),
                Err(err) => tracing::warn!(error = %err, "presence sweep failed"),
            }
        }
        Ok(left)
    }

    /// Removes `instance`'s expired entries in `project`, then its lease unless it came
    /// back; a failure leaves the claim to run out, and another sweep to try again.
    async fn sweep_pair(
        &self,
        project: Uuid,
        instance: &str,
        member: &str,
        now: DateTime<Utc>,
        claim_ms: i64,
    ) -> Result<Vec<PresenceEvent>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let (live, left): (i64, Vec<String>) = redis::Script::new(SWEEP)
            .key(entries_key(project))
            .key(users_key(project))
            .key(focus_key(project))
            .arg(format!("{SEP}{instance}"))
            .arg(now.timestamp_millis())
            .invoke_async(&mut conn)
            .await?;
        if live == 0 {
            let () = redis::Script::new(RELEASE)
                .key(LEASES)
                .arg(member)
                .arg(claim_ms)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())?;
        }
        Ok(left
            .iter()
            .filter_map(|raw| serde_json::from_str::<StoredEntry>(raw).ok())
            .map(|entry| PresenceEvent {
                kind: PresenceEventKind::Left,
                project_id: project,
                user: entry.user,
                focus_task_id: None,
                at: now,
            })
            .collect())
    }
}
