//! Several instances sharing one database and Redis: events cross instances through Redis,
//! and the log repairs whatever Redis loses.

use std::time::Duration;

use serde_json::{Value, json};

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

/// Subscribers of `channel` in Redis (`PUBSUB NUMSUB`).
pub async fn redis_subscribers(redis: &str, channel: &str) -> i64 {
    let client = redis::Client::open(redis).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB answers");
    reply.1
}

#[tokio::test]
async fn an_instance_receives_only_the_events_of_projects_it_has_subscribers_for() {
    let Some(redis) =
        require_redis("an_instance_receives_only_the_events_of_projects_it_has_subscribers_for")
    else {
        return;
    };
    // Short checks: rooms nobody listens to close within about two of them.
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(redis.clone());
        c.gap_check_interval = Duration::from_millis(200);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let watched = a.create_project(&alice, "Watched on B").await;
    let elsewhere = a.create_project(&alice, "Only on A").await;
    let watched_task = a.create_task(&alice, &watched, "T").await;
    let other_task = a.create_task(&alice, &elsewhere, "T").await;
    let channel = |p: &str| format!("tasknest:events:{{{p}}}");

    // Subscribing after the log's last seq (rather than "from now") makes the test independent
    // of when B reads its starting point: the renames below come after it either way.
    let last_seq = |page: Value| *seqs(&page).last().expect("the watched project has events");
    let head = last_seq(a.events(&alice, &watched, 0).await);
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": watched, "a": head }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis_subscribers(&redis, &channel(&watched)).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "B follows the watched project"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redis_subscribers(&redis, &channel(&elsewhere)).await, 0);

    let received = || b.state.metrics.bus_events_received.get();
    let before = received();
    for i in 0..5 {
        rename(&a, &alice, &other_task, &format!("unwatched {i}")).await;
        rename(&a, &alice, &watched_task, &format!("watched {i}")).await;
    }
    for i in 0..5 {
        let event = on_b.next_event("e").await;
        assert_eq!(event["task"]["title"], format!("watched {i}"));
    }
    assert_eq!(
        received() - before,
        5,
        "B received the watched project's events and none of the other's"
    );

    // The last subscriber leaves: the room closes and B stops following the channel.
    on_b.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis_subscribers(&redis, &channel(&watched)).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "B unfollows the closed room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = received();
    rename(&a, &alice, &watched_task, "after everyone left").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received(), before);

    // A new subscriber reopens the room, follows again, and gets live events.
    let head = last_seq(a.events(&alice, &watched, 0).await);
    let mut again = b.ws(&alice).await;
    again
        .subscribe("e", EVENTS, json!({ "p": watched, "a": head }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while redis_subscribers(&redis, &channel(&watched)).await != 1 {
        assert!(std::time::Instant::now() < deadline, "B follows again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rename(&a, &alice, &watched_task, "back").await;
    assert_eq!(again.next_event("e").await["task"]["title"], "back");
}
