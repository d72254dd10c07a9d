//! TaskNest's graphql-ws protocol layer, on a WebSocket of its own (`upgrade`, `socket`).
//!
//! Speaks `graphql-transport-ws` (the graphql-ws library) and the legacy `graphql-ws`
//! (subscriptions-transport-ws), chosen by `Sec-WebSocket-Protocol`, and executes operations
//! with the async-graphql schema. It exists because async-graphql's own handler closes a
//! rejected init with 1002, replaces a duplicate id silently, has no init timeout and owns
//! the socket, so the server could not close it on token expiry or shutdown.
//!
//! Close codes: 4400 bad message, 4401 subscribe before ack, 4403 forbidden (bad,
//! expired or revoked token), 4408 init timeout, 4409 duplicate id, 4429 too many inits, connections
//! or operation starts, 4500 the server could not set the connection up (its cause is
//! logged), 1001 shutdown.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use axum::response::Response;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use sync_wrapper::SyncWrapper;
use tokio_stream::StreamMap;
use tracing::Instrument;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;

use crate::auth::Viewer;

use super::HttpState;
use connections::ConnectionSlot;
use gate::Gate;
use messages::{ClientMessage, Protocol};
use operation::{Frame, Operation};
use socket::Socket;
pub use upgrade::Upgrade;

mod client;
pub mod connections;
mod gate;
mod messages;
mod operation;
pub(crate) mod socket;
mod upgrade;

/// The two subprotocols, in the server's order of preference.
pub const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 64 * 1024;
/// Operation starts per second above which a connection is closed with 4429.
const FLOOD_PER_SECOND: u32 = 100;
/// Most messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Timing of a connection.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Close with 4408 when `connection_init` has not arrived by then.
    pub init_timeout: Duration,
    /// Interval of server pings (`ping` or legacy `ka`).
    pub keepalive: Duration,
}

/// Answers a checked upgrade request with 101 and serves the connection once hyper hands
/// it over, on the fan-out's runtime, where everything it starts runs too.
pub fn upgrade(upgrade: Upgrade, state: HttpState, request_id: String) -> Response {
    let response = upgrade.response();
    let protocol = match upgrade.protocol {
        Some("graphql-ws") => Protocol::Legacy,
        _ => Protocol::TransportWs,
    };
    let runtime = state.app.realtime.runtime.clone();
    drop(runtime.spawn(async move {
        let upgraded = match upgrade.on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "WebSocket upgrade failed");
                return;
            }
        };
        let socket = Socket::new(
            hyper_util::rt::TokioIo::new(upgraded),
            socket::config(MAX_MESSAGE),
        );
        Connection::new(state, protocol, request_id)
            .run(socket)
            .await;
    }));
    response
}

/// The gates of a connection's loop, one per branch that can wake it.
struct Gates {
    /// Shutdown, the timer and token revocation: rare, so they share one gate.
    control: Gate,
    operations: Gate,
    socket: Gate,
}

impl Default for Gates {
    fn default() -> Self {
        let [control, operations, socket] = Gate::set();
        Self {
            control,
            operations,
            socket,
        }
    }
}

/// What a connection wakes for, other than a frame to send or a client message.
enum Control {
    Shutdown,
    Timer,
    Revoked,
}

