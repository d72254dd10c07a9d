//! Tokens from an identity provider: verified with its public key (RSA, EC P-256 and
//! Ed25519 keys generated here), pinned to one algorithm, with issuer, audience and the
//! claims that make the viewer as configured; the server's own HS256 tokens keep working.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::OsRng;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use tasknest::Config;

use crate::helpers::{TestApp, WsClient, error_code, spawn_app_with};

pub const ISSUER: &str = "https://idp.example.test/";
pub const AUDIENCE: &str = "tasknest-api";

/// A provider's signing key, its public half as PEM, and the algorithm it signs with.
pub struct ProviderKey {
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    public_pem: String,
    /// The public key as a JWK, where the crate cannot derive it from `encoding`.
    pub jwk: Option<Value>,
}

pub fn rsa_key() -> ProviderKey {
    let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key");
    let pem = private.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    ProviderKey {
        jwk: None,
        algorithm: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("encoding key"),
        public_pem: private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM"),
    }
}

pub fn ec_key() -> ProviderKey {
    let secret = p256::SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    ProviderKey {
        jwk: None,
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pem.as_bytes()).expect("encoding key"),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM"),
    }
}

pub fn ed25519_key() -> ProviderKey {
    let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let pem = signing.to_pkcs8_pem(LineEnding::LF).expect("PEM");
    ProviderKey {
        jwk: Some(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "x": base64_url_bytes(signing.verifying_key().as_bytes()),
        })),
        algorithm: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(pem.as_bytes()).expect("encoding key"),
        public_pem: signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM"),
    }
}

impl ProviderKey {
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.encoding).expect("sign")
    }
}

fn now() -> i64 {
    tasknest::auth::unix_now()
}

/// Claims as a provider issues them, for this test's user `name`.
pub fn provider_claims(app: &TestApp, name: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": app.user(name),
        "preferred_username": format!("{name}@example.test"),
        "picture": "https://cdn.example.test/a.png",
        "iat": now(),
        "exp": now() + 600,
    })
}

/// An app that accepts `key`'s tokens (with issuer and audience), configured further by
/// `configure`.
async fn app_trusting(
    key: &ProviderKey,
    configure: impl FnOnce(&mut Config),
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("provider.pem");
    std::fs::write(&path, &key.public_pem).expect("write PEM");
    let algorithm = key.algorithm;
    let app = spawn_app_with(|c| {
        c.jwt_public_key_file = Some(path);
        c.jwt_public_key_alg = algorithm;
        c.jwt_issuer = Some(ISSUER.into());
        c.jwt_audience = Some(AUDIENCE.into());
        configure(c);
    })
    .await;
    (app, dir)
}

pub const ME: &str = "{ me { id name avatarUrl } }";

#[tokio::test]
async fn provider_tokens_signed_with_rsa_ec_or_ed25519_keys_are_accepted_over_http_and_graphql_ws()
{
    for key in [rsa_key(), ec_key(), ed25519_key()] {
        let (app, _dir) = app_trusting(&key, |_| {}).await;
        let token = key.sign(&provider_claims(&app, "alice"));
        let me = app.ok(&token, ME, json!({})).await;
        assert_eq!(
            me["me"],
            json!({
                "id": app.user("alice"),
                "name": "alice@example.test",
                "avatarUrl": "https://cdn.example.test/a.png",
            }),
            "{:?}",
            key.algorithm
        );
        let mut ws = app.ws(&token).await;
        ws.subscribe("me", ME, json!({})).await;
        let answer = ws.next().await.expect("an answer");
        assert_eq!(answer["payload"]["data"]["me"]["id"], app.user("alice"));
        // The server's own HS256 tokens are still accepted beside the provider's.
        let own = app.ok(&app.token("bob"), ME, json!({})).await;
        assert_eq!(own["me"]["id"], app.user("bob"));
    }
}

