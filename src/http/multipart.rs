//! Subscriptions over multipart HTTP, as Apollo Client's `HttpLink` runs them with no
//! WebSocket link (Apollo's "multipart HTTP protocol for GraphQL subscriptions"): a `POST`
//! with `Accept: multipart/mixed;subscriptionSpec="1.0"` gets a `multipart/mixed` answer
//! whose parts are `{"payload": <result>}`, a heartbeat `{}` every 5 seconds, and, for a
//! fatal error, `{"payload": null, "errors": [...]}`. Each part is followed at once by the
//! next boundary line, since clients use a part only when its closing boundary arrived.

use std::time::Duration;

use async_graphql::Request;
use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::streaming::{self, Item, Started};
use crate::error::{AppError, errors_body};

/// Idle subscriptions send `{}` this often (the protocol's heartbeat).
const HEARTBEAT: Duration = Duration::from_secs(5);
const BOUNDARY: &str = "graphql";

/// Whether the client asked for multipart subscriptions.
pub(super) fn accepts(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("multipart/mixed"))
}

/// Runs the subscription `request` and answers with its results as multipart parts.
pub(super) async fn respond(state: &HttpState, headers: &HeaderMap, request: Request) -> Response {
    let started = streaming::start(state, headers, request, None, Some(HEARTBEAT)).await;
    let first = Bytes::from(format!("\r\n--{BOUNDARY}"));
    let body = match started {
        Started::Refused(error) => {
            let parts = vec![
                Ok::<_, std::convert::Infallible>(first),
                Ok(fatal(error)),
                Ok(end()),
            ];
            Body::from_stream(futures_util::stream::iter(parts))
        }
        Started::Running(rx) => {
            let parts = futures_util::stream::unfold(
                (Some(first), rx, false),
                |(first, mut rx, done)| async move {
                    if let Some(first) = first {
                        return Some((Ok::<_, std::convert::Infallible>(first), (None, rx, done)));
                    }
                    if done {
                        return None;
                    }
                    let (chunk, done) = match rx.recv().await? {
                        Item::Result(delivery) => (
                            part(&format!(
                                r#"{{"payload":{}}}"#,
                                delivery.payload.result_json()
                            )),
                            false,
                        ),
                        Item::Heartbeat => (part("{}"), false),
                        Item::TokenEnded => {
                            let mut chunk = fatal(streaming::token_ended()).to_vec();
                            chunk.extend_from_slice(&end());
                            (Bytes::from(chunk), true)
                        }
                        Item::Complete => (end(), true),
                    };
                    Some((Ok(chunk), (None, rx, done)))
                },
            );
            Body::from_stream(parts)
        }
    };
    let content_type = format!(r#"multipart/mixed;boundary="{BOUNDARY}";subscriptionSpec="1.0""#);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One part (after the boundary line already sent), then the next boundary line.
fn part(json: &str) -> Bytes {
    Bytes::from(format!(
        "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{json}\r\n--{BOUNDARY}"
    ))
}

/// A fatal error part: the subscription ends.
fn fatal(error: AppError) -> Bytes {
    let errors = errors_body(&[error.into_server_error(&[])]);
    // `errors_body` is `{"errors":[…]}`; the protocol wants `{"payload":null,"errors":[…]}`.
    let errors = errors
        .strip_prefix('{')
        .map_or(errors.clone(), |rest| format!(r#"{{"payload":null,{rest}"#));
    part(&errors)
}

/// The closing of the last boundary.
fn end() -> Bytes {
    Bytes::from_static(b"--\r\n")
}