/// Why a connection is being closed.
struct Close(u16, &'static str);

/// When a connection must next act on its own: before `connection_init`, its timeout; after,
/// the next keepalive ping or the token's expiry, whichever is first.
struct Timers {
    keepalive: Duration,
    init: tokio::time::Instant,
    expiry: Option<tokio::time::Instant>,
    ping: Option<tokio::time::Instant>,
}

impl Timers {
    fn next(&self) -> tokio::time::Instant {
        match (self.ping, self.expiry) {
            (Some(ping), Some(expiry)) => ping.min(expiry),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => self.init,
        }
    }
}

struct Connection {
    state: HttpState,
    protocol: Protocol,
    settings: WsSettings,
    max_subscriptions: usize,
    /// Operation starts in the current one-second window, to spot a flood.
    starts: (tokio::time::Instant, u32),
    init_received: bool,
    viewer: Option<Viewer>,
    /// Resolves when the viewer's API token is revoked (none for a session). Kept across
    /// the loop's turns, so that its place among the token's watchers is kept too.
    revoked: SyncWrapper<Option<BoxFuture<'static, ()>>>,
    /// This connection's place in its user's connection count.
    _slot: Option<ConnectionSlot>,
    /// The upgrade request's `x-request-id`, carried by every operation's span.
    request_id: String,
    /// Entered while a client message is handled (operations started then are its
    /// children), not on every wake-up: a delivery would pay for it each time.
    span: tracing::Span,
    /// The running operations by id, polled by this connection's task. While the socket
    /// cannot take more, they are not polled: a shared subscription then falls behind its
    /// group and catches up from the log.
    operations: StreamMap<String, Operation>,
}

impl Connection {
    fn new(state: HttpState, protocol: Protocol, request_id: String) -> Self {
        let settings = state.ws;
        let max_subscriptions = state.app.config.max_subscriptions as usize;
        Self {
            state,
            protocol,
            settings,
            max_subscriptions,
            starts: (tokio::time::Instant::now(), 0),
            init_received: false,
            viewer: None,
            revoked: SyncWrapper::new(None),
            _slot: None,
            span: tracing::info_span!("websocket", request_id = %request_id),
            request_id,
            operations: StreamMap::new(),
        }
    }

    async fn run(mut self, mut socket: Socket) {
        let metrics = self.state.app.metrics.clone();
        metrics.ws_connections.inc();
        self.serve(&mut socket).await;
        metrics.ws_connections.dec();
    }

    async fn serve(&mut self, socket: &mut Socket) {
        // Made once, not on every turn of the loop (each would register a new waiter).
        let token = self.state.app.shutdown.clone();
        let shutdown = token.cancelled();
        tokio::pin!(shutdown);
        // One timer for the init timeout, then for the next ping or the token's expiry,
        // whichever comes first: every connection holds it for its whole life, so one
        // timer entry instead of three.
        let mut timers = Timers {
            keepalive: self.settings.keepalive,
            init: tokio::time::Instant::now() + self.settings.init_timeout,
            expiry: None,
            ping: None,
        };
        let timer = tokio::time::sleep_until(timers.next());
        tokio::pin!(timer);

        // Only a branch that was woken (or was ready last time) is polled: see `gate`.
        let gates = Gates::default();
        let close = loop {
            // Biased: shutdown, timer and revocation first (behind their gate they cost
            // nothing on the common wake, a frame to send), then a ready frame before the
            // socket, which is still read whenever the operations have nothing ready.
            tokio::select! {
                biased;
                control = gates.control.guard(std::future::poll_fn(|cx| {
                    if shutdown.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Control::Shutdown);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Control::Timer);
                    }
                    let revoked = self
                        .revoked
                        .get_mut()
                        .as_mut()
                        .is_some_and(|revoked| revoked.as_mut().poll(cx).is_ready());
                    if revoked {
                        Poll::Ready(Control::Revoked)
                    } else {
                        Poll::Pending
                    }
                })) => match control {
                    Control::Shutdown => break Close(1001, "server shutting down"),
                    Control::Revoked => break Close(4403, "Token revoked"),
                    Control::Timer => {
                        let now = tokio::time::Instant::now();
                        if self.viewer.is_none() {
                            break Close(4408, "Connection initialisation timeout");
                        }
                        if timers.expiry.is_some_and(|expiry| expiry <= now) {
                            break Close(4403, "Token expired");
                        }
                        let ping = match self.protocol {
                            Protocol::TransportWs => r#"{"type":"ping"}"#,
                            Protocol::Legacy => r#"{"type":"ka"}"#,
                        };
                        if socket.send_text(ping).await.is_err() {
                            break Close(1000, "");
                        }
                        timers.ping = Some(now + timers.keepalive);
                        timer.as_mut().reset(timers.next());
                    }
                },
                Some((id, frame)) = gates.operations.guard(self.operations.next()), if !self.operations.is_empty() => {
                    if self.write_ready(socket, &gates.operations, id, frame).await.is_err() {
                        break Close(1000, "");
                    }
                }
                incoming = gates.socket.guard(socket.next()) => {
                    let message = match incoming {
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => break Close(1000, ""),
                    };
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Close(_) => break Close(1000, ""),
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                        Message::Binary(_) => break Close(4400, "Binary frames are not supported"),
                    };
                    let parsed = match serde_json::from_str::<ClientMessage>(text.as_str()) {
                        Ok(parsed) => parsed,
                        Err(_) => break Close(4400, "Invalid message received"),
                    };
                    // Boxed: handling a message (authentication, access checks) needs far
                    // more state than waiting does, and an idle connection should not carry
                    // that space for its whole life.
                    let span = self.span.clone();
                    let handled = Box::pin(self.handle(parsed, socket)).instrument(span).await;
                    // Handling may have added an operation, a token watch or a new
                    // deadline, which have registered no waker yet.
                    gates.operations.open();
                    gates.control.open();
                    match handled {
                        Ok(Some(deadline)) => {
                            timers.expiry = Some(deadline);
                            timers.ping = Some(tokio::time::Instant::now() + timers.keepalive);
                            timer.as_mut().reset(timers.next());
                        }
                        Ok(None) => {}
                        Err(close) => break close,
                    }
                }
            }
        };
        // Dropping the operations stops them (and leaves their shared groups).
        self.operations = StreamMap::new();
        Box::pin(close_handshake(socket, close)).await;
    }

    /// Writes the frame of operation `id`, and the frames of any operation that already has
    /// one ready, then flushes once: an event for several subscriptions, or a connection
    /// catching up, costs one system call rather than one per message.
    async fn write_ready(
        &mut self,
        socket: &mut Socket,
        gate: &Gate,
        id: String,
        frame: Frame,
    ) -> std::io::Result<()> {
        let mut next = Some((id, frame));
        let mut written = 0;
        while let Some((id, frame)) = next.take() {
            if frame.last {
                // Over once written: the client may reuse the id as soon as it reads this.
                self.operations.remove(&id);
            }
            socket.queue_text(&frame.text.parts());
            written += 1;
            // Bounded, so a connection that always has more to send still reads its socket.
            // Polled with the task's waker through the gate: a pending answer registers the
            // wake-up the connection's loop then waits for, without polling again.
            if written < WRITE_BATCH {
                let operations = &mut self.operations;
                let polled = std::future::poll_fn(|cx| {
                    Poll::Ready(gate.poll(cx, |cx| operations.poll_next_unpin(cx)))
                })
                .await;
                if let Poll::Ready(ready) = polled {
                    next = ready;
                }
            }
        }
        socket.flush().await
    }
}

/// Sends our Close, then reads (and drops) what the client still sends until its Close, so
/// that unread data does not turn our close into a reset that hides the close code.
async fn close_handshake(socket: &mut Socket, close: Close) {
    let frame = (close.0 != 1000 || !close.1.is_empty()).then(|| CloseFrame {
        code: close.0.into(),
        reason: close.1.into(),
    });
    if socket.close(frame).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}
