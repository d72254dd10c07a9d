//! The GraphQL endpoint over HTTP, as the GraphQL-over-HTTP specification asks: the
//! response media type by `Accept`, 400 for requests that cannot run, 405 for a mutation
//! over GET, 415 for a body that is not JSON, batches only when turned on; event streams
//! (SSE, multipart) for clients that ask for them.

use async_graphql::Request;
use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{ACCEPT, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::HttpState;
use super::decode;
use super::execute::{Ran, authenticate, run};
use crate::error::{AppError, errors_body};
use crate::graphql::document;

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
        return match super::ws::Upgrade::check(&mut parts, &super::ws::PROTOCOLS) {
            Ok(ws) => {
                let request_id = parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                super::ws::upgrade(ws, state, request_id)
            }
            Err(rejection) => rejection.into_response(),
        };
    }
    drop(body);
    if super::sse::accepts(&parts.headers)
        && let Some(token) = super::sse_single::token_of(&parts.headers, parts.uri.query())
    {
        return super::sse_single::open(&state, &token);
    }
    handle_query_string(state, parts.headers, &parts.uri).await
}

/// `POST /graphql` with a JSON body: one operation, or a batch (an array) when batching
/// is turned on.
pub async fn handle_post(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let sse = super::sse::accepts(&headers);
    let multipart = super::multipart::accepts(&headers);
    let Some(media) = negotiate(&headers).or((sse || multipart).then_some(Media::Json)) else {
        return not_acceptable();
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let message = format!(
                "the body is larger than {} bytes",
                state.app.config.max_body_bytes
            );
            return request_error(media, StatusCode::PAYLOAD_TOO_LARGE, message);
        }
        Err(_) => {
            return request_error(media, StatusCode::BAD_REQUEST, "the body could not be read");
        }
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_json(content_type) {
        return request_error(
            media,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the request as application/json",
        );
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(_) => {
            return request_error(media, StatusCode::BAD_REQUEST, "the body is not valid JSON");
        }
    };
    if let Value::Array(items) = body {
        return batch(&state, &headers, items, media).await;
    }
    match decode::post_body(&state, body).await {
        Ok(request) if headers.contains_key(super::sse_single::TOKEN_HEADER) => {
            let token = super::sse_single::token_of(&headers, None).unwrap_or_default();
            super::sse_single::execute(&state, &headers, &token, request).await
        }
        Ok(mut request) => {
            let kind = document::analyze(&mut request).map(|a| a.kind);
            if sse && streams(&headers, kind) {
                super::sse::respond(&state, &headers, request).await
            } else if multipart && kind == Some(OperationType::Subscription) {
                super::multipart::respond(&state, &headers, request).await
            } else {
                execute(&state, &headers, request, media).await
            }
        }
        Err(rejection) => rejected(media, rejection),
    }
}

/// A batch: each operation runs on its own (in order) and the answer is an array of their
/// results, as Apollo's batch link expects. Off unless `TASKNEST_MAX_BATCH` is set, and
/// capped by it.
async fn batch(
    state: &HttpState,
    headers: &HeaderMap,
    items: Vec<Value>,
    media: Media,
) -> Response {
    let cap = state.app.config.max_batch as usize;
    if cap == 0 {
        return request_error(
            media,
            StatusCode::BAD_REQUEST,
            "batched requests are not accepted",
        );
    }
    if items.is_empty() || items.len() > cap {
        let message = format!("a batch must hold between 1 and {cap} operations");
        return request_error(media, StatusCode::BAD_REQUEST, message);
    }
    // One token check for the whole batch, not one per operation.
    let authentication = authenticate(state, headers).await;
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let result = match decode::post_body(state, item).await {
            Ok(request) => match run(state, authentication.clone(), request).await {
                Ran::Done {
                    response,
                    request_failed,
                } => response_body(&response, request_failed),
                Ran::Limited(error) => errors_body(&[error.into_server_error(&[])]),
            },
            Err(rejection) => errors_body(&[rejection.into_server_error(&[])]),
        };
        results.push(result);
    }
    (
        StatusCode::OK,
        [(CONTENT_TYPE, media.content_type())],
        format!("[{}]", results.join(",")),
    )
        .into_response()
}

