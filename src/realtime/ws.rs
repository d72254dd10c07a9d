//! TaskNest's graphql-ws protocol layer on axum's WebSocket.
//!
//! Speaks `graphql-transport-ws` (the graphql-ws library) and the legacy `graphql-ws`
//! (subscriptions-transport-ws), chosen by `Sec-WebSocket-Protocol`, and executes operations
//! with the async-graphql schema. It exists because async-graphql's own handler closes a
//! rejected init with 1002, replaces a duplicate id silently, has no init timeout and owns
//! the socket, so the server could not close it on token expiry or shutdown.
//!
//! Close codes: 4400 bad message, 4401 subscribe before ack, 4403 forbidden (bad or
//! expired token), 4408 init timeout, 4409 duplicate id, 4429 too many inits, 1001 shutdown.

use std::collections::HashMap;
use std::time::Duration;

use async_graphql::Request;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::auth::{self, Authentication, Viewer};
use crate::entities::project_members::Role;
use crate::error::with_error_codes;
use crate::graphql::prepare_request;
use crate::http::HttpState;
use crate::projects::access;

use super::multiplex::{GroupKey, ResumeAfter};
use super::stream::{Verdict, removed, verdict};

/// The two subprotocols, in the server's order of preference.
pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;
/// Outgoing messages queued per connection before subscriptions wait (and, if they wait
/// too long, catch up from the log).
const OUTGOING_QUEUE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

/// Timing of a connection.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Close with 4408 when `connection_init` has not arrived by then.
    pub init_timeout: Duration,
    /// Interval of server pings (`ping` or legacy `ka`).
    pub keepalive: Duration,
}

/// Accepts the upgrade with deliberately small buffers: tungstenite zero-fills a 128 KiB
/// read buffer per socket by default, which thousands of idle sockets cannot afford.
pub fn upgrade(ws: WebSocketUpgrade, state: HttpState) -> Response {
    let ws = ws
        .protocols(PROTOCOLS)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    let protocol = match ws.selected_protocol().map(|p| p.as_bytes()) {
        Some(b"graphql-ws") => Protocol::Legacy,
        _ => Protocol::TransportWs,
    };
    ws.on_upgrade(move |socket| async move {
        Connection::new(state, protocol).run(socket).await;
    })
}

