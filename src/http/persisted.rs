//! Automatic persisted queries as Apollo Client and urql send them: first only the query's
//! SHA-256 (`extensions.persistedQuery.sha256Hash`); on `PersistedQueryNotFound` the full
//! query with its hash, which is checked and remembered. The cache is shared through Redis
//! when configured (with a local copy, which also serves while Redis is away).

use std::collections::HashMap;
use std::sync::Mutex;

use redis::AsyncCommands;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::redis_link::RedisLink;

/// How long Redis keeps a persisted query.
const TTL_SECONDS: u64 = 7 * 24 * 3600;
/// Queries kept locally before the local copy is cleared.
const LOCAL_LIMIT: usize = 10_000;

/// Why a persisted query could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum PersistedError {
    /// The hash is unknown: the client should send the full query (the message clients
    /// look for).
    NotFound,
    /// The query does not hash to the given hash.
    HashMismatch,
    /// The extension is malformed or of another version.
    Invalid,
}

impl PersistedError {
    /// The message sent to the client.
    pub fn message(&self) -> &'static str {
        match self {
            Self::NotFound => "PersistedQueryNotFound",
            Self::HashMismatch => "provided sha does not match query",
            Self::Invalid => "persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<hex>\"}",
        }
    }
}

/// The persisted query cache.
pub struct PersistedQueries {
    redis: Option<RedisLink>,
    local: Mutex<HashMap<String, String>>,
}

impl PersistedQueries {
    /// A cache, shared through `redis` when given.
    pub fn new(redis: Option<RedisLink>) -> Self {
        Self {
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// The query to run: `query` itself when the request has no persisted-query extension,
    /// otherwise the cached or newly registered query of its hash.
    pub async fn resolve(
        &self,
        query: Option<String>,
        extensions: Option<&Value>,
    ) -> Result<Option<String>, PersistedError> {
        let Some(persisted) = extensions.and_then(|e| e.get("persistedQuery")) else {
            return Ok(query);
        };
        let version = persisted.get("version").and_then(Value::as_i64);
        let hash = persisted
            .get("sha256Hash")
            .and_then(Value::as_str)
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_ascii_lowercase);
        let (Some(1), Some(hash)) = (version, hash) else {
            return Err(PersistedError::Invalid);
        };
        match query.filter(|q| !q.is_empty()) {
            Some(query) => {
                let actual: String = Sha256::digest(query.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if actual != hash {
                    return Err(PersistedError::HashMismatch);
                }
                self.remember(&hash, &query).await;
                Ok(Some(query))
            }
            None => self
                .lookup(&hash)
                .await
                .map(Some)
                .ok_or(PersistedError::NotFound),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn remember(&self, hash: &str, query: &str) {
        {
            let mut local = self.local();
            if local.len() >= LOCAL_LIMIT {
                local.clear();
            }
            local.insert(hash.to_owned(), query.to_owned());
        }
        if let Some(conn) = &self.redis {
            let mut conn = conn.clone();
            if let Err(err) = conn.set_ex::<_, _, ()>(key(hash), query, TTL_SECONDS).await {
                tracing::debug!(error = %err, "persisted query not shared (Redis away)");
            }
        }
    }

    async fn lookup(&self, hash: &str) -> Option<String> {
        if let Some(query) = self.local().get(hash).cloned() {
            return Some(query);
        }
        let mut conn = self.redis.clone()?;
        // Redis away reads as a miss (the client then sends the full query, which is kept
        // locally), but the cause is logged rather than hidden.
        let query: Option<String> = match conn.get(key(hash)).await {
            Ok(query) => query,
            Err(err) => {
                tracing::warn!(error = %err, "persisted query lookup failed; answering as a miss");
                None
            }
        };
        if let Some(query) = &query {
            self.local().insert(hash.to_owned(), query.clone());
        }
        query
    }
}

fn key(hash: &str) -> String {
    format!("tasknest:apq:{hash}")
}

impl From<PersistedError> for crate::error::AppError {
    fn from(err: PersistedError) -> Self {
        match err {
            PersistedError::NotFound => Self::PersistedQueryNotFound,
            other => Self::BadRequest(other.message().to_owned()),
        }
    }
}
