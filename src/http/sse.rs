//! GraphQL over Server-Sent Events, "distinct connections" mode of the `graphql-sse`
//! protocol: a `POST` (or, for queries and subscriptions, a `GET`) with
//! `Accept: text/event-stream` runs one operation and streams each result as a `next` event,
//! then `complete`. Subscriptions use the same stream core as graphql-ws (replay, live, gap
//! repair, per-event access checks).
//!
//! Resume: on a `projectEvents` stream each event's `id:` is its `seq` (whatever the
//! selection), and a request with `Last-Event-ID: N` continues after N exactly as `after: N`
//! would (the browser's `EventSource` sends it on its own when it reconnects).
//!
//! The stream ends with a `next` carrying `UNAUTHENTICATED` when the token expires or an API
//! token is revoked (the client comes back with a fresh one), and without `complete` when
//! the server shuts down (the client reconnects, elsewhere, with `Last-Event-ID`).

use std::convert::Infallible;
use std::time::Duration;

use async_graphql::Request;
use axum::http::header::{ACCEPT, CACHE_CONTROL};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::HttpState;
use super::deliveries::Delivery;
use super::streaming::{self, Item, Started};
use crate::error::errors_body;

/// Comment lines on an idle stream keep proxies from closing it.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Whether the client asked for an event stream.
pub(super) fn accepts(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Runs `request` and answers with its results as an event stream.
pub(super) async fn respond(state: &HttpState, headers: &HeaderMap, request: Request) -> Response {
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let rx = match streaming::start(state, headers, request, resume_after, None).await {
        Started::Running(rx) => rx,
        Started::Refused(error) => {
            let events = vec![
                Ok::<_, Infallible>(next(errors_body(&[error.into_server_error(&[])]))),
                Ok(complete()),
            ];
            return Sse::new(futures_util::stream::iter(events)).into_response();
        }
    };
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let events = match rx.recv().await? {
            Item::Result(delivery) => vec![result_event(&delivery)],
            Item::Heartbeat => vec![],
            Item::TokenEnded => {
                let error = streaming::token_ended();
                vec![
                    next(errors_body(&[error.into_server_error(&[])])),
                    complete(),
                ]
            }
            Item::Complete => vec![complete()],
        };
        Some((
            futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>)),
            rx,
        ))
    })
    .flatten();
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and others buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A result as a `next` event, with the event's seq as its `id:` on `projectEvents`.
fn result_event(delivery: &Delivery) -> Event {
    let event = next(delivery.payload.result_json().into_owned());
    match delivery.seq {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
}

fn next(data: String) -> Event {
    Event::default().event("next").data(data)
}

fn complete() -> Event {
    Event::default().event("complete").data("")
}
