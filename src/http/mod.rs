//! The HTTP surface: routes, the GraphQL endpoint, GraphiQL and health checks.

mod graphql;
mod health;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use std::sync::Arc;

use crate::graphql::TaskNestSchema;
use crate::realtime::multiplex::Multiplexer;
use crate::state::AppState;

/// Router state: the app state and the schema built on it.
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: TaskNestSchema,
    /// Shared executions of identical live subscriptions.
    pub multiplexer: Arc<Multiplexer>,
}

/// All routes of the service.
pub fn router(app: AppState, schema: TaskNestSchema) -> Router {
    let body_limit = usize::try_from(app.config.max_body_bytes).unwrap_or(usize::MAX);
    let cors = cors(&app.config.cors_origins);
    let router = Router::new()
        .route("/", get(graphql::graphiql))
        .route(
            "/graphql",
            get(graphql::handle_get).post(graphql::handle_post),
        )
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        // A panic becomes a 500 with no details instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        .with_state(HttpState {
            app,
            schema,
            multiplexer: Arc::new(Multiplexer::default()),
        });
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for the configured origins only, with credentials; none configured, none allowed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([AUTHORIZATION, CONTENT_TYPE, ACCEPT])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
