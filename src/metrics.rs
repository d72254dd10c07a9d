//! Prometheus metrics, in a registry owned by the application state (no global recorder, so
//! several instances in one process, as in the tests, keep separate counts).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of HTTP requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub path: String,
    pub status: u16,
}

/// Labels of GraphQL operations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
    pub outcome: &'static str,
}

/// Labels of operation latencies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationName {
    pub operation: String,
}

/// Labels of webhook deliveries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Labels of per-webhook series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Finer buckets (from 0.1 ms) for single round trips to the database or Redis, whose
/// common case is well under a millisecond.
fn round_trip() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Most distinct operation names kept as labels; later ones count as `other`.
const MAX_OPERATION_NAMES: usize = 200;

/// Every metric TaskNest exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub graphql_operations: Family<OperationLabels, Counter>,
    pub graphql_duration: Family<OperationName, Histogram, fn() -> Histogram>,
    pub document_cache_hits: Counter,
    pub document_cache_misses: Counter,
    pub ws_connections: Gauge,
    pub subscriptions: Gauge,
    pub shared_executions: Gauge,
    pub events_published: Counter,
    pub events_delivered: Counter,
    pub bus_events_received: Counter,
    pub commit_to_delivery: Histogram,
    pub gap_repairs: Counter,
    pub subscribers_behind: Counter,
    pub redis_up: Gauge,
    pub database_up: Gauge,
    pub db_statements: Counter<u64, AtomicU64>,
    pub db_statement_duration: Histogram,
    pub rate_limit_duration: Histogram,
    pub db_pool_connections: Gauge,
    pub db_pool_idle: Gauge,
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    pub webhook_attempt_duration: Histogram,
    pub webhook_lag: Family<WebhookLabels, Gauge>,
    names: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tasknest");
        let metrics = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency as fn() -> Histogram),
            graphql_operations: Family::default(),
            graphql_duration: Family::new_with_constructor(latency as fn() -> Histogram),
            document_cache_hits: Counter::default(),
            document_cache_misses: Counter::default(),
            ws_connections: Gauge::default(),
            subscriptions: Gauge::default(),
            shared_executions: Gauge::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            bus_events_received: Counter::default(),
            commit_to_delivery: latency(),
            gap_repairs: Counter::default(),
            subscribers_behind: Counter::default(),
            redis_up: Gauge::default(),
            database_up: Gauge::default(),
            db_statements: Counter::default(),
            db_statement_duration: round_trip(),
            rate_limit_duration: round_trip(),
            db_pool_connections: Gauge::default(),
            db_pool_idle: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_attempt_duration: latency(),
            webhook_lag: Family::default(),
            names: Mutex::new(HashSet::new()),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            metrics.http_duration.clone(),
        );
        registry.register(
            "graphql_operations",
            "GraphQL operations by name and outcome",
            metrics.graphql_operations.clone(),
        );
        registry.register(
            "graphql_operation_duration_seconds",
            "GraphQL operation latency over HTTP",
            metrics.graphql_duration.clone(),
        );
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            metrics.ws_connections.clone(),
        );
        registry.register(
            "active_subscriptions",
            "Running subscription operations (graphql-ws, SSE, multipart)",
            metrics.subscriptions.clone(),
        );
        registry.register(
            "shared_executions",
            "Running shared executions, each serving every identical live subscription",
            metrics.shared_executions.clone(),
        );
        registry.register(
            "events_published",
            "Events committed and published by this instance",
            metrics.events_published.clone(),
        );
        registry.register(
            "events_delivered",
            "Event deliveries to this instance's subscribers",
            metrics.events_delivered.clone(),
        );
        registry.register(
            "bus_events_received",
            "Events received from other instances over the bus (only projects with a room here)",
            metrics.bus_events_received.clone(),
        );
        registry.register(
            "event_commit_to_delivery_seconds",
            "Time from an event's commit to its room on this instance",
            metrics.commit_to_delivery.clone(),
        );
        registry.register(
            "gap_repairs",
            "Events fetched from the log to fill gaps the bus left",
            metrics.gap_repairs.clone(),
        );
        registry.register(
            "graphql_document_cache_hits",
            "GraphQL documents served already parsed (their text was seen before)",
            metrics.document_cache_hits.clone(),
        );
        registry.register(
            "graphql_document_cache_misses",
            "GraphQL documents parsed and kept for their next use",
            metrics.document_cache_misses.clone(),
        );
        registry.register(
            "subscribers_behind",
            "Shared subscribers that went on with an execution of their own (they fell behind, or their group ended first)",
            metrics.subscribers_behind.clone(),
        );
        registry.register(
            "redis_up",
            "1 when the Redis bus is connected (absent: a single instance without Redis)",
            metrics.redis_up.clone(),
        );
        registry.register(
            "database_up",
            "1 when the database answers",
            metrics.database_up.clone(),
        );
        registry.register(
            "db_statements",
            "SQL statements run",
            metrics.db_statements.clone(),
        );
        registry.register(
            "db_statement_duration_seconds",
            "Time a SQL statement takes on its connection, from sending it to its last row (the wait for a pooled connection is not included)",
            metrics.db_statement_duration.clone(),
        );
        registry.register(
            "rate_limit_check_duration_seconds",
            "Time a rate-limit check takes (a round trip to Redis when configured)",
            metrics.rate_limit_duration.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections",
            metrics.db_pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle",
            "Idle database connections",
            metrics.db_pool_idle.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed, gone)",
            metrics.webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_attempt_duration_seconds",
            "Time of one webhook delivery attempt",
            metrics.webhook_attempt_duration.clone(),
        );
        registry.register(
            "webhook_lag_events",
            "Events a webhook is behind its project's head, after its last delivery",
            metrics.webhook_lag.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts and times one SQL statement. Timed before counted, so that a scrape never
    /// shows more statements than timings.
    pub fn statement_ran(&self, elapsed: std::time::Duration) {
        self.db_statement_duration.observe(elapsed.as_secs_f64());
        self.db_statements.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// An operation name fit to be a label: client-chosen names are capped in number and
    /// shape so that they cannot blow up the series count.
    pub fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name else {
            return "anonymous".to_owned();
        };
        let well_formed =
            name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return "other".to_owned();
        }
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(name) || names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_owned());
            name.to_owned()
        } else {
            "other".to_owned()
        }
    }
}
