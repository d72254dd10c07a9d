//! Shared presence that survives a Redis outage: the memory store holds this instance's own
//! connections (the one copy of the local state), the Redis store the registry all
//! instances share. Every change goes to memory first, then to Redis. While Redis is away
//! (a call failed), joins, leaves and focus keep working on memory alone and `presence`
//! lists this instance's users; the maintenance tick probes Redis and, once it answers,
//! writes the local state back and recounts, so the shared registry is right again without
//! anyone reconnecting.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::memory::MemoryStore;
use super::redis_store::{RedisStore, StoredEntry};
use super::{PresenceEntry, PresenceStore, Upkeep, not_present};
use crate::error::AppError;
use crate::events::UserSnapshot;

/// Redis-shared presence with this instance's memory as the fallback.
pub struct FallbackStore {
    shared: RedisStore,
    local: MemoryStore,
    /// Redis failed and the shared registry has not been rewritten since.
    degraded: AtomicBool,
    /// Joins and leaves hold it shared; the rewrite after an outage holds it alone.
    gate: tokio::sync::RwLock<()>,
    /// Projects whose entries changed while degraded (a user that left entirely is no
    /// longer in memory, but its entry in Redis must still go).
    touched: Mutex<HashSet<Uuid>>,
}

impl FallbackStore {
    /// Presence shared through `shared`.
    pub fn new(shared: RedisStore) -> Self {
        Self {
            shared,
            local: MemoryStore::default(),
            degraded: AtomicBool::new(false),
            gate: tokio::sync::RwLock::new(()),
            touched: Mutex::new(HashSet::new()),
        }
    }

    fn is_degraded(&self) -> bool {
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

    /// This instance's entries as Redis stores them.
    fn mine(&self, now: DateTime<Utc>) -> Vec<(Uuid, StoredEntry)> {
        self.local
            .entries()
            .iter()
            .map(|(project, entry)| (*project, self.shared.stored(entry, now)))
            .collect()
    }

    /// Writes the local state back into Redis and recounts; holds the gate, so no join or
    /// leave interleaves with it. Returns the projects where swept users came back.
    async fn resync(&self) -> Result<Vec<Uuid>, redis::RedisError> {
        let _gate = self.gate.write().await;
        let mine = self.mine(Utc::now());
        let mut projects = self
            .touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        projects.extend(mine.iter().map(|(project, _)| *project));
        let written_back = self.shared.rewrite(&mine, &projects).await?;
        self.touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.degraded.store(false, Ordering::Release);
        tracing::info!("presence: Redis is back, shared registry rewritten");
        Ok(written_back)
    }
}

#[async_trait::async_trait]
impl PresenceStore for FallbackStore {
    async fn connect(
        &self,
        project: Uuid,
        user: &UserSnapshot,
        now: DateTime<Utc>,
    ) -> Result<bool, AppError> {
        let _gate = self.gate.read().await;
        let first_here = self.local.connect(project, user, now).await?;
        if self.is_degraded() {
            self.touch(project);
            return Ok(first_here);
        }
        let Some(entry) = self.local.entry(project, &user.id) else {
            return Ok(first_here);
        };
        let stored = self.shared.stored(&entry, now);
        match self.shared.shared_connect(project, &user.id, &stored).await {
            Ok(first) => Ok(first),
            Err(err) => {
                self.degrade(project, &err);
                Ok(first_here)
            }
        }
    }

    async fn disconnect(&self, project: Uuid, user_id: &str) -> Result<bool, AppError> {
        let _gate = self.gate.read().await;
        if self.local.entry(project, user_id).is_none() {
            return Ok(false);
        }
        let last_here = self.local.disconnect(project, user_id).await?;
        if self.is_degraded() {
            self.touch(project);
            return Ok(last_here);
        }
        let remaining = self
            .local
            .entry(project, user_id)
            .map(|entry| self.shared.stored(&entry, Utc::now()));
        match self
            .shared
            .shared_disconnect(project, user_id, remaining.as_ref())
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
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let _gate = self.gate.read().await;
        let present_here = self.local.set_focus(project, user_id, task, now);
        // Present on another instance counts too, which only Redis knows.
        let present = if self.is_degraded() {
            present_here
        } else {
            match self.shared.shared_focus(project, user_id, task).await {
                Ok(present) => present,
                Err(err) => {
                    self.degrade(project, &err);
                    present_here
                }
            }
        };
        if present { Ok(()) } else { Err(not_present()) }
    }

    async fn list(&self, project: Uuid) -> Result<Vec<PresenceEntry>, AppError> {
        if !self.is_degraded() {
            match self.shared.shared_list(project).await {
                Ok(list) => return Ok(list),
                Err(err) => self.degrade(project, &err),
            }
        }
        self.local.list(project).await
    }

    fn lists_everyone(&self) -> bool {
        !self.is_degraded()
    }

    async fn maintain(&self, now: DateTime<Utc>) -> Upkeep {
        let mut upkeep = Upkeep::default();
        if self.is_degraded() {
            match self.resync().await {
                Ok(written_back) => upkeep.written_back = written_back,
                Err(err) => {
                    tracing::debug!(error = %err, "presence: Redis still unavailable");
                    return upkeep;
                }
            }
        }
        self.local.maintain(now).await;
        let mine = self.mine(now);
        match self.shared.heartbeat(&mine).await {
            Ok(false) => {}
            // Redis lacked some of this instance's entries or leases: it restarted empty
            // between two ticks (and keeps nothing on disk), or a survivor swept this instance
            // while it was only late. Write everything back rather than wait for a failed call.
            Ok(true) => {
                for (project, _) in &mine {
                    self.touch(*project);
                }
                match self.resync().await {
                    Ok(written_back) => upkeep.written_back.extend(written_back),
                    Err(err) => {
                        self.degraded.store(true, Ordering::Release);
                        tracing::warn!(error = %err, "presence resync failed");
                        return upkeep;
                    }
                }
            }
            Err(err) => {
                let err = AppError::Internal(anyhow::anyhow!("presence heartbeat: {err}"));
                for (project, _) in &mine {
                    self.degrade(*project, &err);
                }
                return upkeep;
            }
        }
        match self.shared.sweep_expired(now).await {
            Ok(left) => upkeep.left = left,
            Err(err) => tracing::warn!(error = %err, "presence sweep failed"),
        }
        upkeep
    }
}
