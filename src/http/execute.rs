//! Running one GraphQL operation over HTTP: authentication, the per-user rate limit on
//! mutations, request errors async-graphql reports late, the span, and the metrics.

use async_graphql::Request;
use async_graphql::parser::types::OperationType;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use tracing::Instrument;

use super::HttpState;
use crate::auth::{self, Authentication};
use crate::error::{AppError, with_error_codes};
use crate::graphql::{document, prepare_request};
use crate::metrics::{OperationLabels, OperationName};

/// What running one operation came to.
pub(super) enum Ran {
    /// Executed; `request_failed` when it failed before execution (parse, validation).
    Done {
        response: async_graphql::Response,
        request_failed: bool,
    },
    /// A mutation over the user's rate limit, not run.
    Limited(AppError),
}

/// Authenticates, applies the rate limit to mutations, executes in a span, and counts and
/// times the operation.
pub(super) async fn run(
    state: &HttpState,
    authentication: Authentication,
    mut request: Request,
) -> Ran {
    let started = std::time::Instant::now();
    let analysis = document::analyze(&mut request);
    let (kind, name) = analysis.map(|a| (a.kind, a.name)).unzip();
    let operation = state.app.metrics.operation_label(name.flatten().as_deref());
    let (user, rate_key) = match &authentication {
        Authentication::Viewer(viewer) => (viewer.user_id.clone(), viewer.rate_key().into_owned()),
        _ => (String::new(), String::new()),
    };
    let is_mutation = kind == Some(OperationType::Mutation);
    if is_mutation
        && !rate_key.is_empty()
        && let Err(limited) = state.app.rate_limiter.check(&rate_key).await
    {
        return Ran::Limited(limited);
    }
    let span = tracing::info_span!("graphql", operation = %operation, user = %user);
    let mut response = match document::missing_variable(&mut request) {
        Some(error) => async_graphql::Response::from_errors(vec![error]),
        None => {
            let request = prepare_request(request, &state.app, authentication);
            state.schema.execute(request).instrument(span.clone()).await
        }
    };
    with_error_codes(&mut response.errors);
    let request_failed = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let outcome = match (request_failed, response.errors.is_empty()) {
        (true, _) => "rejected",
        (false, true) => "ok",
        (false, false) => "error",
    };
    let metrics = &state.app.metrics;
    metrics
        .graphql_operations
        .get_or_create(&OperationLabels {
            operation: operation.clone(),
            outcome,
        })
        .inc();
    let elapsed = started.elapsed();
    span.in_scope(|| {
        tracing::info!(
            outcome,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "operation"
        );
    });
    metrics
        .graphql_duration
        .get_or_create(&OperationName { operation })
        .observe(elapsed.as_secs_f64());
    Ran::Done {
        response,
        request_failed,
    }
}

/// Reads and checks the bearer token, and keeps the user row in step with its claims.
pub(super) async fn authenticate(state: &HttpState, headers: &HeaderMap) -> Authentication {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Authentication::Anonymous;
    };
    let Some(token) = value.to_str().ok().and_then(auth::bearer_token) else {
        return Authentication::Invalid(auth::TokenError::Malformed);
    };
    match state.app.authenticate(token).await {
        Ok(viewer) => {
            if let Err(err) = state.app.users.ensure(&state.app.db, &viewer).await {
                // The request still runs; resolvers that need the row will fail on their own.
                tracing::error!(error = %err, user = %viewer.user_id, "cannot refresh user row");
            }
            Authentication::Viewer(viewer)
        }
        Err(err) => Authentication::Invalid(err),
    }
}
