//! A deliberately minimal graphql-ws client on a raw TCP socket. The bench shares two cores
//! with the servers it measures, so each received message must cost as little as possible:
//! no frame library, no JSON parsing, just the frame header and a substring scan.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::readers::{Framing, Subscriber};

/// A connection's socket and the bytes read from it but not yet used.
pub struct Inbox {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
}

impl Inbox {
    /// Connects to the server on `port` (Nagle off: messages are small and timed).
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(2048),
            start: 0,
        })
    }

    /// Reads what the socket has; an error once it is closed.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// The bytes not used yet.
    pub fn unread(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Marks `n` more bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
    }

    /// The connection, with the bytes not used yet, for a reader thread of
    /// [`readers`](crate::readers).
    pub fn into_subscriber(self, framing: Framing) -> anyhow::Result<Subscriber> {
        let unread = self.unread().to_vec();
        Ok(Subscriber {
            stream: self.stream.into_std()?,
            unread,
            framing,
        })
    }

    /// Reads until the response head is complete; returns it and consumes it.
    pub async fn head(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.unread().windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.unread()[..end + 4]).into_owned();
                self.consume(end + 4);
                return Ok(head);
            }
            self.fill().await?;
        }
    }
}

/// An upgraded connection with its read buffer.
pub struct RawSocket {
    inbox: Inbox,
}

impl RawSocket {
    /// Connects, upgrades with `graphql-transport-ws`, initialises with `token` and
    /// subscribes to `query` with `variables`.
    pub async fn open(
        port: u16,
        token: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let mut inbox = Inbox::connect(port).await?;
        let request = format!(
            "GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        );
        inbox.stream.write_all(request.as_bytes()).await?;
        let head = inbox.head().await?;
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {head}");
        }
        let mut socket = Self { inbox };
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        socket.send(&init.to_string()).await?;
        let ack = tokio::time::timeout(Duration::from_secs(30), socket.next_text())
            .await
            .context("connection_ack timeout")??;
        if !ack.contains("connection_ack") {
            bail!("no connection_ack: {ack}");
        }
        let subscribe = json!({ "type": "subscribe", "id": "1", "payload": { "query": query, "variables": variables } });
        socket.send(&subscribe.to_string()).await?;
        Ok(socket)
    }

    /// The connection for a reader thread of [`readers`](crate::readers).
    pub fn into_subscriber(self) -> anyhow::Result<Subscriber> {
        self.inbox.into_subscriber(Framing::Ws)
    }

    /// Sends one masked text frame (clients must mask; a zero key keeps it cheap).
    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let bytes = text.as_bytes();
        let mut frame = Vec::with_capacity(bytes.len() + 14);
        frame.push(0x81);
        match bytes.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(bytes);
        self.inbox.stream.write_all(&frame).await?;
        Ok(())
    }

    /// The next text frame's payload (control frames are skipped).
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some((opcode, payload)) = self.frame() {
                match opcode {
                    0x1 => return Ok(payload),
                    0x8 => bail!("closed by the server"),
                    _ => continue,
                }
            }
            self.inbox.fill().await?;
        }
    }

    /// Parses one complete frame from the buffer, if there is one.
    fn frame(&mut self) -> Option<(u8, String)> {
        let data = self.inbox.unread();
        if data.len() < 2 {
            return None;
        }
        let opcode = data[0] & 0x0f;
        let (len, offset) = match data[1] & 0x7f {
            126 if data.len() >= 4 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
            127 if data.len() >= 10 => (
                u64::from_be_bytes(data[2..10].try_into().ok()?) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if data.len() < offset + len {
            return None;
        }
        let payload = String::from_utf8_lossy(&data[offset..offset + len]).into_owned();
        self.inbox.consume(offset + len);
        Some((opcode, payload))
    }
}
