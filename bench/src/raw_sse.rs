//! A deliberately minimal GraphQL-over-SSE subscriber on a raw TCP socket, the counterpart
//! of [`raw`](crate::raw) for `--transport sse`: one `POST` with `Accept: text/event-stream`,
//! then the chunked body is read chunk by chunk by [`readers`](crate::readers), with no SSE
//! or JSON parsing (the server writes each event as one chunk).

use anyhow::bail;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::raw::Inbox;
use crate::readers::{Framing, Subscriber};

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

    /// The stream for a reader thread of [`readers`](crate::readers).
    pub fn into_subscriber(self) -> anyhow::Result<Subscriber> {
        self.inbox.into_subscriber(Framing::Sse)
    }
}
