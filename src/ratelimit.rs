//! Per-user rate limiting of mutations and operation starts: a token bucket per user, kept
//! in Redis when configured (so all instances share it), in memory otherwise, and in memory
//! too while Redis is unreachable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use crate::error::AppError;
use crate::redis_link::RedisLink;

/// Bucket parameters.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tokens a user may spend at once.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

/// Token buckets per user.
pub struct RateLimiter {
    limits: Limits,
    redis: Option<RedisLink>,
    local: Mutex<HashMap<String, Bucket>>,
    timed: Histogram,
    /// The script, hashed once (invoking sends its SHA and falls back to the source).
    script: redis::Script,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Atomically refills and takes one token; returns {allowed, retry_after_ms}.
const TAKE: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) / 1000.0 * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
"#;

impl RateLimiter {
    /// A limiter; with `redis`, buckets are shared by every instance. Each check's time goes
    /// to `timed`, since on Redis it is a round trip every mutation waits for.
    pub fn new(limits: Limits, redis: Option<RedisLink>, timed: Histogram) -> Self {
        Self {
            limits,
            redis,
            local: Mutex::new(HashMap::new()),
            timed,
            script: redis::Script::new(TAKE),
        }
    }

    /// Takes a token for `user_id`, or says how long to wait (`RATE_LIMITED`).
    pub async fn check(&self, user_id: &str) -> Result<(), AppError> {
        let started = Instant::now();
        let result = self.take(user_id).await;
        self.timed.observe(started.elapsed().as_secs_f64());
        result
    }

    async fn take(&self, user_id: &str) -> Result<(), AppError> {
        if let Some(conn) = &self.redis {
            let mut conn = conn.clone();
            let now_ms = chrono::Utc::now().timestamp_millis();
            let result: Result<(i64, i64), _> = self
                .script
                // A hash tag: the bucket is one key, in its own slot on a cluster.
                .key(format!("tasknest:ratelimit:{{{user_id}}}"))
                .arg(self.limits.burst)
                .arg(self.limits.per_second)
                .arg(now_ms)
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok((1, _)) => return Ok(()),
                Ok((_, wait)) => return Err(limited(wait.max(1) as u64)),
                Err(err) => {
                    tracing::debug!(error = %err, "rate limit store unreachable; limiting locally");
                }
            }
        }
        self.check_local(user_id)
    }

    fn check_local(&self, user_id: &str) -> Result<(), AppError> {
        let now = Instant::now();
        let mut buckets = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forgetting a full bucket only lets a user start fresh.
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let burst = f64::from(self.limits.burst);
        let bucket = buckets.entry(user_id.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.limits.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / self.limits.per_second * 1000.0).ceil() as u64;
            Err(limited(wait.max(1)))
        }
    }
}

fn limited(retry_after_ms: u64) -> AppError {
    AppError::RateLimited { retry_after_ms }
}
