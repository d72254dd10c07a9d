//! The core of the HTTP streaming transports (SSE, multipart): starting one operation for a
//! request's viewer (rate limit, resume point) and driving it in a task that ends it on the
//! token's expiry or revocation and on shutdown. The transports only frame what it yields.
//! Subscriptions inside run on the same stream core as graphql-ws (replay, live, gap repair,
//! per-event access checks), and live `projectEvents` ones join the same shared executions.

use std::time::Duration;

use async_graphql::Request;
use axum::http::HeaderMap;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::HttpState;
use super::deliveries::{self, Delivery};
use super::execute::authenticate;
use crate::auth::{self, Authentication};
use crate::error::AppError;

/// What a streaming operation yields, in order.
pub(super) enum Item {
    /// One result of the operation (an error payload is the last result).
    Result(Delivery),
    /// Nothing for a while (only when a heartbeat interval was asked for).
    Heartbeat,
    /// The token expired or was revoked: the last item.
    TokenEnded,
    /// The operation finished: the last item.
    Complete,
}

/// An operation started, or refused before it started.
pub(super) enum Started {
    Running(mpsc::Receiver<Item>),
    Refused(AppError),
}

/// Starts `request` for the headers' viewer, resuming `projectEvents` after `resume_after`.
/// The receiver ends early (without `Complete`) on shutdown; dropping it stops the
/// operation.
pub(super) async fn start(
    state: &HttpState,
    headers: &HeaderMap,
    request: Request,
    resume_after: Option<i64>,
    heartbeat: Option<Duration>,
) -> Started {
    let authentication = authenticate(state, headers).await;
    let mut ends = None;
    let mut slot = None;
    let mut user = String::new();
    if let Authentication::Viewer(viewer) = &authentication {
        // Starting a stream counts against the same budget as starting a graphql-ws operation.
        if let Err(limited) = state.app.rate_limiter.check(&viewer.rate_key()).await {
            return Started::Refused(limited);
        }
        // An open stream counts as one of the user's connections, as a WebSocket does.
        let max = state.app.config.max_connections_per_user;
        match state.ws_users.acquire(&viewer.user_id, max) {
            Some(taken) => slot = Some(taken),
            None => {
                return Started::Refused(AppError::TooMany(
                    "too many open connections for this user",
                ));
            }
        }
        user = viewer.user_id.clone();
        let expiry = tokio::time::Instant::now() + viewer.remaining();
        ends = Some((expiry, state.app.api_tokens.watch(&state.app.db, viewer)));
    }
    let results = deliveries::run(state, request, authentication, resume_after, None);
    let shutdown = state.app.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Item>(16);
    let gauge = state.app.metrics.subscriptions.clone();
    let span = tracing::info_span!("graphql.stream", user = %user);
    tokio::spawn(
        async move {
            // Held for the stream's life: the user's connection count and the running gauge.
            let _slot = slot;
            gauge.inc();
            let _running = scopeguard(move || {
                gauge.dec();
            });
            let (expiry, mut watch) = match ends {
                Some((expiry, watch)) => (Some(expiry), watch),
                None => (None, None),
            };
            // Without a viewer there is no token to end: the branch below is off.
            let token_end =
                tokio::time::sleep_until(expiry.unwrap_or_else(tokio::time::Instant::now));
            tokio::pin!(token_end);
            let beat = heartbeat.unwrap_or(Duration::from_secs(3600));
            let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
            let mut results = std::pin::pin!(results);
            loop {
                let item = tokio::select! {
                    next = results.next() => match next {
                        Some(delivery) => {
                            beats.reset();
                            Item::Result(delivery)
                        }
                        None => Item::Complete,
                    },
                    () = &mut token_end, if expiry.is_some() => Item::TokenEnded,
                    () = auth::tokens::revoked(&mut watch) => Item::TokenEnded,
                    _ = beats.tick(), if heartbeat.is_some() => Item::Heartbeat,
                    () = shutdown.cancelled() => return,
                    // The client went away (its response body was dropped): stop at once,
                    // not at the next event.
                    () = tx.closed() => return,
                };
                let last = matches!(item, Item::TokenEnded | Item::Complete);
                // An error result is the operation's last (graphql-ws sends it as `error`).
                let failed = matches!(&item, Item::Result(d) if d.payload.is_error());
                if tx.send(item).await.is_err() || last {
                    return;
                }
                if failed {
                    let _ = tx.send(Item::Complete).await;
                    return;
                }
            }
        }
        .instrument(span),
    );
    Started::Running(rx)
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// The error a stream ends with when its token ran out or was revoked.
pub(super) fn token_ended() -> AppError {
    AppError::Unauthenticated("the token expired or was revoked: reconnect with a fresh one")
}
