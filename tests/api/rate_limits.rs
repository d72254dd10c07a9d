//! Per-user rate limits on mutations and operation starts.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const CREATE: &str = "mutation($n: String!) { createProject(input: {name: $n}) { id } }";

fn strict(c: &mut tasknest::Config) {
    c.rate_burst = 3;
    c.rate_per_second = 2.0;
}

#[tokio::test]
async fn mutations_over_the_limit_are_rate_limited_with_the_wait() {
    let app = spawn_app_with(strict).await;
    let alice = app.token("alice");
    for i in 0..3 {
        app.ok(&alice, CREATE, json!({ "n": format!("p{i}") }))
            .await;
    }
    let limited = app
        .gql(Some(&alice), CREATE, json!({ "n": "one too many" }))
        .await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");
    let wait = limited["errors"][0]["extensions"]["retryAfterMs"]
        .as_u64()
        .expect("retryAfterMs");
    assert!((1..=1000).contains(&wait), "{wait}");
    assert_eq!(
        app.ok(&alice, "{ projects { id } }", json!({})).await["projects"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "queries are not limited, nothing extra was written"
    );
    // Another user has a bucket of its own.
    app.ok(&app.token("bob"), CREATE, json!({ "n": "bob's" }))
        .await;
    // After the wait, it works again.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    app.ok(&alice, CREATE, json!({ "n": "later" })).await;

    // Clients that negotiated the GraphQL response type get a 429 with Retry-After.
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&alice)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": CREATE, "variables": { "n": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn subscription_starts_count_and_a_flood_closes_the_socket() {
    let app = spawn_app_with(strict).await;
    let alice = app.token("alice");
    let mut ws = app.ws(&alice).await;
    for i in 0..3 {
        ws.subscribe(&format!("q{i}"), "{ me { id } }", json!({}))
            .await;
    }
    ws.subscribe("q3", "{ me { id } }", json!({})).await;
    let mut limited = None;
    for _ in 0..7 {
        let message = ws.next().await.expect("a message");
        if message["type"] == "error" {
            limited = Some(message);
        }
    }
    let limited = limited.expect("the fourth start is refused");
    assert_eq!(limited["id"], "q3");
    assert_eq!(limited["payload"][0]["extensions"]["code"], "RATE_LIMITED");

    let mut flood = app.ws(&alice).await;
    for i in 0..150 {
        flood
            .subscribe(&format!("f{i}"), "{ me { id } }", json!({}))
            .await;
    }
    assert_eq!(flood.close_code().await, Some(4429));
}

#[tokio::test]
async fn the_limit_is_shared_by_instances_through_redis() {
    let Some(redis) = require_redis("the_limit_is_shared_by_instances_through_redis") else {
        return;
    };
    shared_by_two_instances(|c: &mut tasknest::Config| c.redis_url = Some(redis.clone())).await;
}

/// Two instances configured by `configure` (sharing one Redis or Redis Cluster) draw on one
/// bucket per user.
pub async fn shared_by_two_instances(redis: impl Fn(&mut tasknest::Config) + Copy) {
    // Three at once and a refill slow enough that a busy machine cannot earn a fourth
    // token while the test runs.
    let configure = |c: &mut tasknest::Config| {
        c.rate_burst = 3;
        c.rate_per_second = 0.05;
        redis(c);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    // A user of its own, so that other runs sharing this Redis do not interfere.
    let user = format!("limited-{}", uuid::Uuid::new_v4().simple());
    let token = a.token(&user);
    for (i, app) in [&a, &b, &a].into_iter().enumerate() {
        app.ok(&token, CREATE, json!({ "n": format!("p{i}") }))
            .await;
    }
    let limited = b
        .gql(Some(&token), CREATE, json!({ "n": "too many" }))
        .await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");
}
