//! A webhook receiver on a free loopback port: it records every request (headers and body)
//! and answers as the test scripts it, by the request's number.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: Vec<u8>,
    pub body: Value,
    /// What the receiver answers (after its scripted delay).
    pub status: u16,
}

impl Received {
    /// The event's seq.
    pub fn seq(&self) -> i64 {
        self.body["seq"].as_i64().expect("seq")
    }

    /// Whether one of the signatures is `secret`'s, as the Standard Webhooks libraries check.
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
            .expect("base64 secret");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.raw);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.signature.split(' ').any(|s| s == expected)
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

impl Reply {
    pub const OK: Reply = Reply {
        status: 200,
        delay: Duration::ZERO,
    };

    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
        }
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    count: Arc<std::sync::atomic::AtomicUsize>,
    script: Script,
}

/// A running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> Self {
        Self::scripted(|_| Reply::OK).await
    }

    /// A receiver answering request `n` (0-based) with `script(n)`.
    pub async fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let shared = Shared {
            received: Arc::default(),
            arrived: Arc::new(Notify::new()),
            count: Arc::default(),
            script: Arc::new(script),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            _task: task,
        }
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("not poisoned").clone()
    }

    /// The requests answered 2xx so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `done(received)` holds (panics after `secs` seconds).
    pub async fn wait_for(&self, secs: u64, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let notified = self.shared.arrived.notified();
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the receiver did not get what was expected within {secs} s; got seqs {:?}",
                    received.iter().map(Received::seq).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits until `n` requests were answered 2xx.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Received> {
        self.wait_for(20, |r| {
            r.iter().filter(|r| (200..300).contains(&r.status)).count() >= n
        })
        .await;
        self.accepted()
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = shared
        .count
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let reply = (shared.script)(n);
    // Recorded on arrival: a request the sender gave up on (a timeout) still counts.
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        status: reply.status,
    };
    shared.received.lock().expect("not poisoned").push(received);
    shared.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    StatusCode::from_u16(reply.status).expect("a scripted status")
}
