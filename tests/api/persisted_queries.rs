//! Automatic persisted queries, as Apollo Client and urql send them.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const QUERY: &str = "query Me { me { id name } }";

pub fn hash(query: &str) -> String {
    Sha256::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(app.token("alice"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON"),
    )
}

pub fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn a_hash_is_answered_after_the_query_was_sent_once() {
    let app = spawn_app().await;
    let (status, miss) = post(&app, json!({ "extensions": extension(&hash(QUERY)) })).await;
    assert_eq!(status, 200);
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(error_code(&miss), Some("PERSISTED_QUERY_NOT_FOUND"));
    let (_, full) = post(
        &app,
        json!({ "query": QUERY, "extensions": extension(&hash(QUERY)) }),
    )
    .await;
    assert_eq!(full["data"]["me"]["id"], app.user("alice"));
    let (_, hit) = post(&app, json!({ "extensions": extension(&hash(QUERY)) })).await;
    assert_eq!(hit["data"]["me"]["id"], app.user("alice"));
    // Apollo can send hashed queries over GET.
    let response = app
        .client
        .get(app.graphql_url())
        .bearer_auth(app.token("alice"))
        .query(&[("extensions", extension(&hash(QUERY)).to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"]["me"]["id"],
        app.user("alice")
    );

    let (status, wrong) = post(
        &app,
        json!({ "query": "{ me { id } }", "extensions": extension(&hash(QUERY)) }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(wrong["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let (status, _) = post(
        &app,
        json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": hash(QUERY) } } }),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_cache_is_shared_by_instances_through_redis() {
    let Some(redis) = require_redis("the_cache_is_shared_by_instances_through_redis") else {
        return;
    };
    shared_by_two_instances(|c: &mut tasknest::Config| c.redis_url = Some(redis.clone())).await;
}

/// Two instances configured by `configure` (sharing one Redis or Redis Cluster): a query
/// registered on one is known to the other.
pub async fn shared_by_two_instances(configure: impl Fn(&mut tasknest::Config) + Copy) {
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    // A query text of its own, so that earlier runs sharing this Redis cannot have it.
    let query = format!(
        "query Fresh{} {{ me {{ id }} }}",
        uuid::Uuid::new_v4().simple()
    );
    let (_, miss) = post(&b, json!({ "extensions": extension(&hash(&query)) })).await;
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(error_code(&miss), Some("PERSISTED_QUERY_NOT_FOUND"));
    post(
        &a,
        json!({ "query": query, "extensions": extension(&hash(&query)) }),
    )
    .await;
    let (_, hit) = post(&b, json!({ "extensions": extension(&hash(&query)) })).await;
    assert_eq!(hit["data"]["me"]["id"], a.user("alice"), "{hit}");
}