#[tokio::test]
async fn provider_tokens_with_the_wrong_issuer_audience_time_key_or_algorithm_are_refused() {
    let key = rsa_key();
    let (app, _dir) = app_trusting(&key, |_| {}).await;
    let with = |change: Value| {
        let mut claims = provider_claims(&app, "alice");
        for (k, v) in change.as_object().expect("an object") {
            if v.is_null() {
                claims.as_object_mut().expect("claims").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let unsigned = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&provider_claims(&app, "alice").to_string())
    );
    // Algorithm confusion: an HMAC token whose secret is the provider's public key.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &provider_claims(&app, "alice"),
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .expect("sign");
    // The right key, but an algorithm it is not pinned to.
    let other_algorithm = {
        let mut header = Header::new(Algorithm::RS384);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &provider_claims(&app, "alice"), &key.encoding).expect("sign")
    };
    let cases = [
        (
            "wrong issuer",
            key.sign(&with(json!({ "iss": "https://evil.test/" }))),
        ),
        ("no issuer", key.sign(&with(json!({ "iss": null })))),
        (
            "wrong audience",
            key.sign(&with(json!({ "aud": "someone-else" }))),
        ),
        ("no audience", key.sign(&with(json!({ "aud": null })))),
        ("expired", key.sign(&with(json!({ "exp": now() - 60 })))),
        (
            "not yet valid",
            key.sign(&with(json!({ "nbf": now() + 300 }))),
        ),
        ("no exp", key.sign(&with(json!({ "exp": null })))),
        (
            "another provider's key",
            rsa_key().sign(&provider_claims(&app, "alice")),
        ),
        ("alg none", unsigned),
        ("HS256 with the public key as secret", confused),
        ("RS384 with the RS256 key", other_algorithm),
    ];
    for (case, token) in cases {
        let response = app.gql(Some(&token), ME, json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("UNAUTHENTICATED"),
            "{case}: {response}"
        );
        let text = response.to_string();
        assert!(
            !text.contains("InvalidSignature") && !text.contains("PEM"),
            "{case}: {text}"
        );
        let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
        ws.send(json!({ "type": "connection_init", "payload": { "authorization": token } }))
            .await;
        assert_eq!(ws.close_code().await, Some(4403), "{case} over graphql-ws");
    }
}

#[tokio::test]
async fn the_claims_that_make_the_viewer_are_configurable() {
    let key = ec_key();
    let (app, _dir) = app_trusting(&key, |c| {
        c.jwt_claim_user_id = "uid".into();
        c.jwt_claim_name = vec!["nickname".into(), "email".into()];
        c.jwt_claim_avatar = vec!["photo".into()];
    })
    .await;
    let mut claims = provider_claims(&app, "ignored");
    claims["uid"] = json!(app.user("carol"));
    claims["email"] = json!("carol@example.test");
    claims["photo"] = json!("https://cdn.example.test/c.png");
    let me = app.ok(&key.sign(&claims), ME, json!({})).await;
    assert_eq!(
        me["me"],
        json!({
            "id": app.user("carol"),
            "name": "carol@example.test",
            "avatarUrl": "https://cdn.example.test/c.png",
        })
    );
    // Without the configured user id claim the token names nobody.
    claims.as_object_mut().expect("claims").remove("uid");
    let response = app.gql(Some(&key.sign(&claims)), ME, json!({})).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
}

#[tokio::test]
async fn a_public_key_file_that_is_not_a_key_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("provider.pem");
    std::fs::write(&path, "not a key").expect("write");
    let (db, url) = crate::helpers::TestDb::create().await;
    let mut config = Config::for_tests(url, crate::helpers::SECRET).expect("defaults");
    config.jwt_public_key_file = Some(path);
    let error = tasknest::Application::build(config)
        .await
        .err()
        .expect("the start fails");
    assert!(error.to_string().contains("JWT_PUBLIC_KEY_FILE"), "{error}");
    drop(db);
}

fn base64_url(text: &str) -> String {
    base64_url_bytes(text.as_bytes())
}

fn base64_url_bytes(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
