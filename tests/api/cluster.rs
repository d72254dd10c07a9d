//! A Redis Cluster of three masters that each test starts on free ports: project events on
//! shard channels (only the node owning the project's slot carries them, only the instances
//! following them receive them), presence, rate limits and persisted queries shared through
//! it, and a master killed and restarted mid-stream with nothing lost or repeated.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscriptions::{EVENTS, rename};

/// Skips (loudly) without Redis on this machine; the cluster itself is private to the test.
fn require_cluster(test: &str) -> bool {
    require_redis(test).is_some()
}

/// Settings for an instance on the cluster whose seed list is `url`.
fn on_cluster(url: &str) -> impl Fn(&mut tasknest::Config) + Copy + '_ {
    move |c: &mut tasknest::Config| {
        c.redis_url = Some(url.to_owned());
        c.redis_cluster = true;
    }
}

fn channel(project: &str) -> String {
    format!("tasknest:events:{{{project}}}")
}

/// The seq of the last event of `project`.
async fn head(app: &TestApp, token: &str, project: &str) -> i64 {
    *seqs(&app.events(token, project, 0).await)
        .last()
        .expect("the project has events")
}

/// Waits until the master at `node` counts `expected` subscribers of the project's shard
/// channel.
async fn until_shard_subscribers(
    cluster: &RedisCluster,
    node: usize,
    project: &str,
    expected: i64,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = cluster.shard_subscribers(node, &channel(project)).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{now} shard subscribers of {project}'s channel, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_travel_on_shard_channels_to_the_instances_that_follow_them() {
    if !require_cluster("events_travel_on_shard_channels_to_the_instances_that_follow_them") {
        return;
    }
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let redis = on_cluster(&url);
    // A long check interval: only the cluster can bring the events in time.
    let configure = move |c: &mut tasknest::Config| {
        redis(c);
        c.gap_check_interval = Duration::from_secs(600);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let mut projects = Vec::new();
    for i in 0..3 {
        let project = a.create_project(&alice, &format!("P{i}")).await;
        let task = a.create_task(&alice, &project, "T").await;
        projects.push((project, task));
    }

    let mut on_b = b.ws(&alice).await;
    for (i, (project, _)) in projects.iter().enumerate() {
        let after = head(&a, &alice, project).await;
        on_b.subscribe(
            &format!("e{i}"),
            EVENTS,
            json!({ "p": project, "a": after }),
        )
        .await;
    }
    for (project, _) in &projects {
        let owner = cluster.owner_of(&channel(project)).await;
        until_shard_subscribers(&cluster, owner, project, 1).await;
        // Only the owner of the slot knows the shard channel.
        for other in (0..3).filter(|n| *n != owner) {
            assert_eq!(cluster.shard_subscribers(other, &channel(project)).await, 0);
        }
    }

    let before = b.state.metrics.bus_events_received.get();
    for round in 0..2 {
        for (project, task) in &projects {
            rename(&a, &alice, task, &format!("{project} {round}")).await;
        }
    }
    // Each project's events in order; the projects' own channels live on different masters,
    // so their events may interleave either way.
    let mut titles = vec![Vec::new(); projects.len()];
    for _ in 0..2 * projects.len() {
        let message = on_b.next().await.expect("an event");
        let i: usize = message["id"]
            .as_str()
            .and_then(|id| id[1..].parse().ok())
            .expect("e<i>");
        titles[i].push(message["payload"]["data"]["projectEvents"]["task"]["title"].clone());
    }
    for (i, (project, _)) in projects.iter().enumerate() {
        let expected: Vec<_> = (0..2)
            .map(|round| json!(format!("{project} {round}")))
            .collect();
        assert_eq!(titles[i], expected, "subscription e{i}");
    }
    assert_eq!(b.state.metrics.bus_events_received.get() - before, 6);
    // A has no room: it followed nothing and received nothing.
    assert_eq!(a.state.metrics.bus_events_received.get(), 0);

    let (status, ready) = b.readiness().await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["redis"], "up");
}

