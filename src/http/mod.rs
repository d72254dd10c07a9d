//! The transport layer: every wire protocol (GraphQL over HTTP, graphql-ws) and the shared
//! GraphQL runtime they run on (persisted queries, shared executions), plus GraphiQL and
//! health checks. Transports consume the slices and `realtime`; nothing below imports them.

mod decode;
pub mod deliveries;
mod execute;
mod graphql;
mod health;
mod multipart;
pub mod multiplex;
pub mod payload;
pub mod persisted;
mod playground;
mod sse;
mod sse_single;
mod streaming;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// The header carrying a request's id.
const REQUEST_ID: &str = "x-request-id";
use tower_http::trace::TraceLayer;

use std::sync::Arc;

use crate::graphql::TaskNestSchema;
use crate::graphql::parsed::ParsedDocuments;
use crate::state::AppState;
use multiplex::Multiplexer;
use persisted::PersistedQueries;
use ws::WsSettings;
use ws::connections::UserConnections;

/// Router state: the app state and the schema built on it.
#[derive(Clone)]
pub struct HttpState {
    pub app: AppState,
    pub schema: TaskNestSchema,
    /// Shared executions of identical live subscriptions.
    pub multiplexer: Arc<Multiplexer>,
    /// Automatic persisted queries.
    pub persisted: Arc<PersistedQueries>,
    /// Documents parsed before, by their text.
    pub documents: Arc<ParsedDocuments>,
    /// WebSocket timing.
    pub ws: WsSettings,
    /// Open WebSocket connections per user (limited by `max_connections_per_user`).
    pub ws_users: Arc<UserConnections>,
    /// Reserved `graphql-sse` streams (single connection mode) of this instance.
    pub sse_streams: Arc<sse_single::Reservations>,
}

/// All routes of the service.
pub fn router(app: AppState, schema: TaskNestSchema) -> anyhow::Result<Router> {
    let persisted = Arc::new(PersistedQueries::new(app.redis.clone()));
    let documents = Arc::new(ParsedDocuments::new(
        app.metrics.document_cache_hits.clone(),
        app.metrics.document_cache_misses.clone(),
    ));
    let body_limit = usize::try_from(app.config.max_body_bytes).unwrap_or(usize::MAX);
    let cors = cors(&app.config.cors_origins);
    let ws = WsSettings {
        init_timeout: app.config.ws_init_timeout,
        keepalive: app.config.ws_keepalive,
    };
    let router = Router::new()
        .route("/", get(playground::page))
        .route("/playground/{version}/{file}", get(playground::asset))
        .route(
            "/graphql",
            get(graphql::handle_get)
                .post(graphql::handle_post)
                .put(sse_single::reserve)
                .delete(sse_single::stop),
        )
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .layer(middleware::from_fn_with_state(app.clone(), track_requests))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        // Outermost: every request gets an id (or keeps the caller's), echoed in the answer.
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            REQUEST_ID,
        )))
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static(REQUEST_ID),
            MakeRequestUuid,
        ))
        // A panic becomes a 500 with no details instead of a dropped connection.
        .layer(CatchPanicLayer::new())
        .with_state(HttpState {
            app,
            schema,
            multiplexer: Arc::new(Multiplexer::default()),
            persisted,
            documents,
            ws,
            ws_users: Arc::default(),
            sse_streams: Arc::default(),
        });
    Ok(match cors {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

/// Counts and times every request by route and status.
async fn track_requests(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = crate::metrics::HttpLabels {
        method,
        path,
        status: response.status().as_u16(),
    };
    app.metrics.http_requests.get_or_create(&labels).inc();
    app.metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
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
            // PUT and DELETE, the token and Last-Event-ID: graphql-sse's single connection
            // mode and stream resumption.
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                ACCEPT,
                HeaderName::from_static(sse_single::TOKEN_HEADER),
                HeaderName::from_static("last-event-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Raises this process's open-file limit from its soft value to the hard one, so that a
/// server started from a shell with the usual soft limit of 1,024 can still hold thousands
/// of connections (each is a file descriptor); returns the limit now in force. Accepting
/// past the limit fails with EMFILE, which axum retries after a pause while every new
/// client waits.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // No hard maximum ("unlimited") cannot be the soft value for files; leave it be.
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        limit.current = Some(maximum);
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %err, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}