/// A message from the client, in either protocol.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {},
    Subscribe {
        id: String,
        payload: OperationPayload,
    },
    Complete {
        id: String,
    },
    // Legacy protocol.
    Start {
        id: String,
        payload: OperationPayload,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate {},
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationPayload {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    extensions: Option<HashMap<String, Value>>,
}

/// What subscription tasks hand to the connection.
enum Outgoing {
    Text(String),
    /// The subscription `id` ended on its own.
    Finished(String),
}

/// Why a connection is being closed.
struct Close(u16, &'static str);

struct Connection {
    state: HttpState,
    protocol: Protocol,
    settings: WsSettings,
    init_received: bool,
    viewer: Option<Viewer>,
    subscriptions: HashMap<String, JoinHandle<()>>,
    outgoing_tx: mpsc::Sender<Outgoing>,
    outgoing_rx: mpsc::Receiver<Outgoing>,
}

impl Connection {
    fn new(state: HttpState, protocol: Protocol) -> Self {
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let settings = state.app.ws;
        Self {
            state,
            protocol,
            settings,
            init_received: false,
            viewer: None,
            subscriptions: HashMap::new(),
            outgoing_tx,
            outgoing_rx,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let shutdown = self.state.app.shutdown.clone();
        let init_deadline = tokio::time::sleep(self.settings.init_timeout);
        tokio::pin!(init_deadline);
        let expiry = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
        tokio::pin!(expiry);
        let mut keepalive = tokio::time::interval(self.settings.keepalive);
        keepalive.reset();

        let close = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Close(1001, "server shutting down"),
                () = &mut init_deadline, if self.viewer.is_none() => {
                    break Close(4408, "Connection initialisation timeout");
                }
                () = &mut expiry, if self.viewer.is_some() => break Close(4403, "Token expired"),
                _ = keepalive.tick(), if self.viewer.is_some() => {
                    let ping = match self.protocol {
                        Protocol::TransportWs => json!({ "type": "ping" }),
                        Protocol::Legacy => json!({ "type": "ka" }),
                    };
                    if send(&mut socket, &ping).await.is_err() {
                        break Close(1000, "");
                    }
                }
                Some(out) = self.outgoing_rx.recv() => match out {
                    Outgoing::Text(text) => {
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break Close(1000, "");
                        }
                    }
                    Outgoing::Finished(id) => {
                        if self.subscriptions.get(&id).is_some_and(JoinHandle::is_finished) {
                            self.subscriptions.remove(&id);
                        }
                    }
                },
                incoming = socket.recv() => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => break Close(1000, ""),
                    };
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Close(_) => break Close(1000, ""),
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Binary(_) => break Close(4400, "Binary frames are not supported"),
                    };
                    let parsed = match serde_json::from_str::<ClientMessage>(text.as_str()) {
                        Ok(parsed) => parsed,
                        Err(_) => break Close(4400, "Invalid message received"),
                    };
                    match self.handle(parsed, &mut socket).await {
                        Ok(Some(deadline)) => expiry.as_mut().reset(deadline),
                        Ok(None) => {}
                        Err(close) => break close,
                    }
                }
            }
        };
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        if close.0 != 1000 || !close.1.is_empty() {
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: close.0,
                    reason: close.1.into(),
                })))
                .await;
        }
        let _ = socket.send(Message::Close(None)).await;
    }

    /// Handles one client message. `Ok(Some(deadline))` sets the token expiry timer.
    async fn handle(
        &mut self,
        message: ClientMessage,
        socket: &mut WebSocket,
    ) -> Result<Option<tokio::time::Instant>, Close> {
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.init_received {
                    return Err(Close(4429, "Too many initialisation requests"));
                }
                self.init_received = true;
                let viewer = self.authenticate(payload.as_ref()).await?;
                let now = auth::unix_now();
                let remaining =
                    Duration::from_secs(viewer.expires_at.saturating_sub(now).max(0) as u64);
                self.viewer = Some(viewer);
                send(socket, &json!({ "type": "connection_ack" }))
                    .await
                    .map_err(|_| Close(1000, ""))?;
                Ok(Some(tokio::time::Instant::now() + remaining))
            }
            ClientMessage::Ping { payload } => {
                if self.protocol == Protocol::TransportWs {
                    let mut pong = json!({ "type": "pong" });
                    if let Some(payload) = payload {
                        pong["payload"] = payload;
                    }
                    send(socket, &pong).await.map_err(|_| Close(1000, ""))?;
                }
                Ok(None)
            }
            ClientMessage::Pong {} => Ok(None),
            ClientMessage::Subscribe { id, payload } | ClientMessage::Start { id, payload } => {
                let Some(viewer) = self.viewer.clone() else {
                    return Err(Close(4401, "Unauthorized"));
                };
                if self
                    .subscriptions
                    .get(&id)
                    .is_some_and(|task| !task.is_finished())
                {
                    return Err(Close(4409, "Subscriber for this id already exists"));
                }
                let task = self.start(id.clone(), payload, viewer);
                self.subscriptions.insert(id, task);
                Ok(None)
            }
            ClientMessage::Complete { id } | ClientMessage::Stop { id } => {
                if let Some(task) = self.subscriptions.remove(&id) {
                    task.abort();
                }
                Ok(None)
            }
            ClientMessage::ConnectionTerminate {} => Err(Close(1000, "")),
        }
    }

    /// Reads the token from the init payload (`authorization`, `Authorization` or `token`,
    /// with or without `Bearer `) and refreshes the user row.
    async fn authenticate(&self, payload: Option<&Value>) -> Result<Viewer, Close> {
        let token = payload
            .and_then(|p| {
                ["authorization", "Authorization", "token"]
                    .iter()
                    .find_map(|key| p.get(*key).and_then(Value::as_str))
            })
            .and_then(auth::bearer_token)
            .ok_or(Close(4403, "Forbidden"))?;
        let viewer = self
            .state
            .app
            .keys
            .verify(token)
            .map_err(|_| Close(4403, "Forbidden"))?;
        if let Err(err) = self
            .state
            .app
            .users
            .ensure(&self.state.app.db, &viewer)
            .await
        {
            tracing::error!(error = %err, user = %viewer.user_id, "cannot refresh user row");
            return Err(Close(4500, "Internal error"));
        }
        Ok(viewer)
    }

    /// Runs one operation, forwarding its results as `next` (or legacy `data`) messages.
    /// A live `projectEvents` subscription joins a shared execution group instead.
    fn start(&self, id: String, payload: OperationPayload, viewer: Viewer) -> JoinHandle<()> {
        let sink = Sink {
            outgoing: self.outgoing_tx.clone(),
            id_json: serde_json::to_string(&id).unwrap_or_else(|_| "\"\"".to_owned()),
            id,
            protocol: self.protocol,
        };
        let variables = payload.variables.clone().unwrap_or(Value::Null);
        if let Some(key) = GroupKey::of(
            &payload.query,
            &variables,
            payload.operation_name.as_deref(),
        ) {
            let state = self.state.clone();
            return tokio::spawn(shared(state, key, payload, viewer, sink));
        }
        let request = build_request(&self.state, payload, viewer, None);
        let responses = self.state.schema.execute_stream(request);
        tokio::spawn(async move {
            sink.forward(responses).await;
        })
    }
}

/// The async-graphql request for an operation payload.
fn build_request(
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
async fn shared(
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
struct Sink {
    outgoing: mpsc::Sender<Outgoing>,
    id: String,
    id_json: String,
    protocol: Protocol,
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
    async fn forward(
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

async fn send(socket: &mut WebSocket, message: &Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_string().into())).await
}
