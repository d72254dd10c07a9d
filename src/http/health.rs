//! `/healthz` (the process answers) and `/readyz` (its dependencies answer).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::HttpState;
use crate::realtime::BusStatus;

/// Liveness: the process is up.
pub async fn live() -> &'static str {
    "ok"
}

/// Readiness: 200 while the database answers, 503 otherwise. Redis and an identity
/// provider's key set are reported on their own: when Redis is down real-time delivery
/// across instances is degraded to the periodic log check; when the key set cannot be
/// fetched the provider's tokens are refused (`jwks` says why).
pub async fn ready(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let database = match state.app.db.ping().await {
        Ok(()) => "up",
        Err(err) => {
            tracing::warn!(error = %err, "database ping failed");
            "down"
        }
    };
    let status = if database == "up" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let redis = state.app.realtime.bus.status();
    // Provider tokens fail while the key set is away; the server's own tokens still work.
    let identity = state.app.verifier.problem();
    let overall = match (database, redis, &identity) {
        ("up", BusStatus::Down, _) | ("up", _, Some(_)) => "degraded",
        ("up", _, None) => "ready",
        _ => "unavailable",
    };
    let mut body = json!({ "status": overall, "database": database, "redis": redis.as_str() });
    if state.app.verifier.uses_jwks() {
        body["jwks"] = json!(identity.unwrap_or_else(|| "up".to_owned()));
    }
    (status, Json(body))
}

/// Prometheus metrics (OpenMetrics text). Status gauges are read at scrape time.
pub async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let app = &state.app;
    let database_up = app.db.ping().await.is_ok();
    app.metrics.database_up.set(i64::from(database_up));
    match app.realtime.bus.status() {
        BusStatus::InProcess => {}
        status => {
            app.metrics.redis_up.set(i64::from(status == BusStatus::Up));
        }
    }
    let (size, idle) = pool_usage(&app.db);
    app.metrics.db_pool_connections.set(size);
    app.metrics.db_pool_idle.set(idle);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Open and idle connections of the pool.
fn pool_usage(db: &sea_orm::DatabaseConnection) -> (i64, i64) {
    match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (i64::from(pool.size()), pool.num_idle() as i64)
        }
        sea_orm::DatabaseBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (i64::from(pool.size()), pool.num_idle() as i64)
        }
        _ => (0, 0),
    }
}
