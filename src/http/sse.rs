//! GraphQL over Server-Sent Events, "distinct connections" mode of the `graphql-sse`
//! protocol: a `POST` (or, for queries and subscriptions, a `GET`) with
//! `Accept: text/event-stream` runs one operation and streams each result as a `next` event,
//! then `complete`. Subscriptions use the same stream core as graphql-ws (replay, live, gap
//! repair, per-event access checks).
//!
//! Resume: on a `projectEvents` stream each event's `id:` is its `seq` (when the selection
//! has `seq`), and a request with `Last-Event-ID: N` continues after N exactly as `after: N`
//! would (the browser's `EventSource` sends it on its own when it reconnects).
//!
//! The stream ends with a `next` carrying `UNAUTHENTICATED` when the token expires or an API
//! token is revoked (the client comes back with a fresh one), and without `complete` when
//! the server shuts down (the client reconnects, elsewhere, with `Last-Event-ID`).

use std::convert::Infallible;
use std::time::Duration;

use async_graphql::Request;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CACHE_CONTROL};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::HttpState;
use super::execute::authenticate;
use crate::auth::{self, Authentication};
use crate::error::{AppError, errors_body, with_error_codes};
use crate::graphql::prepare_request;
use crate::realtime::stream::ResumeAfter;

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
    let authentication = authenticate(state, headers).await;
    let resume_after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    // Starting a stream counts against the same budget as starting a graphql-ws operation.
    let mut ends = None;
    if let Authentication::Viewer(viewer) = &authentication {
        if let Err(limited) = state.app.rate_limiter.check(&viewer.rate_key()).await {
            return once(errors_body(&[limited.into_server_error(&[])]));
        }
        let remaining = viewer.expires_at.saturating_sub(auth::unix_now()).max(0);
        let expiry = tokio::time::Instant::now()
            + Duration::from_secs(remaining.min(365 * 24 * 3600) as u64);
        ends = Some((expiry, state.app.api_tokens.watch(&state.app.db, viewer)));
    }
    let mut request = prepare_request(request, &state.app, authentication);
    if let Some(seq) = resume_after {
        request = request.data(ResumeAfter(seq));
    }
    let results = state.schema.execute_stream(request).map(|mut response| {
        with_error_codes(&mut response.errors);
        let id = event_seq(&response);
        let body = serde_json::to_string(&response).unwrap_or_else(|err| {
            let error = AppError::Internal(anyhow::anyhow!("cannot serialize a response: {err}"));
            errors_body(&[error.into_server_error(&[])])
        });
        let event = Event::default().event("next").data(body);
        match id {
            Some(seq) => event.id(seq.to_string()),
            None => event,
        }
    });
    let shutdown = state.app.shutdown.clone();
    let stream = drive(results, ends, shutdown);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, "no-cache".parse().expect("a header value"));
    // nginx and others buffer responses unless told not to.
    headers.insert("x-accel-buffering", "no".parse().expect("a header value"));
    response
}

/// The results, then `complete`; cut short by the token's end (with `UNAUTHENTICATED`) or
/// by shutdown (without `complete`, so the client reconnects). A task drives the operation
/// and hands events over; when the client goes away the hand-over fails and the task ends,
/// dropping the operation.
fn drive(
    results: impl Stream<Item = Event> + Send + 'static,
    ends: Option<(tokio::time::Instant, Option<auth::tokens::TokenWatch>)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let (expiry, mut watch) = match ends {
            Some((expiry, watch)) => (Some(expiry), watch),
            None => (None, None),
        };
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let token_end = tokio::time::sleep_until(expiry.unwrap_or(far));
        tokio::pin!(token_end);
        let mut results = std::pin::pin!(results);
        loop {
            let (events, end) = tokio::select! {
                next = results.next() => match next {
                    Some(event) => (vec![event], false),
                    None => (vec![complete()], true),
                },
                () = &mut token_end, if expiry.is_some() => (token_ended(), true),
                () = auth::tokens::revoked(&mut watch) => (token_ended(), true),
                () = shutdown.cancelled() => return,
            };
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            if end {
                return;
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    })
}

/// The end of a stream whose token ran out or was revoked.
fn token_ended() -> Vec<Event> {
    let error =
        AppError::Unauthenticated("the token expired or was revoked: reconnect with a fresh one");
    vec![
        Event::default()
            .event("next")
            .data(errors_body(&[error.into_server_error(&[])])),
        complete(),
    ]
}

fn complete() -> Event {
    Event::default().event("complete").data("")
}

/// A stream of one error result, then `complete` (a request refused before it started).
fn once(body: String) -> Response {
    let events = vec![
        Ok::<_, Infallible>(Event::default().event("next").data(body)),
        Ok(complete()),
    ];
    Sse::new(futures_util::stream::iter(events)).into_response()
}

/// The `seq` of a `projectEvents` result, for the event's `id:`.
fn event_seq(response: &async_graphql::Response) -> Option<i64> {
    let async_graphql::Value::Object(data) = &response.data else {
        return None;
    };
    let async_graphql::Value::Object(event) = data.get("projectEvents")? else {
        return None;
    };
    match event.get("seq")? {
        async_graphql::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}
