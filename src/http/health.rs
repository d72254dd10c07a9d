//! `/healthz` (the process answers) and `/readyz` (its dependencies answer).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::HttpState;
use crate::realtime::BusStatus;

/// Liveness: the process is up.
pub async fn live() -> &'static str {
    "ok"
}

/// Readiness: 200 while the database answers, 503 otherwise. Redis is reported on its own:
/// when it is down the service still answers but real-time delivery across instances is
/// degraded to the periodic log check.
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
    let overall = match (database, redis) {
        ("up", BusStatus::Down) => "degraded",
        ("up", _) => "ready",
        _ => "unavailable",
    };
    (
        status,
        Json(json!({ "status": overall, "database": database, "redis": redis.as_str() })),
    )
}
