//! The one application state, built once at start and shared by the router and the schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, ApiTokens, TokenError, UserDirectory, Verifier, Viewer};
use crate::config::Config;
use crate::error::AppError;
use crate::events::txn::EventLog;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::ratelimit::RateLimiter;
use crate::realtime::Realtime;
use crate::redis_link::RedisLink;
use crate::tasks::conflicts::ConflictNotices;
use crate::webhooks::Webhooks;

/// Everything a request may need. Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// Validated settings.
    pub config: Arc<Config>,
    /// The connection pool (SQLite: one connection; PostgreSQL: a pool).
    pub db: DatabaseConnection,
    /// Checks bearer tokens (the server's HS256 secret, an identity provider's key).
    pub verifier: Arc<Verifier>,
    /// Checks API token secrets and spreads their revocation.
    pub api_tokens: Arc<ApiTokens>,
    /// Creates and refreshes user rows from token claims, with a cache to skip no-op writes.
    pub users: Arc<UserDirectory>,
    /// Rooms and the bus.
    pub realtime: Realtime,
    /// The log's writer: transactions whose events are announced when they commit.
    pub events: EventLog,
    /// Conflict notices to the losers of optimistic writes, on every instance.
    pub conflicts: Arc<ConflictNotices>,
    /// Who is present where.
    pub presence: Arc<Presence>,
    /// Cancelled on shutdown: WebSockets close with 1001, background tasks stop.
    pub shutdown: CancellationToken,
    /// Per-user limits on mutations and operation starts.
    pub rate_limiter: Arc<RateLimiter>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The webhook deliverer (the service wakes it and reads its settings).
    pub webhooks: Arc<Webhooks>,
    /// The shared link to Redis or a Redis Cluster, when configured (presence, rate limits,
    /// persisted queries and the bus's publisher use it).
    pub redis: Option<RedisLink>,
    /// Counters about database use (statements run), for metrics and for tests that pin
    /// the number of statements a query costs.
    pub db_stats: Arc<DbStats>,
}

impl AppState {
    /// The state from a resolver's context (the schema is always built with it).
    pub fn from_ctx<'a>(ctx: &async_graphql::Context<'a>) -> Result<&'a Self, AppError> {
        ctx.data::<Self>()
            .map_err(|_| AppError::Internal(anyhow::anyhow!("AppState missing from the schema")))
    }

    /// The viewer a bearer token names, whatever its kind: an API token secret (`tn_…`) is
    /// looked up, anything else is verified as a JWT. Every transport authenticates here.
    pub async fn authenticate(&self, token: &str) -> Result<Viewer, TokenError> {
        if auth::tokens::looks_like(token) {
            self.api_tokens.verify(&self.db, token).await
        } else {
            self.verifier.verify(token).await
        }
    }
}

/// Counters of the database work done: statements (fed by the connection's metric
/// callback) and log transactions (each costs two more round trips, `BEGIN` and `COMMIT`).
#[derive(Debug, Default)]
pub struct DbStats {
    statements: AtomicU64,
    transactions: AtomicU64,
}

impl DbStats {
    /// Called once per SQL statement.
    pub fn record_statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Statements run since start.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Called once per transaction begun by the event log.
    pub fn record_transaction(&self) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Round trips to the database since start: every statement, and `BEGIN` and the
    /// `COMMIT` or `ROLLBACK` of every log transaction.
    pub fn round_trips(&self) -> u64 {
        self.statements() + 2 * self.transactions.load(Ordering::Relaxed)
    }
}
