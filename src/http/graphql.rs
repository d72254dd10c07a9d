//! The GraphQL endpoint over HTTP and the GraphiQL page.

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{Html, IntoResponse, Response};

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

/// `GET /graphql`: a WebSocket upgrade (subscriptions) or a query in the URL.
pub async fn handle_get(
    State(state): State<HttpState>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let wants_upgrade = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_upgrade {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => crate::realtime::ws::upgrade(ws, state),
            Err(rejection) => rejection.into_response(),
        };
    }
    let request = axum::extract::Request::from_parts(parts, body);
    let headers = request.headers().clone();
    match GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(
        request, &state,
    )
    .await
    {
        Ok(gql) => handle(State(state), headers, gql).await.into_response(),
        Err(rejection) => rejection.into_response(),
    }
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