/// Runs a GET query (never a mutation: that is 405).
async fn handle_query_string(
    state: HttpState,
    headers: HeaderMap,
    uri: &axum::http::Uri,
) -> Response {
    let sse = super::sse::accepts(&headers);
    let Some(media) = negotiate(&headers).or(sse.then_some(Media::Json)) else {
        return not_acceptable();
    };
    let mut request = match decode::query_string(&state, uri.query().unwrap_or_default()).await {
        Ok(request) => request,
        Err(rejection) => return rejected(media, rejection),
    };
    let kind = document::analyze(&mut request).map(|a| a.kind);
    // An event stream may carry a subscription over GET (EventSource can only GET).
    if sse && kind != Some(OperationType::Mutation) && streams(&headers, kind) {
        return super::sse::respond(&state, &headers, request).await;
    }
    // Unparsable documents pass here and fail in execution with a proper error.
    if kind.is_some_and(|k| k != OperationType::Query) {
        let mut response = request_error(
            media,
            StatusCode::METHOD_NOT_ALLOWED,
            "only queries may be sent with GET; use POST",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    execute(&state, &headers, request, media).await
}

/// Executes as the token's viewer, and answers per the negotiated media type: with
/// `application/graphql-response+json` a request that fails before execution (parse,
/// validation, variables) is a 400; with `application/json` every GraphQL answer is a 200.
async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    request: Request,
    media: Media,
) -> Response {
    let authentication = authenticate(state, headers).await;
    let (response, request_failed) = match run(state, authentication, request).await {
        Ran::Done {
            response,
            request_failed,
        } => (response, request_failed),
        Ran::Limited(error) => return rate_limited(media, error),
    };
    let status = match media {
        Media::GraphqlResponse if request_failed => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let body = response_body(&response, request_failed);
    (status, [(CONTENT_TYPE, media.content_type())], body).into_response()
}

/// A response as JSON. One that failed before execution has no `data` key at all, as the
/// GraphQL spec asks ("not present" rather than null).
fn response_body(response: &async_graphql::Response, request_failed: bool) -> String {
    if request_failed {
        return errors_body(&response.errors);
    }
    serde_json::to_string(response).unwrap_or_else(|err| {
        let error = AppError::Internal(anyhow::anyhow!("cannot serialize a response: {err}"));
        errors_body(&[error.into_server_error(&[])])
    })
}

/// Whether to answer with an event stream, for a client that accepts one: always for a
/// subscription, and for a query or mutation only when it accepts no JSON type (urql and
/// others list `text/event-stream` beside JSON for every request, and want JSON then).
fn streams(headers: &HeaderMap, kind: Option<OperationType>) -> bool {
    kind == Some(OperationType::Subscription) || negotiate_strict(headers).is_none()
}

/// [`negotiate`] without the "no Accept means JSON" default.
fn negotiate_strict(headers: &HeaderMap) -> Option<Media> {
    headers.get(ACCEPT)?;
    negotiate(headers)
}

/// The response media types of GraphQL over HTTP.
#[derive(Debug, Clone, Copy)]
enum Media {
    GraphqlResponse,
    Json,
}

impl Media {
    fn content_type(self) -> HeaderValue {
        match self {
            Self::GraphqlResponse => {
                HeaderValue::from_static("application/graphql-response+json; charset=utf-8")
            }
            Self::Json => HeaderValue::from_static("application/json; charset=utf-8"),
        }
    }
}

/// Picks the response media type from `Accept`; none at all means `application/json`.
fn negotiate(headers: &HeaderMap) -> Option<Media> {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(Media::Json);
    };
    let accept = accept.to_ascii_lowercase();
    if accept.contains("application/graphql-response+json") {
        Some(Media::GraphqlResponse)
    } else if accept.contains("application/json")
        || accept.contains("*/*")
        || accept.contains("application/*")
    {
        Some(Media::Json)
    } else {
        None
    }
}

fn not_acceptable() -> Response {
    (
        StatusCode::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
        .into_response()
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/graphql-response+json")
}

/// A mutation over the user's limit: 429 with `Retry-After` for clients that negotiated the
/// GraphQL response type, a 200 with the coded error (and `retryAfterMs`) otherwise.
fn rate_limited(media: Media, error: AppError) -> Response {
    let retry_after_ms = match &error {
        AppError::RateLimited { retry_after_ms } => *retry_after_ms,
        _ => 1000,
    };
    let body = errors_body(&[error.into_server_error(&[])]);
    let status = match media {
        Media::GraphqlResponse => StatusCode::TOO_MANY_REQUESTS,
        Media::Json => StatusCode::OK,
    };
    let retry_after = HeaderValue::from(retry_after_ms.div_ceil(1000));
    (
        status,
        [
            (CONTENT_TYPE, media.content_type()),
            (RETRY_AFTER, retry_after),
        ],
        body,
    )
        .into_response()
}

/// A request that could not be run; a persisted-query miss is an ordinary GraphQL answer
/// (200), which is how Apollo Client and urql learn that they must send the full query.
fn rejected(media: Media, rejection: AppError) -> Response {
    let status = match rejection {
        AppError::PersistedQueryNotFound => StatusCode::OK,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(media, status, rejection)
}

/// A request that could not be run at all.
fn request_error(media: Media, status: StatusCode, message: impl Into<String>) -> Response {
    error_response(media, status, AppError::BadRequest(message.into()))
}

fn error_response(media: Media, status: StatusCode, error: AppError) -> Response {
    (
        status,
        [(CONTENT_TYPE, media.content_type())],
        errors_body(&[error.into_server_error(&[])]),
    )
        .into_response()
}
