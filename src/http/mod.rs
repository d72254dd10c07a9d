//! The HTTP surface: routes, the GraphQL endpoint, GraphiQL and health checks.

mod graphql;
mod health;

use axum::Router;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
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
    Router::new()
        .route("/", get(graphql::graphiql))
        .route(
            "/graphql",
            get(graphql::handle_get).post(graphql::handle_post),
        )
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .layer(TraceLayer::new_for_http())
        // A panic becomes a 500 with no details instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        .with_state(HttpState {
            app,
            schema,
            multiplexer: Arc::new(Multiplexer::default()),
        })
}
