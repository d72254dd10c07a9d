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
use crate::graphql::prepare_request;
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
    let (kind, name) = operation_of(&mut request).unzip();
    let operation = state.app.metrics.operation_label(name.flatten().as_deref());
    let user = match &authentication {
        Authentication::Viewer(viewer) => viewer.user_id.clone(),
        _ => String::new(),
    };
    let is_mutation = kind == Some(OperationType::Mutation);
    if is_mutation
        && !user.is_empty()
        && let Err(limited) = state.app.rate_limiter.check(&user).await
    {
        return Ran::Limited(limited);
    }
    let span = tracing::info_span!("graphql", operation = %operation, user = %user);
    let mut response = match missing_variable(&mut request) {
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

/// The type and name of the operation a request would run, when its document parses. The
/// parse is kept in the request, so execution does not parse the query again.
pub(super) fn operation_of(request: &mut Request) -> Option<(OperationType, Option<String>)> {
    let given = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    let (name, operation) = selected_operation(document, given.as_deref())?;
    Some((operation.node.ty, name.or(given)))
}

/// The operation a document runs under `name`, with its name when the document names it.
fn selected_operation<'a>(
    document: &'a async_graphql::parser::types::ExecutableDocument,
    name: Option<&str>,
) -> Option<(
    Option<String>,
    &'a async_graphql::Positioned<async_graphql::parser::types::OperationDefinition>,
)> {
    use async_graphql::parser::types::DocumentOperations;
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some((None, op)),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get(&async_graphql::Name::new(name))
            .map(|op| (Some(name.to_owned()), op)),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops
            .iter()
            .next()
            .map(|(name, op)| (Some(name.to_string()), op)),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// A required variable (non-null, no default) the request does not provide. async-graphql
/// notices it only while resolving a field, which would make a request error look like a
/// field error (a 200); the GraphQL-over-HTTP specification makes it a 400.
fn missing_variable(request: &mut Request) -> Option<async_graphql::ServerError> {
    let given = request.operation_name.clone();
    let provided: std::collections::HashSet<String> =
        request.variables.keys().map(ToString::to_string).collect();
    let document = request.parsed_query().ok()?;
    let (_, operation) = selected_operation(document, given.as_deref())?;
    operation.node.variable_definitions.iter().find_map(|def| {
        let var = &def.node;
        let required = !var.var_type.node.nullable && var.default_value.is_none();
        (required && !provided.contains(var.name.node.as_str())).then(|| {
            async_graphql::ServerError::new(
                format!(
                    "Variable \"${}\" of required type \"{}\" was not provided.",
                    var.name.node, var.var_type.node
                ),
                Some(def.pos),
            )
        })
    })
}

/// Reads and checks the bearer token, and keeps the user row in step with its claims.
pub(super) async fn authenticate(state: &HttpState, headers: &HeaderMap) -> Authentication {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Authentication::Anonymous;
    };
    let Some(token) = value.to_str().ok().and_then(auth::bearer_token) else {
        return Authentication::Invalid(auth::TokenError::Malformed);
    };
    match state.app.keys.verify(token) {
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
