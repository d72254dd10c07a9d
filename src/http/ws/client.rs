//! A connection's answers to what its client sends: `connection_init` (authentication and
//! the per-user connection limit), ping, operation starts (checked against the flood limit,
//! the rate limit and the per-connection maximum) and stops.

use std::time::Duration;

use serde_json::{Value, json};

use super::messages::{ClientMessage, Protocol};
use super::socket::Socket;
use super::{Close, Connection, FLOOD_PER_SECOND};
use crate::auth::{self, Viewer};
use crate::error::AppError;
use crate::http::payload::Payload;

impl Connection {
    /// Handles one client message. `Ok(Some(deadline))` sets the token expiry timer.
    pub(super) async fn handle(
        &mut self,
        message: ClientMessage,
        socket: &mut Socket,
    ) -> Result<Option<tokio::time::Instant>, Close> {
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.init_received {
                    return Err(Close(4429, "Too many initialisation requests"));
                }
                self.init_received = true;
                let viewer = self.authenticate(payload.as_ref()).await?;
                let max = self.state.app.config.max_connections_per_user;
                self._slot = Some(
                    self.state
                        .ws_users
                        .acquire(&viewer.user_id, max)
                        .ok_or(Close(4429, "Too many connections for this user"))?,
                );
                let remaining = viewer.remaining();
                if let Some(mut watch) =
                    self.state.app.api_tokens.watch(&self.state.app.db, &viewer)
                {
                    *self.revoked.get_mut() = Some(Box::pin(async move { watch.revoked().await }));
                }
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
                if self.operations.contains_key(&id) {
                    return Err(Close(4409, "Subscriber for this id already exists"));
                }
                if self.flooding() {
                    return Err(Close(4429, "Too many requests"));
                }
                if let Err(limited) = self.state.app.rate_limiter.check(&viewer.rate_key()).await {
                    return refuse(socket, &id, limited).await.map(|()| None);
                }
                if self.operations.len() >= self.max_subscriptions {
                    let error = AppError::TooMany("too many operations on this connection");
                    return refuse(socket, &id, error).await.map(|()| None);
                }
                let operation = self.start(&id, payload, viewer, socket.outbox());
                self.operations.insert(id, operation);
                Ok(None)
            }
            ClientMessage::Complete { id } | ClientMessage::Stop { id } => {
                self.operations.remove(&id);
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
            .authenticate(token)
            .await
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

    /// Whether this connection started more operations in the last second than any client
    /// has reason to (a flood is closed with 4429 rather than answered message by message).
    fn flooding(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.starts.0) >= Duration::from_secs(1) {
            self.starts = (now, 0);
        }
        self.starts.1 += 1;
        self.starts.1 > FLOOD_PER_SECOND
    }
}

/// Sends one JSON message now.
async fn send(socket: &mut Socket, message: &Value) -> std::io::Result<()> {
    socket.send_text(&message.to_string()).await
}

/// Answers an operation start with an `error` message instead of running it.
async fn refuse(socket: &mut Socket, id: &str, error: AppError) -> Result<(), Close> {
    let Payload::Errors(errors) = Payload::error(error, &[]) else {
        return Ok(());
    };
    let id = Value::String(id.to_owned());
    let text = format!(r#"{{"type":"error","id":{id},"payload":{errors}}}"#);
    socket.send_text(&text).await.map_err(|_| Close(1000, ""))
}
