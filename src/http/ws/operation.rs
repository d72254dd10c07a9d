//! One operation on a WebSocket: starting it (in a span, counted while it lives), building
//! its request, and framing its results (shared or its own, see
//! [`deliveries`](crate::http::deliveries)) as graphql-ws messages.

use async_graphql::Request;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::messages::{OperationPayload, Outgoing, Protocol};
use crate::auth::{Authentication, Viewer};
use crate::http::deliveries::{self, Delivery};
use crate::http::payload::Payload;

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
        let deliveries = deliveries::run(
            &self.state,
            request_of(payload),
            Authentication::Viewer(viewer),
            None,
        );
        self.spawn_tracked(span, async move {
            sink.forward(deliveries).await;
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

    /// Forwards every result of an operation, then `complete`.
    pub(super) async fn forward(&self, mut deliveries: BoxStream<'static, Delivery>) {
        while let Some(delivery) = deliveries.next().await {
            if !self.next(&delivery.payload).await {
                return;
            }
        }
        self.complete().await;
    }
}
