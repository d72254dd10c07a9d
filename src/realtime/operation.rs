//! One operation on a WebSocket: building its request, forwarding its responses, and the
//! shared-execution member path for live `projectEvents` subscriptions.

use async_graphql::Request;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::multiplex::{GroupKey, ResumeAfter};
use super::stream::{Verdict, removed, verdict};
use super::ws::{OperationPayload, Outgoing, Protocol};
use crate::auth::{Authentication, Viewer};
use crate::entities::project_members::Role;
use crate::error::with_error_codes;
use crate::graphql::prepare_request;
use crate::http::HttpState;
use crate::projects::access;

/// The async-graphql request for an operation payload.
pub(super) fn build_request(
    state: &HttpState,
    payload: OperationPayload,
    viewer: Viewer,
    resume_after: Option<i64>,
) -> Request {
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
    let request = prepare_request(request, &state.app, Authentication::Viewer(viewer));
    match resume_after {
        Some(seq) => request.data(ResumeAfter(seq)),
        None => request,
    }
}

/// A member of a shared group: checks access, forwards the group's serialized payloads, and
/// resumes on its own execution if it falls behind or the group ends early.
pub(super) async fn shared(
    state: HttpState,
    key: GroupKey,
    payload: OperationPayload,
    viewer: Viewer,
    sink: Sink,
) {
    if let Err(err) =
        access::require(&state.app.db, key.project_id, &viewer.user_id, Role::Viewer).await
    {
        let mut error =
            async_graphql::Error::from(err).into_server_error(async_graphql::Pos::default());
        error.path = vec![async_graphql::PathSegment::Field(
            "projectEvents".to_owned(),
        )];
        let errors = serde_json::to_string(&[error]).unwrap_or_else(|_| "[]".to_owned());
        sink.error(&errors).await;
        return;
    }
    let share = state
        .multiplexer
        .join(key, &state.app, &state.schema, &viewer)
        .await;
    let mut messages = share.messages;
    let mut last = share.start;
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
        match verdict(&message.event, &viewer.user_id) {
            Verdict::Removed => {
                let error = async_graphql::Error::from(removed())
                    .into_server_error(async_graphql::Pos::default());
                sink.error(&serde_json::to_string(&[error]).unwrap_or_default())
                    .await;
                return;
            }
            _ if message.failed => {
                sink.error(&message.payload).await;
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
    let request = build_request(&state, payload, viewer, Some(last));
    sink.forward(state.schema.execute_stream(request)).await;
}

/// Where one operation's messages go.
pub(super) struct Sink {
    pub(super) outgoing: mpsc::Sender<Outgoing>,
    pub(super) id: String,
    pub(super) id_json: String,
    pub(super) protocol: Protocol,
}

impl Sink {
    /// Sends a `next` (legacy `data`) message around an already serialized payload.
    async fn next(&self, payload: &str) -> bool {
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        let text = format!(
            "{{\"type\":\"{kind}\",\"id\":{},\"payload\":{payload}}}",
            self.id_json
        );
        self.outgoing.send(Outgoing::Text(text)).await.is_ok()
    }

    /// Sends an `error` message (the payload is a serialized errors array) and ends.
    async fn error(&self, errors: &str) {
        let text = format!(
            "{{\"type\":\"error\",\"id\":{},\"payload\":{errors}}}",
            self.id_json
        );
        let _ = self.outgoing.send(Outgoing::Text(text)).await;
        let _ = self
            .outgoing
            .send(Outgoing::Finished(self.id.clone()))
            .await;
    }

    /// Sends `complete` and ends.
    async fn complete(&self) {
        let text = format!("{{\"type\":\"complete\",\"id\":{}}}", self.id_json);
        let _ = self.outgoing.send(Outgoing::Text(text)).await;
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
        while let Some(mut response) = responses.next().await {
            with_error_codes(&mut response.errors);
            if response.data == async_graphql::Value::Null && !response.errors.is_empty() {
                self.error(&serde_json::to_string(&response.errors).unwrap_or_default())
                    .await;
                return;
            }
            let payload = serde_json::to_string(&response).unwrap_or_default();
            if !self.next(&payload).await {
                return;
            }
        }
        self.complete().await;
    }
}
