//! `/healthz` (the process answers) and `/readyz` (its dependencies answer).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::HttpState;

/// Liveness: the process is up.
pub async fn live() -> &'static str {
    "ok"
}

/// Readiness: 200 while the database answers, 503 otherwise.
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
    let overall = if database == "up" {
        "ready"
    } else {
        "unavailable"
    };
    (
        status,
        Json(json!({ "status": overall, "database": database })),
    )
}
