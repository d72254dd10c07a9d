//! One operation's results, serialized, for every transport (graphql-ws, SSE, multipart). A
//! live `projectEvents` subscription joins the shared execution of identical ones (see
//! [`multiplex`](super::multiplex)); anything else, or a stream resuming from a given seq,
//! runs its own execution. Either way each result comes with the seq of the event behind it,
//! whatever the selection, so SSE can number its events for `Last-Event-ID`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use async_graphql::Request;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tracing::Instrument;

use super::HttpState;
use super::multiplex::{GroupKey, Left, Output};
use super::payload::Payload;
use crate::auth::{Authentication, Viewer};
use crate::entities::project_members::Role;
use crate::graphql::{document, prepare_request};
use crate::projects::access;
use crate::realtime::stream::{ResumeAfter, SeqTap, Subscriber, Verdict, removed, verdict};

/// One result of an operation.
pub struct Delivery {
    /// The result; an error payload is the operation's last.
    pub payload: Payload,
    /// The seq of the project event the result is about (`projectEvents` only).
    pub seq: Option<i64>,
}

/// The results of `request` for `authentication`; the stream's end means `complete`. A
/// `projectEvents` subscription resumes after `resume_after` when given. With `direct`, a
/// shared execution writes the results it shares straight to that output rather than
/// yielding them; the stream then yields only what the connection must write itself (a
/// final error, or the results of an execution of its own after falling behind).
pub fn run(
    state: &HttpState,
    mut request: Request,
    authentication: Authentication,
    resume_after: Option<i64>,
    direct: Option<Output>,
) -> BoxStream<'static, Delivery> {
    if let (Authentication::Viewer(viewer), None) = (&authentication, resume_after) {
        let key =
            document::analyze(&mut request).and_then(|analysis| GroupKey::of(&request, &analysis));
        if let Some(key) = key {
            return shared(state.clone(), key, viewer.clone(), direct).boxed();
        }
    }
    own(
        state,
        request,
        authentication,
        resume_after,
        tracing::Span::current(),
    )
}

/// Runs `request` on its own execution, polled inside `span` (the operation's), so that what
/// the execution logs carries the operation's fields.
fn own(
    state: &HttpState,
    request: Request,
    authentication: Authentication,
    resume_after: Option<i64>,
    span: tracing::Span,
) -> BoxStream<'static, Delivery> {
    let tap = Arc::new(AtomicI64::new(SeqTap::NONE));
    let mut request =
        prepare_request(request, &state.app, authentication).data(SeqTap(tap.clone()));
    if let Some(seq) = resume_after {
        request = request.data(ResumeAfter(seq));
    }
    // The execution resolves one event at a time, so when a response arrives the tap holds
    // the seq of the event it was made from.
    let deliveries = state.schema.execute_stream(request).map(move |response| {
        let seq = tap.swap(SeqTap::NONE, Ordering::Relaxed);
        Delivery {
            payload: Payload::of(response),
            seq: (seq != SeqTap::NONE).then_some(seq),
        }
    });
    InSpan {
        span,
        stream: deliveries,
    }
    .boxed()
}

/// A stream polled inside a span. A shared member's forwarding loop does without one: it
/// logs nothing, and entering a span costs more than the rest of its work per delivery.
struct InSpan<S> {
    span: tracing::Span,
    stream: S,
}

impl<S: Stream + Unpin> Stream for InSpan<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.stream.poll_next_unpin(cx)
    }
}

/// A member of a shared group: checks access, forwards the group's serialized payloads (or,
/// with `direct`, lets the group write them), and resumes on its own execution from the last
/// seq it delivered if it falls behind or the group ends early, so nothing is lost or
/// repeated.
fn shared(
    state: HttpState,
    key: GroupKey,
    viewer: Viewer,
    direct: Option<Output>,
) -> impl Stream<Item = Delivery> + Send + 'static {
    // The operation's span, entered for the one-off steps and the member's own execution.
    let span = tracing::Span::current();
    async_stream::stream! {
        let path = ["projectEvents"];
        // The one-off steps are boxed, so that a long-lived member does not carry their
        // state for its whole life.
        let access = Box::pin(access::require(&state.app.db, key.project_id, &viewer, Role::Viewer));
        if let Err(err) = access.instrument(span.clone()).await {
            yield Delivery { payload: Payload::error(err, &path), seq: None };
            return;
        }
        let multiplexer = &state.multiplexer;
        let mut last;
        if let Some(output) = direct {
            let join = multiplexer.join_direct(key.clone(), &state.app, &state.schema, &viewer, output);
            let mut share = Box::pin(join).instrument(span.clone()).await;
            match share.left().await {
                Left::Behind => last = share.last_seq(),
                Left::Done => return,
                Left::Removed => {
                    yield Delivery { payload: Payload::error(removed(), &path), seq: None };
                    return;
                }
                Left::Failed(payload) => {
                    yield Delivery { payload, seq: None };
                    return;
                }
            }
        } else {
            let join = Box::pin(multiplexer.join(key.clone(), &state.app, &state.schema, &viewer));
            let share = join.instrument(span.clone()).await;
            let subscriber = Subscriber::User(viewer.user_id.clone());
            let mut messages = share.receiver;
            last = share.last_seq;
            // Leaves the loop to continue alone; returns when the operation is over.
            while let Ok(message) = messages.recv().await {
                let seq = message.event.seq();
                if seq <= last {
                    continue;
                }
                if seq > last + 1 {
                    break;
                }
                let verdict = verdict(&message.event, &subscriber);
                if matches!(verdict, Verdict::Removed) {
                    yield Delivery { payload: Payload::error(removed(), &path), seq: None };
                    return;
                }
                let last_one = matches!(verdict, Verdict::LastOne) || message.payload.is_error();
                yield Delivery { payload: message.payload.clone(), seq: Some(seq) };
                if last_one {
                    return;
                }
                last = seq;
            }
        }
        state.app.metrics.subscribers_behind.inc();
        let alone = own(&state, key.request(), Authentication::Viewer(viewer), Some(last), span);
        for await delivery in alone {
            yield delivery;
        }
    }
}
