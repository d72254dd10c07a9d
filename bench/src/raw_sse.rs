//! A deliberately minimal GraphQL-over-SSE subscriber on a raw TCP socket, the counterpart
//! of [`raw`](crate::raw) for `--transport sse`: one `POST` with `Accept: text/event-stream`,
//! then the chunked body read chunk by chunk with no SSE or JSON parsing (the server writes
//! each event as one chunk).

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::raw::Inbox;

/// An open event stream with its read buffer.
pub struct RawSse {
    inbox: Inbox,
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
        let mut inbox = Inbox::connect(port).await?;
        let body = json!({ "query": query, "variables": variables }).to_string();
        let request = format!(
            "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
             Accept: text/event-stream\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        inbox.stream.write_all(request.as_bytes()).await?;
        let head = inbox.head().await?.to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
            bail!("not a chunked event stream: {head}");
        }
        Ok(Self { inbox })
    }

    /// The next chunk of the body: one event, or a heartbeat comment.
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(chunk) = self.chunk()? {
                return Ok(chunk);
            }
            self.inbox.fill().await?;
        }
    }

    /// Parses one complete chunk from the buffer, if there is one.
    fn chunk(&mut self) -> anyhow::Result<Option<String>> {
        let data = self.inbox.unread();
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
        self.inbox.consume(body + size + 2);
        Ok(Some(text))
    }
}
