//! A minimal Server-Sent Events reader over reqwest, for the GraphQL-over-SSE tests.

use std::time::Duration;

use serde_json::Value;

use super::ws::WAIT;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
}

impl SseStream {
    /// Wraps a response that is an event stream.
    pub fn new(response: reqwest::Response) -> Self {
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Self {
            response,
            buffer: String::new(),
            content_type,
            headers,
        }
    }

    /// The next event (comments skipped); `None` once the server ended the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event within the wait");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The next event if one comes within `millis`.
    pub async fn next_within(&mut self, millis: u64) -> Option<SseEvent> {
        tokio::time::timeout(Duration::from_millis(millis), self.next())
            .await
            .ok()
            .flatten()
    }
}

fn parse(block: &str) -> Option<SseEvent> {
    let mut event = String::from("message");
    let mut id = None;
    let mut data = Vec::new();
    let mut any = false;
    for line in block.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => event = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            _ => {}
        }
    }
    if !any {
        return None;
    }
    let data = data.join("\n");
    Some(SseEvent {
        event,
        id,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}
