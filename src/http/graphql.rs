//! The GraphQL endpoint over HTTP and the GraphiQL page.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{Html, IntoResponse};

use super::HttpState;
use crate::auth::{self, Authentication};
use crate::error::with_error_codes;
use crate::graphql::prepare_request;

/// GraphiQL, pointed at `/graphql`.
pub async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql")
            .title("TaskNest")
            .finish(),
    )
}

/// Runs one GraphQL request as the token's viewer (or as nobody).
pub async fn handle(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let authentication = authenticate(&state, &headers).await;
    let request = prepare_request(request.into_inner(), &state.app, authentication);
    let mut response = state.schema.execute(request).await;
    with_error_codes(&mut response.errors);
    response.into()
}

/// Reads and checks the bearer token, and keeps the user row in step with its claims.
async fn authenticate(state: &HttpState, headers: &HeaderMap) -> Authentication {
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
