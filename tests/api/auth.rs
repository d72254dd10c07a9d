//! Tokens: every kind of bad JWT is refused, introspection needs none, and claims refresh
//! the user row.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::*;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn sign(alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[tokio::test]
async fn bad_tokens_of_every_kind_are_unauthenticated() {
    let app = spawn_app().await;
    let valid = json!({ "sub": app.user("alice"), "name": "Alice", "exp": now() + 600 });
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            sign(Algorithm::HS256, &json!({ "sub": "a", "exp": now() - 30 })),
        ),
        (
            "not yet valid",
            sign(
                Algorithm::HS256,
                &json!({ "sub": "a", "exp": now() + 600, "nbf": now() + 300 }),
            ),
        ),
        ("no exp", sign(Algorithm::HS256, &json!({ "sub": "a" }))),
        (
            "no sub",
            sign(
                Algorithm::HS256,
                &json!({ "name": "A", "exp": now() + 600 }),
            ),
        ),
        (
            "empty sub",
            sign(Algorithm::HS256, &json!({ "sub": "", "exp": now() + 600 })),
        ),
        ("HS512", sign(Algorithm::HS512, &valid)),
        ("HS384", sign(Algorithm::HS384, &valid)),
        (
            "alg none",
            unsigned(&json!({ "alg": "none", "typ": "JWT" }), &valid),
        ),
        ("alg RS256 header", {
            let hs = sign(Algorithm::HS256, &valid);
            let rest = hs.split_once('.').expect("jwt").1;
            format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#)
            )
        }),
        ("garbage", "not-a-jwt".into()),
        ("three garbage parts", "a.b.c".into()),
        ("tampered payload", {
            let hs = sign(Algorithm::HS256, &valid);
            let parts: Vec<&str> = hs.split('.').collect();
            let evil =
                URL_SAFE_NO_PAD.encode(json!({ "sub": "root", "exp": now() + 600 }).to_string());
            format!("{}.{evil}.{}", parts[0], parts[2])
        }),
    ];
    for (name, token) in cases {
        let response = app.gql(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(
            error_code(&response),
            Some("UNAUTHENTICATED"),
            "{name}: {response}"
        );
        assert_eq!(response["data"], Value::Null, "{name}");
    }
    // A token within the 5 s leeway is still accepted.
    let fresh = sign(Algorithm::HS256, &json!({ "sub": "a", "exp": now() - 2 }));
    let response = app.gql(Some(&fresh), "{ me { id } }", json!({})).await;
    assert_eq!(response["data"]["me"]["id"], "a");
}

#[tokio::test]
async fn a_token_accepted_before_is_refused_once_it_has_expired() {
    let app = spawn_app().await;
    let exp = now() + 1;
    let token = sign(Algorithm::HS256, &json!({ "sub": "a", "exp": exp }));
    // Accepted again and again (from the second time on without checking its signature)…
    for _ in 0..3 {
        let response = app.gql(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(response["data"]["me"]["id"], "a", "{response}");
    }
    // … until it expires: past `exp` and the 5 s leeway, the same token is refused.
    while now() <= exp + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let response = app.gql(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{response}");
}

#[tokio::test]
async fn every_field_but_introspection_needs_a_token() {
    let app = spawn_app().await;
    for query in [
        "{ me { id } }",
        "{ projects { id } }",
        "{ project(id: \"00000000-0000-0000-0000-000000000000\") { id } }",
        "{ task(id: \"00000000-0000-0000-0000-000000000000\") { id } }",
        "{ events(projectId: \"00000000-0000-0000-0000-000000000000\") { lastSeq } }",
        "mutation { createProject(input: {name: \"x\"}) { id } }",
    ] {
        let response = app.gql(None, query, json!({})).await;
        assert_eq!(error_code(&response), Some("UNAUTHENTICATED"), "{query}");
    }
    let response = app
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(response["data"]["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn the_user_row_follows_the_token_claims() {
    let app = spawn_app().await;
    let first = sign(
        Algorithm::HS256,
        &json!({ "sub": "u1", "name": "Old", "exp": now() + 600 }),
    );
    let second = sign(
        Algorithm::HS256,
        &json!({ "sub": "u1", "name": "New", "avatar": "https://img.example/u1.png", "exp": now() + 600 }),
    );
    let project = app.create_project(&first, "P").await;
    app.ok(&second, "{ me { id } }", json!({})).await;
    let data = app
        .ok(
            &second,
            "query($p: ID!) { project(id: $p) { members { user { id name avatarUrl } } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        data["project"]["members"][0]["user"],
        json!({ "id": "u1", "name": "New", "avatarUrl": "https://img.example/u1.png" })
    );
}
