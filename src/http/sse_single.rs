//! The `graphql-sse` protocol's single connection mode: one event stream carries the results
//! of many operations. `PUT /graphql` reserves a stream (201, the token in the body); `GET
//! /graphql` with the token (`X-GraphQL-Event-Stream-Token` or `?token=`) and `Accept:
//! text/event-stream` opens it (once); each `POST /graphql` with the token runs an
//! operation whose `extensions.operationId` names it (202), and its results arrive on the
//! stream as `next` `{"id", "payload"}` then `complete` `{"id"}`; `DELETE
//! /graphql?operationId=…` with the token stops one (200).
//!
//! Reservations live on the instance that made them (behind a load balancer, route a
//! client's requests to one instance, as for any such stream); only the user who reserved a
//! stream may run operations on it, and a reservation not opened within a minute lapses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_graphql::Request;
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::HttpState;
use super::execute::authenticate;
use super::streaming::{self, Item, Started};
use crate::auth::Authentication;
use crate::error::errors_body;

/// The header that carries a reservation token.
pub(super) const TOKEN_HEADER: &str = "x-graphql-event-stream-token";
/// A reservation not opened by then lapses.
const UNCLAIMED_FOR: Duration = Duration::from_secs(60);
/// Most operations running on one stream.
const MAX_OPERATIONS: usize = 100;

/// The reserved streams of this instance.
#[derive(Default)]
pub struct Reservations {
    streams: Mutex<HashMap<String, Reservation>>,
}

struct Reservation {
    /// Who reserved it (empty: anonymous).
    user: String,
    made: Instant,
    tx: mpsc::Sender<Event>,
    /// Taken by the `GET` that opens the stream.
    rx: Option<mpsc::Receiver<Event>>,
    operations: HashMap<String, JoinHandle<()>>,
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reservation>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The token a request names, from the header or the `token` search parameter.
pub(super) fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(token) = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(token.to_owned());
    }
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

async fn user_of(state: &HttpState, headers: &HeaderMap) -> Option<String> {
    match authenticate(state, headers).await {
        Authentication::Viewer(viewer) => Some(viewer.user_id),
        Authentication::Anonymous => Some(String::new()),
        Authentication::Invalid(_) => None,
    }
}

/// `PUT /graphql`: reserves a stream; 201 with its token.
pub async fn reserve(
    axum::extract::State(state): axum::extract::State<HttpState>,
    headers: HeaderMap,
) -> Response {
    let Some(user) = user_of(&state, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    let token = uuid::Uuid::new_v4().simple().to_string();
    let (tx, rx) = mpsc::channel(64);
    let mut streams = state.sse_streams.lock();
    streams.retain(|_, r| r.rx.is_none() || r.made.elapsed() < UNCLAIMED_FOR);
    streams.insert(
        token.clone(),
        Reservation {
            user,
            made: Instant::now(),
            tx,
            rx: Some(rx),
            operations: HashMap::new(),
        },
    );
    (StatusCode::CREATED, token).into_response()
}

/// `GET /graphql` with a reservation token: the stream (once per reservation).
pub(super) fn open(state: &HttpState, token: &str) -> Response {
    let rx = {
        let mut streams = state.sse_streams.lock();
        match streams.get_mut(token) {
            None => return (StatusCode::NOT_FOUND, "no such reservation").into_response(),
            Some(reservation) => match reservation.rx.take() {
                Some(rx) => rx,
                None => {
                    return (StatusCode::CONFLICT, "the stream is already open").into_response();
                }
            },
        }
    };
    // Ends the reservation (and its operations) when the client goes away.
    let closer = Closer {
        state: state.clone(),
        token: token.to_owned(),
    };
    let events = futures_util::stream::unfold((rx, closer), |(mut rx, closer)| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), (rx, closer)))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Drops a reservation and stops its operations.
struct Closer {
    state: HttpState,
    token: String,
}

impl Drop for Closer {
    fn drop(&mut self) {
        if let Some(reservation) = self.state.sse_streams.lock().remove(&self.token) {
            for (_, operation) in reservation.operations {
                operation.abort();
            }
        }
    }
}

/// `POST /graphql` with a reservation token: runs the operation on the stream; 202.
pub(super) async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    token: &str,
    request: Request,
) -> Response {
    let Some(id) = request.extensions.get("operationId").and_then(|v| match v {
        async_graphql::Value::String(s) => Some(s.clone()),
        _ => None,
    }) else {
        return bad_request("extensions.operationId is required in single connection mode");
    };
    let Some(user) = user_of(state, headers).await else {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    let tx = {
        let streams = state.sse_streams.lock();
        match streams.get(token) {
            Some(r) if r.user == user => {
                if r.operations.contains_key(&id) {
                    return (StatusCode::CONFLICT, "an operation with this id is running")
                        .into_response();
                }
                if r.operations.len() >= MAX_OPERATIONS {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many operations on this stream",
                    )
                        .into_response();
                }
                r.tx.clone()
            }
            _ => return (StatusCode::NOT_FOUND, "no such reservation").into_response(),
        }
    };
    let started = streaming::start(state, headers, request, None, None).await;
    let relay_id = id.clone();
    let relay_state = state.clone();
    let relay_token = token.to_owned();
    let relay = tokio::spawn(async move {
        let id = relay_id;
        let next = |payload: String| {
            Event::default()
                .event("next")
                .data(format!(r#"{{"id":{},"payload":{payload}}}"#, json!(id)))
        };
        let complete = Event::default()
            .event("complete")
            .data(json!({ "id": id }).to_string());
        match started {
            Started::Refused(error) => {
                let _ = tx
                    .send(next(errors_body(&[error.into_server_error(&[])])))
                    .await;
            }
            Started::Running(mut rx) => {
                while let Some(item) = rx.recv().await {
                    let event = match item {
                        Item::Result(delivery) => next(delivery.payload.result_json().into_owned()),
                        Item::Heartbeat => continue,
                        Item::TokenEnded => {
                            let error = streaming::token_ended();
                            next(errors_body(&[error.into_server_error(&[])]))
                        }
                        Item::Complete => break,
                    };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(complete).await;
        if let Some(reservation) = relay_state.sse_streams.lock().get_mut(&relay_token) {
            reservation.operations.remove(&id);
        }
    });
    if let Some(reservation) = state.sse_streams.lock().get_mut(token) {
        reservation.operations.insert(id, relay);
    } else {
        relay.abort();
    }
    StatusCode::ACCEPTED.into_response()
}

/// `DELETE /graphql?operationId=…` with a reservation token: stops one operation; 200.
pub async fn stop(
    axum::extract::State(state): axum::extract::State<HttpState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(token) = token_of(&headers, uri.query()) else {
        return bad_request("the reservation token is required");
    };
    let Some(id) = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "operationId")
        .map(|(_, v)| v.into_owned())
    else {
        return bad_request("operationId is required");
    };
    let Some(user) = user_of(&state, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    };
    let mut streams = state.sse_streams.lock();
    match streams.get_mut(&token) {
        Some(r) if r.user == user => {
            if let Some(operation) = r.operations.remove(&id) {
                operation.abort();
            }
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such reservation").into_response(),
    }
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}
