//! A deliberately minimal GraphQL-over-SSE subscriber on a raw TCP socket, the counterpart
//! of [`raw`](crate::raw) for `--transport sse`: one `POST` with `Accept: text/event-stream`,
//! then the chunked body read chunk by chunk with no SSE or JSON parsing (the server writes
//! each event as one chunk).

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An open event stream with its read buffer.
pub struct RawSse {
    stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
}

impl RawSse {
    /// Posts the subscription `query` with `variables` as `token`'s user and reads the
    /// response head.
    pub async fn open(
        port: u16,
        token: &str,
        query: &str,
        variables: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let body = json!({ "query": query, "variables": variables }).to_string();
        let request = format!(
            "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut sse = Self {
            stream,
            buffer: Vec::with_capacity(2048),
            start: 0,
        };
        let header_end = loop {
            sse.fill().await?;
            if let Some(end) = sse.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = String::from_utf8_lossy(&sse.buffer[..header_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
            bail!("not a chunked event stream: {head}");
        }
        sse.start = header_end;
        Ok(sse)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
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

    /// The next chunk of the body: one event, or a heartbeat comment.
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(chunk) = self.chunk()? {
                return Ok(chunk);
            }
            self.fill().await?;
        }
    }

    /// Parses one complete chunk from the buffer, if there is one.
    fn chunk(&mut self) -> anyhow::Result<Option<String>> {
        let data = &self.buffer[self.start..];
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .context("bad chunk size")?;
        if size == 0 {
            bail!("the stream ended");
        }
        let body = line_end + 2;
        if data.len() < body + size + 2 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&data[body..body + size]).into_owned();
        self.start += body + size + 2;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        Ok(Some(text))
    }
}
