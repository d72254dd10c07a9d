//! One operation on a WebSocket: starting it (in a span, counted while it lives), building
//! its request, forwarding its responses, and the shared-execution member path for live
//! `projectEvents` subscriptions.

use async_graphql::Request;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::messages::{OperationPayload, Outgoing, Protocol};
use crate::auth::{Authentication, Viewer};
use crate::entities::project_members::Role;
use crate::graphql::{document, prepare_request};
use crate::http::HttpState;
use crate::http::multiplex::GroupKey;
use crate::http::payload::Payload;
use crate::projects::access;
use crate::realtime::stream::{ResumeAfter, Subscriber, Verdict, removed, verdict};

impl super::Connection {
    /// Spawns an operation's task, counted in `active_subscriptions` while it lives.
    fn spawn_tracked(
        &self,
        span: tracing::Span,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let gauge = self.state.app.metrics.subscriptions.clone();
        gauge.inc();
        // Moved into the future, so it is dropped when the operation ends or is stopped,
        // even before its first poll (the span is entered on drop).
        let tracked = Tracked(gauge, std::time::Instant::now());
        tokio::spawn(
            async move {
                let _tracked = tracked;
                tracing::info!("operation started");
                task.await;
            }
            .instrument(span),
        )
    }

    /// Runs one operation, forwarding its results as `next` (or legacy `data`) messages.
    /// A live `projectEvents` subscription joins a shared execution group instead.
    pub(super) fn start(
        &self,
        id: String,
        payload: OperationPayload,
        viewer: Viewer,
    ) -> JoinHandle<()> {
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
        let sink = Sink {
            outgoing: self.outgoing_tx.clone(),
            id_json: Value::String(id.clone()).to_string(),
            id,
            protocol: self.protocol,
        };
        let mut request = request_of(payload);
        let key =
            document::analyze(&mut request).and_then(|analysis| GroupKey::of(&request, &analysis));
        if let Some(key) = key {
            let state = self.state.clone();
            return self.spawn_tracked(span, shared(state, key, viewer, sink));
        }
        let responses = execute(&self.state, request, viewer, None);
        self.spawn_tracked(span, async move {
            sink.forward(responses).await;
        })
    }
}

/// Keeps a gauge up while an operation lives (finished or stopped), and logs its end.
struct Tracked(prometheus_client::metrics::gauge::Gauge, std::time::Instant);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.dec();
        tracing::info!(
            elapsed_ms = self.1.elapsed().as_secs_f64() * 1000.0,
            "operation ended"
        );
    }
}

/// The async-graphql request for an operation payload (before the per-request data).
pub(super) fn request_of(payload: OperationPayload) -> Request {
    let mut request = Request::new(payload.query);
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

/// Runs `request` on its own as `viewer` (resuming after `resume_after` when a shared member
/// continues alone).
pub(super) fn execute(
    state: &HttpState,
    request: Request,
    viewer: Viewer,
    resume_after: Option<i64>,
) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
    let request = prepare_request(request, &state.app, Authentication::Viewer(viewer));
    let request = match resume_after {
        Some(seq) => request.data(ResumeAfter(seq)),
        None => request,
    };
    state.schema.execute_stream(request)
}

/// A member of a shared group: checks access, forwards the group's serialized payloads, and
/// resumes on its own execution if it falls behind or the group ends early.
pub(super) async fn shared(state: HttpState, key: GroupKey, viewer: Viewer, sink: Sink) {
    if let Err(err) = access::require(&state.app.db, key.project_id, &viewer, Role::Viewer).await {
        sink.end(&Payload::error(err, &["projectEvents"])).await;
        return;
    }
    let share = state
        .multiplexer
        .join(key.clone(), &state.app, &state.schema, &viewer)
        .await;
    let subscriber = Subscriber::User(viewer.user_id.clone());
    let mut messages = share.receiver;
    let mut last = share.last_seq;
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // Behind the group's buffer, or the group ended: continue alone below.
            Err(_) => break,
        };
        let seq = message.event.seq();
        if seq <= last {
            continue;
        }
        if seq > last + 1 {
            break;
        }
        match verdict(&message.event, &subscriber) {
            Verdict::Removed => {
                sink.end(&Payload::error(removed(), &["projectEvents"]))
                    .await;
                return;
            }
            _ if message.payload.is_error() => {
                sink.end(&message.payload).await;
                return;
            }
            Verdict::LastOne => {
                if sink.next(&message.payload).await {
                    sink.complete().await;
                }
                return;
            }
            Verdict::Deliver => {
                if !sink.next(&message.payload).await {
                    return;
                }
                last = seq;
            }
        }
    }
    sink.forward(execute(&state, key.request(), viewer, Some(last)))
        .await;
}

/// Where one operation's messages go.
pub(super) struct Sink {
    pub(super) outgoing: mpsc::Sender<Outgoing>,
    pub(super) id: String,
    pub(super) id_json: String,
    pub(super) protocol: Protocol,
}

impl Sink {
    /// Sends a payload: a result as `next` (legacy `data`); an error as `error`, which ends
    /// the operation. False when the connection is gone or the operation ended.
    async fn next(&self, payload: &Payload) -> bool {
        match payload {
            Payload::Result(json) => self.result(json).await,
            Payload::Errors(errors) => {
                self.errors(errors).await;
                false
            }
        }
    }

    /// Ends the operation with `payload`: an `error` message for errors, else the result
    /// and `complete`.
    async fn end(&self, payload: &Payload) {
        match payload {
            Payload::Errors(errors) => self.errors(errors).await,
            Payload::Result(json) => {
                if self.result(json).await {
                    self.complete().await;
                }
            }
        }
    }

    async fn result(&self, json: &str) -> bool {
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let text = format!(
            "{{\"type\":\"{kind}\",\"id\":{},\"payload\":{json}}}",
            self.id_json
        );
        self.outgoing.send(Outgoing::Text(text)).await.is_ok()
    }

    async fn errors(&self, errors: &str) {
        let text = format!(
            "{{\"type\":\"error\",\"id\":{},\"payload\":{errors}}}",
            self.id_json
        );
        let _ = self.outgoing.send(Outgoing::Text(text)).await;
        self.finished().await;
    }

    /// Sends `complete` and ends.
    async fn complete(&self) {
        let text = format!("{{\"type\":\"complete\",\"id\":{}}}", self.id_json);
        let _ = self.outgoing.send(Outgoing::Text(text)).await;
        self.finished().await;
    }

    async fn finished(&self) {
        let _ = self
            .outgoing
            .send(Outgoing::Finished(self.id.clone()))
            .await;
    }

    /// Forwards every response of an execution, then `complete`.
    pub(super) async fn forward(
        &self,
        mut responses: futures_util::stream::BoxStream<'static, async_graphql::Response>,
    ) {
        while let Some(response) = responses.next().await {
            if !self.next(&Payload::of(response)).await {
                return;
            }
        }
        self.complete().await;
    }
}
