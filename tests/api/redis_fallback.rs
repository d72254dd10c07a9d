//! Rate limits and the persisted-query cache while Redis is away: each instance falls back
//! to its own state, and shares again once Redis is back. (Presence and the bus under the
//! same fault are in `faults.rs`.)

use serde_json::json;

use crate::helpers::*;
use crate::persisted_queries::{extension, hash, post};

const CREATE: &str = "mutation($n: String!) { createProject(input: {name: $n}) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_persisted_queries_work_locally_while_redis_is_away_and_share_again() {
    const NAME: &str =
        "rate_limits_and_persisted_queries_work_locally_while_redis_is_away_and_share_again";
    if require_redis(NAME).is_none() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(url.clone());
        c.rate_burst = 3;
        c.rate_per_second = 0.2;
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;

    redis.stop();
    // Persisted queries: a miss, the full query, then hits, all from A's own cache.
    let query = "query WhileAway { me { id } }";
    let (_, miss) = post(&a, json!({ "extensions": extension(&hash(query)) })).await;
    assert_eq!(error_code(&miss), Some("PERSISTED_QUERY_NOT_FOUND"));
    let (_, full) = post(
        &a,
        json!({ "query": query, "extensions": extension(&hash(query)) }),
    )
    .await;
    assert_eq!(full["data"]["me"]["id"], a.user("alice"), "{full}");
    let (_, hit) = post(&a, json!({ "extensions": extension(&hash(query)) })).await;
    assert_eq!(hit["data"]["me"]["id"], a.user("alice"), "{hit}");
    // Rate limits: A's own bucket still limits.
    let carol = a.token("carol");
    for i in 0..3 {
        a.ok(&carol, CREATE, json!({ "n": format!("away {i}") }))
            .await;
    }
    let limited = a
        .gql(Some(&carol), CREATE, json!({ "n": "too many" }))
        .await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");

    redis.restart().await;
    // Shared again: a query registered on A is known to B by its hash, and one user's
    // bucket spans both instances.
    let query = "query AfterReturn { me { name } }";
    let mut shared = None;
    for _ in 0..50 {
        let (_, full) = post(
            &a,
            json!({ "query": query, "extensions": extension(&hash(query)) }),
        )
        .await;
        assert_eq!(full["data"]["me"]["name"], "Alice", "{full}");
        let (_, hit) = post(&b, json!({ "extensions": extension(&hash(query)) })).await;
        if hit["data"]["me"]["name"] == "Alice" {
            shared = Some(hit);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        shared.is_some(),
        "B never saw the hash A registered after Redis returned"
    );
    let dave = a.token("dave");
    for (i, app) in [&a, &b, &a].into_iter().enumerate() {
        app.ok(&dave, CREATE, json!({ "n": format!("back {i}") }))
            .await;
    }
    let limited = b.gql(Some(&dave), CREATE, json!({ "n": "too many" })).await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");
}
