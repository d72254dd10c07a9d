//! A graphql-ws client on tokio-tungstenite, speaking either subprotocol.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message before failing.
pub const WAIT: Duration = Duration::from_secs(15);

/// One WebSocket connection to `/graphql`.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Opens the socket with `protocol` in `Sec-WebSocket-Protocol`; sends nothing.
    pub async fn connect(addr: SocketAddr, protocol: &str) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("TCP connects");
        Self::connect_over(tcp, addr, protocol).await
    }

    /// Like [`connect`](Self::connect), with a receive buffer of a few KiB that the kernel
    /// does not grow: when this client stops reading, the server's writes soon back up.
    pub async fn connect_with_small_window(addr: SocketAddr, protocol: &str) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let tcp = socket.connect(addr).await.expect("TCP connects");
        Self::connect_over(tcp, addr, protocol).await
    }

    async fn connect_over(tcp: TcpStream, addr: SocketAddr, protocol: &str) -> Self {
        let mut request = format!("ws://{addr}/graphql")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).expect("header"),
        );
        let (socket, response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp))
                .await
                .expect("WebSocket connects");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol),
            "the server picks the client's subprotocol"
        );
        Self { socket }
    }

    /// Sends `connection_init` with `payload`; returns the answer.
    pub async fn init(&mut self, payload: Value) -> Value {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        self.next().await.expect("an answer to connection_init")
    }

    /// Sends a JSON message.
    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    /// Sends raw frames (for protocol tests).
    pub async fn send_raw(&mut self, message: Message) {
        self.socket.send(message).await.expect("send");
    }

    /// Starts an operation (`subscribe`).
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": id, "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next protocol message that is not a keep-alive; `None` once the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_or_close().await.ok()
    }

    /// The next message that is not a keep-alive, or the close code once the server closed.
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        self.next_message(true, WAIT).await
    }

    /// Like [`next`](Self::next), for a socket that may rightly stay silent longer than the
    /// usual wait (while a test sets up something big around it).
    pub async fn next_waiting(&mut self, wait: Duration) -> Option<Value> {
        self.next_message(true, wait).await.ok()
    }

    /// The next text message (keep-alives too unless `skip_keepalive`), or the close code.
    async fn next_message(
        &mut self,
        skip_keepalive: bool,
        wait: Duration,
    ) -> Result<Value, Option<u16>> {
        loop {
            let frame = tokio::time::timeout(wait, self.socket.next())
                .await
                .expect("a message within the wait");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if skip_keepalive && (value["type"] == "ping" || value["type"] == "ka") {
                        continue;
                    }
                    return Ok(value);
                }
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code.into())),
                None | Some(Err(_)) => return Err(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next text frame that is not a keep-alive, exactly as the server wrote it.
    pub async fn next_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a message within the wait");
            if let Some(Ok(Message::Text(text))) = frame {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if value["type"] != "ping" && value["type"] != "ka" {
                    return text.as_str().to_owned();
                }
            } else {
                panic!("expected a text frame, got {frame:?}");
            }
        }
    }

    /// The next `projectEvents` payload of subscription `id` (panics on anything else).
    pub async fn next_event(&mut self, id: &str) -> Value {
        let message = self.next().await.expect("an event");
        assert_eq!(message["id"], id, "{message}");
        assert!(
            message["type"] == "next" || message["type"] == "data",
            "{message}"
        );
        message["payload"]["data"]["projectEvents"].clone()
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the socket closes within the wait");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => return Some(frame.code.into()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

impl WsClient {
    /// The next event of `id` if one comes within `millis`.
    pub async fn next_event_within(&mut self, id: &str, millis: u64) -> Option<Value> {
        let message = self.next_within(Duration::from_millis(millis)).await?;
        assert_eq!(message["id"], id, "{message}");
        Some(message["payload"]["data"]["projectEvents"].clone())
    }

    /// Any message arriving within half a second (expected: none).
    pub async fn next_event_or_nothing(&mut self) -> Option<Value> {
        self.next_within(Duration::from_millis(500)).await
    }

    /// The next message that is not a keep-alive, if one arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        // The inner wait outlasts the outer one, so silence is `None`, not a panic.
        let next = self.next_message(true, wait + Duration::from_secs(1));
        tokio::time::timeout(wait, next).await.ok()?.ok()
    }
}

impl WsClient {
    /// The `type` of the next text message, keep-alives included.
    /// The next WebSocket frame of any kind, as the client library decoded it.
    pub async fn next_frame(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.socket.next())
            .await
            .expect("a frame within the wait")
            .expect("the socket is open")
            .expect("a well-formed frame")
    }

    pub async fn next_raw_type(&mut self) -> Option<String> {
        let message = self.next_message(false, WAIT).await.ok()?;
        message["type"].as_str().map(str::to_owned)
    }
}