#[tokio::test]
async fn a_master_restart_loses_no_event_and_the_instance_follows_again() {
    if !require_cluster("a_master_restart_loses_no_event_and_the_instance_follows_again") {
        return;
    }
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    let redis = on_cluster(&url);
    let configure = move |c: &mut tasknest::Config| {
        redis(c);
        c.gap_check_interval = Duration::from_millis(300);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    let owner = cluster.owner_of(&channel(&project)).await;

    let first = head(&a, &alice, &project).await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": first }))
        .await;
    until_shard_subscribers(&cluster, owner, &project, 1).await;
    let mut seen: Vec<i64> = Vec::new();
    let mut expect = |event: Value, title: &str| {
        assert_eq!(event["task"]["title"], title, "{event}");
        seen.push(event["seq"].as_i64().expect("a seq"));
    };

    rename(&a, &alice, &task, "before").await;
    expect(on_b.next_event("e").await, "before");

    // The master carrying the project's channel dies: mutations go on, and B still gets
    // every event, from the log.
    cluster.nodes[owner].stop();
    for i in 0..5 {
        rename(&a, &alice, &task, &format!("during {i}")).await;
    }
    for i in 0..5 {
        expect(on_b.next_event("e").await, &format!("during {i}"));
    }

    // It comes back (same node, same slots, no data): B subscribes the channel again and
    // events travel through the cluster once more.
    cluster.nodes[owner].restart().await;
    cluster.until_ok().await;
    until_shard_subscribers(&cluster, owner, &project, 1).await;
    let received = b.state.metrics.bus_events_received.get();
    for i in 0..5 {
        rename(&a, &alice, &task, &format!("after {i}")).await;
    }
    for i in 0..5 {
        expect(on_b.next_event("e").await, &format!("after {i}"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.state.metrics.bus_events_received.get() == received {
        assert!(
            Instant::now() < deadline,
            "no event came over the cluster again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nothing twice, nothing missing.
    assert_eq!(seen, ((first + 1)..=(first + 11)).collect::<Vec<_>>());
    assert_eq!(on_b.next_event_within("e", 700).await, None);
}

#[tokio::test]
async fn an_instance_starts_while_its_cluster_is_down_and_joins_it_when_it_is_back() {
    if !require_cluster("an_instance_starts_while_its_cluster_is_down_and_joins_it_when_it_is_back")
    {
        return;
    }
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    let redis = on_cluster(&url);
    // A long check interval: once the cluster is back, only it can bring the events in time.
    let configure = move |c: &mut tasknest::Config| {
        redis(c);
        c.gap_check_interval = Duration::from_secs(600);
    };
    for node in &mut cluster.nodes {
        node.stop();
    }
    let started = Instant::now();
    let a = spawn_app_with(configure).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a cluster that is down does not hold up the start"
    );
    let (status, ready) = a.readiness().await;
    assert_eq!(
        (status, ready["redis"].as_str()),
        (200, Some("down")),
        "{ready}"
    );
    // Mutations do not need Redis.
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;

    for node in &mut cluster.nodes {
        node.restart().await;
    }
    cluster.until_ok().await;
    let b = spawn_app_sharing(&a, configure).await;
    let after = head(&a, &alice, &project).await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": after }))
        .await;
    let owner = cluster.owner_of(&channel(&project)).await;
    until_shard_subscribers(&cluster, owner, &project, 1).await;
    rename(&a, &alice, &task, "through the cluster").await;
    let event = on_b.next_event("e").await;
    assert_eq!(event["task"]["title"], "through the cluster");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.readiness().await.1["redis"] != "up" {
        assert!(Instant::now() < deadline, "A's bus never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn presence_is_shared_across_instances_through_a_redis_cluster() {
    if !require_cluster("presence_is_shared_across_instances_through_a_redis_cluster") {
        return;
    }
    let cluster = RedisCluster::start().await;
    crate::presence::shared_by_two_instances(on_cluster(&cluster.url())).await;
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_instances_through_a_redis_cluster() {
    if !require_cluster("the_rate_limit_is_shared_by_instances_through_a_redis_cluster") {
        return;
    }
    let cluster = RedisCluster::start().await;
    crate::rate_limits::shared_by_two_instances(on_cluster(&cluster.url())).await;
}

#[tokio::test]
async fn persisted_queries_are_shared_by_instances_through_a_redis_cluster() {
    if !require_cluster("persisted_queries_are_shared_by_instances_through_a_redis_cluster") {
        return;
    }
    let cluster = RedisCluster::start().await;
    crate::persisted_queries::shared_by_two_instances(on_cluster(&cluster.url())).await;
}

#[tokio::test]
async fn several_redis_nodes_without_the_cluster_switch_stop_the_start() {
    let mut config =
        tasknest::Config::for_tests("sqlite::memory:", "x".repeat(32)).expect("a test config");
    config.redis_url = Some("redis://127.0.0.1:1,redis://127.0.0.1:2".into());
    let error = tasknest::Application::build(config)
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("REDIS_CLUSTER=true"),
        "{error:#}"
    );
}
