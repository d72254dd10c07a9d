//! One operation on a WebSocket: starting it (in a span, counted while it lives), building
//! its request, and framing its results (shared or its own, see
//! [`deliveries`](crate::http::deliveries)) as graphql-ws messages.
//!
//! An operation is not a task of its own: it is a stream of frames that the connection's
//! task polls beside its socket, and the frames of several operations ready together go out
//! in one write. A shared subscription's results do not pass through it at all: its group
//! writes them to the socket itself (see [`direct`](crate::http::multiplex::direct)), and
//! the stream yields only what ends the operation or follows its falling behind.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_graphql::Request;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use sync_wrapper::SyncWrapper;

use super::messages::{OperationPayload, Protocol};
use crate::auth::{Authentication, Viewer};
use crate::graphql::parsed::ParsedDocuments;
use crate::http::deliveries::{self, Delivery};
use crate::http::multiplex::{Outbox, Output};
use crate::http::payload::Payload;

/// A message of an operation for the client.
pub(super) struct Frame {
    pub(super) text: Text,
    /// The operation's last message (`complete` or `error`): it is over once written.
    pub(super) last: bool,
}

/// A frame's text, in the parts it is written from.
pub(super) enum Text {
    /// A result: the operation's prefix (up to the payload key), the serialized payload
    /// (shared by every subscriber of an execution), then `}`. Written straight from the
    /// parts, with no copy made for each subscriber.
    Next { prefix: Arc<str>, payload: Arc<str> },
    /// Any other message, made whole.
    Whole(String),
}

impl Text {
    /// The parts that, one after the other, make the text.
    pub(super) fn parts(&self) -> [&[u8]; 3] {
        match self {
            Self::Next { prefix, payload } => [prefix.as_bytes(), payload.as_bytes(), b"}"],
            Self::Whole(text) => [text.as_bytes(), b"", b""],
        }
    }
}

/// A running operation: its frames; counted in `active_subscriptions` while it lives
/// (finished or stopped, it is dropped).
pub(super) struct Operation {
    /// Only ever polled through `&mut`; the wrapper lets the connection, which holds it, be
    /// borrowed across its other awaits.
    frames: SyncWrapper<Frames>,
    /// The operation's span (its start and end are logged in it).
    span: tracing::Span,
    gauge: prometheus_client::metrics::gauge::Gauge,
    started: std::time::Instant,
}

impl Stream for Operation {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        // Not entering the span here: what logs underneath enters it itself (see
        // `deliveries`), and this runs once per delivery.
        self.frames.get_mut().poll_next_unpin(cx)
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        self.gauge.dec();
        let _entered = self.span.enter();
        tracing::info!(
            elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "operation ended"
        );
    }
}

impl super::Connection {
    /// Starts one operation: its results as `next` (or legacy `data`) messages, then
    /// `complete`. A live `projectEvents` subscription joins a shared execution group.
    pub(super) fn start(
        &self,
        id: &str,
        payload: OperationPayload,
        viewer: Viewer,
        outbox: Arc<dyn Outbox>,
    ) -> Operation {
        let operation = self
            .state
            .app
            .metrics
            .operation_label(payload.operation_name.as_deref());
        let span = tracing::info_span!(
            "graphql",
            operation = %operation,
            user = %viewer.user_id,
            request_id = %self.request_id,
            subscription = %id,
        );
        let prefix = next_prefix(id, self.protocol);
        // A result shared with other subscribers is written by its group, straight to the
        // socket: this operation then sees only the frames the connection must write itself.
        let direct = Output {
            outbox,
            prefix: prefix.clone(),
        };
        let deliveries = span.in_scope(|| {
            tracing::info!("operation started");
            deliveries::run(
                &self.state,
                request_of(&self.state.documents, payload),
                Authentication::Viewer(viewer),
                None,
                Some(direct),
            )
        });
        let gauge = self.state.app.metrics.subscriptions.clone();
        gauge.inc();
        Operation {
            frames: SyncWrapper::new(Frames::new(deliveries, id, prefix)),
            span,
            gauge,
            started: std::time::Instant::now(),
        }
    }
}

/// The async-graphql request for an operation payload (before the per-request data).
pub(super) fn request_of(documents: &ParsedDocuments, payload: OperationPayload) -> Request {
    let mut request = documents.request(payload.query);
    if let Some(variables) = payload.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = payload.operation_name {
        request = request.operation_name(name);
    }
    if let Some(extensions) = payload.extensions {
        for (key, value) in extensions {
            request.extensions.insert(
                key,
                async_graphql::Value::from_json(value).unwrap_or_default(),
            );
        }
    }
    request
}

/// The frames of an operation: each result as `next` (legacy `data`); an error as `error`,
/// which ends it; otherwise `complete` once its results end. Only the id differs between
/// the frames of subscribers sharing an execution: the payload is spliced in as the bytes it
/// was serialized to. A plain state machine rather than a generator: it runs once per
/// delivery per subscriber.
struct Frames {
    deliveries: BoxStream<'static, Delivery>,
    /// The operation id as a JSON string.
    id: String,
    /// Everything of a `next` frame before the payload, made once.
    prefix: Arc<str>,
    done: bool,
}

/// Everything of operation `id`'s result frames before the payload.
fn next_prefix(id: &str, protocol: Protocol) -> Arc<str> {
    let id = Value::String(id.to_owned());
    let kind = match protocol {
        Protocol::TransportWs => "next",
        Protocol::Legacy => "data",
    };
    format!("{{\"type\":\"{kind}\",\"id\":{id},\"payload\":").into()
}

impl Frames {
    fn new(deliveries: BoxStream<'static, Delivery>, id: &str, prefix: Arc<str>) -> Self {
        Self {
            deliveries,
            id: Value::String(id.to_owned()).to_string(),
            prefix,
            done: false,
        }
    }

    fn last(&mut self, text: String) -> Frame {
        self.done = true;
        Frame {
            text: Text::Whole(text),
            last: true,
        }
    }
}

impl Stream for Frames {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.deliveries.poll_next_unpin(cx)) {
            Some(Delivery {
                payload: Payload::Result(json),
                ..
            }) => Frame {
                text: Text::Next {
                    prefix: this.prefix.clone(),
                    payload: json,
                },
                last: false,
            },
            Some(Delivery {
                payload: Payload::Errors(errors),
                ..
            }) => {
                let text = format!(r#"{{"type":"error","id":{},"payload":{errors}}}"#, this.id);
                this.last(text)
            }
            None => {
                let text = format!(r#"{{"type":"complete","id":{}}}"#, this.id);
                this.last(text)
            }
        };
        Poll::Ready(Some(frame))
    }
}
