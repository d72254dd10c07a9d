//! Several instances sharing one database and Redis: events cross instances through Redis,
//! and the log repairs whatever Redis loses.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;
use crate::subscriptions::{EVENTS, rename};

#[tokio::test]
async fn a_mutation_on_one_instance_reaches_subscribers_on_another_through_redis() {
    let Some(redis) =
        require_redis("a_mutation_on_one_instance_reaches_subscribers_on_another_through_redis")
    else {
        return;
    };
    // A long check interval: only Redis can bring the event in time.
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(redis.clone());
        c.gap_check_interval = Duration::from_secs(600);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;
    // Let the room on B open before the live event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    rename(&a, &alice, &task, "from A").await;
    let event = on_b.next_event("e").await;
    assert_eq!(event["seq"], 2);
    assert_eq!(event["task"]["title"], "from A");

    let ready = b
        .client
        .get(format!("http://{}/readyz", b.addr))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["redis"], "up");
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn a_redis_restart_mid_stream_loses_and_repeats_nothing() {
    if require_redis("a_redis_restart_mid_stream_loses_and_repeats_nothing").is_none() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let configure = |c: &mut tasknest::Config| c.redis_url = Some(url.clone());
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;

    for i in 0..20 {
        rename(&a, &alice, &task, &format!("before {i}")).await;
    }
    redis.stop();
    for i in 0..20 {
        rename(&a, &alice, &task, &format!("during {i}")).await;
    }
    let ready = a
        .client
        .get(format!("http://{}/readyz", a.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "Redis down does not make the service unready"
    );
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["redis"], "down");
    redis.restart().await;
    for i in 0..20 {
        rename(&a, &alice, &task, &format!("after {i}")).await;
    }
    let mut seqs = Vec::new();
    for _ in 0..60 {
        seqs.push(on_b.next_event("e").await["seq"].as_i64().unwrap());
    }
    assert_eq!(seqs, (2..=61).collect::<Vec<_>>(), "in order, exactly once");
    assert_eq!(on_b.next_event_or_nothing().await, None, "no duplicates");
}

#[tokio::test]
async fn a_last_event_whose_publish_was_lost_still_arrives_within_the_check_interval() {
    if require_redis("a_last_event_whose_publish_was_lost_still_arrives_within_the_check_interval")
        .is_none()
    {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(url.clone());
        c.gap_check_interval = Duration::from_millis(300);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    assert_eq!(on_b.next_event("e").await["seq"], 1);

    redis.stop();
    rename(&a, &alice, &task, "lost on the bus").await;
    let started = std::time::Instant::now();
    let event = on_b.next_event("e").await;
    assert_eq!(event["seq"], 2);
    assert_eq!(event["task"]["title"], "lost on the bus");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "repaired by the periodic check, not by luck"
    );
}
