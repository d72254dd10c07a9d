//! Keys from an identity provider's JWKS URL, served by a JWKS server inside the test: every
//! key kind works, a rotated key works within seconds and a removed one stops within its
//! cache time without a restart, forged `kid`s cannot make TaskNest hammer the provider, and
//! a provider that is away at start only delays its own tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::CACHE_CONTROL;
use axum::response::IntoResponse;
use jsonwebtoken::Header;
use jsonwebtoken::jwk::Jwk;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::helpers::{TestApp, error_code, spawn_app_with};
use crate::identity::{
    AUDIENCE, ISSUER, ME, ProviderKey, ec_key, ed25519_key, provider_claims, rsa_key,
};

/// A JWKS endpoint on 127.0.0.1 whose keys the test changes, counting its requests.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    requests: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(max_age: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, max_age)
    }

    fn serve(listener: TcpListener, max_age: u64) -> Self {
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let keys: Arc<Mutex<Vec<Jwk>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), requests.clone());
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (keys, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let keys = keys.lock().expect("keys").clone();
                    (
                        [(CACHE_CONTROL, format!("public, max-age={max_age}"))],
                        axum::Json(json!({ "keys": keys })),
                    )
                        .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            keys,
            requests,
        }
    }

    fn publish(&self, keys: &[(&ProviderKey, &str)]) {
        *self.keys.lock().expect("keys") = keys.iter().map(|(key, kid)| jwk(key, kid)).collect();
    }

    fn publish_json(&self, keys: &Value) {
        *self.keys.lock().expect("keys") =
            serde_json::from_value(keys.clone()).expect("JWKs from jose");
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// The public JWK of `key` under `kid`.
fn jwk(key: &ProviderKey, kid: &str) -> Jwk {
    let mut jwk = match &key.jwk {
        Some(jwk) => serde_json::from_value(jwk.clone()).expect("a JWK"),
        None => Jwk::from_encoding_key(&key.encoding, key.algorithm).expect("public JWK"),
    };
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn sign_with_kid(key: &ProviderKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

async fn app_with_jwks(url: &str) -> TestApp {
    let url = url.to_owned();
    spawn_app_with(|c| {
        c.jwt_jwks_url = Some(url);
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
    })
    .await
}

/// Whether `token` is accepted now.
async fn accepted(app: &TestApp, token: &str) -> bool {
    let response = app.gql(Some(token), ME, json!({})).await;
    match error_code(&response) {
        None => true,
        Some("UNAUTHENTICATED") => false,
        other => panic!("unexpected answer {other:?}: {response}"),
    }
}

/// Waits up to `limit` for `accepted(token) == want`; returns how long it took.
async fn until(app: &TestApp, token: &str, want: bool, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if accepted(app, token).await == want {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the token was never {}",
        if want { "accepted" } else { "refused" }
    );
}

#[tokio::test]
async fn tokens_signed_with_any_key_of_the_set_work_over_http_and_graphql_ws() {
    let server = JwksServer::start(300).await;
    let (rsa, ec, ed) = (rsa_key(), ec_key(), ed25519_key());
    server.publish(&[(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")]);
    let app = app_with_jwks(&server.url).await;
    for (key, kid) in [(&rsa, "r1"), (&ec, "e1"), (&ed, "d1")] {
        let token = sign_with_kid(key, kid, &provider_claims(&app, "alice"));
        until(&app, &token, true, Duration::from_secs(10)).await;
        let mut ws = app.ws(&token).await;
        ws.subscribe("me", ME, json!({})).await;
        let answer = ws.next().await.expect("an answer");
        assert_eq!(
            answer["payload"]["data"]["me"]["id"],
            app.user("alice"),
            "{kid}"
        );
    }
    // A key of the set signs only with its own algorithm: the RSA key under the EC kid fails.
    let mismatched = sign_with_kid(&rsa, "e1", &provider_claims(&app, "alice"));
    assert!(!accepted(&app, &mismatched).await);
    let (status, ready) = app.readiness().await;
    assert_eq!(
        (status, ready["jwks"].as_str()),
        (200, Some("up")),
        "{ready}"
    );
}

#[tokio::test]
async fn a_rotated_key_works_within_seconds_and_a_removed_key_stops_within_its_cache_time() {
    let server = JwksServer::start(5).await;
    let (old, new) = (rsa_key(), ec_key());
    server.publish(&[(&old, "old")]);
    let app = app_with_jwks(&server.url).await;
    let old_token = sign_with_kid(&old, "old", &provider_claims(&app, "alice"));
    until(&app, &old_token, true, Duration::from_secs(10)).await;

    server.publish(&[(&old, "old"), (&new, "new")]);
    let new_token = sign_with_kid(&new, "new", &provider_claims(&app, "alice"));
    let took = until(&app, &new_token, true, Duration::from_secs(10)).await;
    assert!(took <= Duration::from_secs(6), "rotation took {took:?}");

    server.publish(&[(&new, "new")]);
    let took = until(&app, &old_token, false, Duration::from_secs(12)).await;
    assert!(took <= Duration::from_secs(7), "removal took {took:?}");
    assert!(accepted(&app, &new_token).await);
}

#[tokio::test]
async fn forged_kids_cannot_make_the_server_hammer_the_provider() {
    let server = JwksServer::start(300).await;
    let key = rsa_key();
    server.publish(&[(&key, "real")]);
    let app = app_with_jwks(&server.url).await;
    let real = sign_with_kid(&key, "real", &provider_claims(&app, "alice"));
    until(&app, &real, true, Duration::from_secs(10)).await;
    let before = server.requests();
    let started = Instant::now();
    for i in 0..60 {
        let forged = sign_with_kid(
            &key,
            &format!("forged-{i}"),
            &provider_claims(&app, "alice"),
        );
        assert!(!accepted(&app, &forged).await);
    }
    let seconds = started.elapsed().as_secs();
    let fetched = server.requests() - before;
    // At most one refetch per 5 s interval, whatever the number of forged kids.
    assert!(
        fetched as u64 <= seconds / 5 + 1,
        "{fetched} JWKS requests for 60 forged kids in {seconds} s"
    );
}

#[tokio::test]
async fn a_provider_away_at_start_delays_only_its_own_tokens_and_is_picked_up_when_it_answers() {
    // A free port nobody listens on yet.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let app = app_with_jwks(&format!("http://{addr}/jwks.json")).await;
    let key = rsa_key();
    let token = sign_with_kid(&key, "k", &provider_claims(&app, "alice"));

    let response = app.gql(Some(&token), ME, json!({})).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
    assert!(!response.to_string().contains("127.0.0.1"), "{response}");
    let (status, ready) = app.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["jwks"].as_str().is_some_and(|r| r != "up"), "{ready}");
    // The server's own tokens are not affected.
    assert!(accepted(&app, &app.token("bob")).await);

    let server = JwksServer::serve(TcpListener::bind(addr).await.expect("rebind"), 300);
    server.publish(&[(&key, "k")]);
    until(&app, &token, true, Duration::from_secs(15)).await;
    let (_, ready) = app.readiness().await;
    assert_eq!(ready["jwks"], "up", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_by_the_jose_library_are_accepted() {
    let Some(dir) = crate::helpers::require_client_project("the jose test") else {
        return;
    };
    let server = JwksServer::start(300).await;
    let app = app_with_jwks(&server.url).await;
    let user = app.user("alice");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .args(["jose.mjs", &user, ISSUER, AUDIENCE])
            .current_dir(&dir)
            .output()
            .expect("node runs")
    })
    .await
    .expect("joined");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made: Value = serde_json::from_slice(&output.stdout).expect("JSON from jose.mjs");
    server.publish_json(&made["keys"]);
    for alg in ["RS256", "ES256"] {
        let token = made["tokens"][alg].as_str().expect("a token");
        until(&app, token, true, Duration::from_secs(10)).await;
        let me = app.ok(token, ME, json!({})).await;
        assert_eq!(me["me"]["id"], app.user("alice"), "{alg}");
        assert_eq!(
            me["me"]["name"],
            format!("{} via jose {alg}", app.user("alice"))
        );
    }
}
