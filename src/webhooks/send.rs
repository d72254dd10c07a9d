//! One HTTP attempt: the signed POST, its outcome, and nothing followed or read beyond a
//! small cap.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};

use super::{address, signing};

/// How much of a response body is read (the rest is dropped with the connection).
const BODY_CAP: usize = 1024;
/// How much of it the delivery log keeps in `error`.
const ERROR_SNIPPET: usize = 200;

/// What came of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered { status: u16 },
    /// 410 Gone: the receiver wants no more.
    Gone,
    /// Anything else: another status, a timeout, a refused or failed connection.
    Failed { status: Option<u16>, error: String },
}

impl Outcome {
    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } => Some(*status),
            Self::Gone => Some(410),
            Self::Failed { status, .. } => *status,
        }
    }

    /// The label of the deliveries metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Gone => "gone",
            Self::Failed { .. } => "failed",
        }
    }
}

/// A message ready to send.
pub struct Message<'a> {
    pub url: &'a str,
    pub id: &'a str,
    pub body: &'a [u8],
    pub secrets: &'a [&'a str],
}

/// The client deliveries use: no redirects, no proxies from the environment, addresses
/// checked after resolution.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(address::GuardedResolver::new(allow_private))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// Sends `message` once; returns the outcome and how long it took.
pub async fn attempt(
    client: &reqwest::Client,
    allow_private: bool,
    timeout: Duration,
    message: &Message<'_>,
) -> (Outcome, Duration) {
    let started = Instant::now();
    // Address literals never reach the resolver: check them here, at every attempt.
    if let Err(err) = address::parse(message.url, allow_private) {
        return (
            Outcome::Failed {
                status: None,
                error: format!("refused: {err}"),
            },
            started.elapsed(),
        );
    }
    let timestamp = chrono::Utc::now().timestamp();
    let signature = signing::signature(message.secrets, message.id, timestamp, message.body);
    let request = client
        .post(message.url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static(concat!("TaskNest-Webhooks/", env!("CARGO_PKG_VERSION"))),
        )
        .header("webhook-id", message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(message.body.to_vec());
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let snippet = read_capped(response).await;
            match status {
                200..=299 => Outcome::Delivered { status },
                410 => Outcome::Gone,
                _ => Outcome::Failed {
                    status: Some(status),
                    error: if snippet.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {snippet}")
                    },
                },
            }
        }
        Err(err) if err.is_timeout() => Outcome::Failed {
            status: None,
            error: format!("no answer within {}", humantime::format_duration(timeout)),
        },
        Err(err) => Outcome::Failed {
            status: None,
            error: describe(&err.without_url()),
        },
    };
    (outcome, started.elapsed())
}

/// The first bytes of the body, as text, at most [`ERROR_SNIPPET`] characters.
async fn read_capped(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_CAP {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(BODY_CAP);
    String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(ERROR_SNIPPET)
        .collect()
}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(400).collect()
}
