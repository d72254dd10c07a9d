//! Faults under load: the database going away, Redis going away, an instance stopped with
//! SIGTERM. Nothing here touches the machine's shared services: PostgreSQL is cut off
//! through a proxy inside the test, Redis is a private `redis-server`, the stopped instance
//! is a child process.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::presence;
use crate::subscriptions::EVENTS;

const RENAME: &str =
    "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { __typename } }";

/// What one rename attempt came to.
#[derive(Debug)]
struct Attempt {
    title: String,
    at: Instant,
    /// `None` when it succeeded, the error code otherwise.
    error: Option<String>,
    message: Option<String>,
}

/// Renames `task` every `pause` until `until`, one request at a time, recording each answer.
async fn keep_renaming(
    app: &TestApp,
    token: &str,
    task: &Value,
    writer: &str,
    pause: Duration,
    until: Instant,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    let mut i = 0;
    while Instant::now() < until {
        let title = format!("{writer}-{i}");
        i += 1;
        let body = app
            .gql(Some(token), RENAME, json!({ "id": task["id"], "t": title }))
            .await;
        attempts.push(Attempt {
            title,
            at: Instant::now(),
            error: error_code(&body).map(str::to_owned),
            message: body["errors"][0]["message"].as_str().map(str::to_owned),
        });
        tokio::time::sleep(pause).await;
    }
    attempts
}

/// Reads `id`'s events until `last` arrived; their seqs in arrival order.
async fn read_until(client: &mut WsClient, id: &str, last: i64) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let event = client.next_event(id).await;
        seqs.push(event["seq"].as_i64().expect("seq"));
    }
    seqs
}

/// The titles the log's TASK_UPDATED events set, in seq order; and the log's seqs.
async fn logged_titles(app: &TestApp, token: &str, project: &str) -> (Vec<String>, Vec<i64>) {
    let page = app.events(token, project, 0).await;
    assert_eq!(page["hasMore"], false, "one page holds the whole log");
    let titles = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "TASK_UPDATED")
        .map(|e| e["changes"]["title"].as_str().expect("a title").to_owned())
        .collect();
    (titles, seqs(&page))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_fails_requests_with_internal_and_recovers_by_itself() {
    const NAME: &str =
        "postgres_going_away_under_load_fails_requests_with_internal_and_recovers_by_itself";
    if require_postgres(NAME).is_none() {
        return;
    }
    let (db, url) = TestDb::create().await;
    let mut proxied = url::Url::parse(&url).expect("a URL");
    let target = tokio::net::lookup_host((
        proxied.host_str().expect("a host").to_owned(),
        proxied.port().unwrap_or(5432),
    ))
    .await
    .expect("resolve PostgreSQL")
    .next()
    .expect("an address");
    let proxy = TcpProxy::start(target).await;
    proxied.set_host(Some("127.0.0.1")).expect("host");
    proxied.set_port(Some(proxy.port)).expect("port");
    let app = spawn_app_on(db, proxied.to_string(), |c| {
        c.database_acquire_timeout = Duration::from_millis(800);
    })
    .await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut watcher = app.ws(&alice).await;
    watcher
        .subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;

    let start = Instant::now();
    let until = start + Duration::from_millis(5500);
    let pause = Duration::from_millis(20);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
        let cut_at = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = app.readiness().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        proxy.restore().await;
        (cut_at, Instant::now(), during)
    };
    let (a, b, (cut_at, restored_at, during)) = tokio::join!(
        keep_renaming(&app, &alice, &task, "a", pause, until),
        keep_renaming(&app, &alice, &task, "b", pause, until),
        outage
    );
    let attempts: Vec<&Attempt> = a.iter().chain(&b).collect();

    assert_eq!(during.0, 503, "not ready while the database is away");
    assert_eq!(during.1["database"], "down");
    let failed: Vec<&&Attempt> = attempts.iter().filter(|t| t.error.is_some()).collect();
    assert!(!failed.is_empty(), "the outage was felt");
    for attempt in &failed {
        assert_eq!(attempt.error.as_deref(), Some("INTERNAL"), "{attempt:?}");
        assert_eq!(
            attempt.message.as_deref(),
            Some("internal error"),
            "no internals leak"
        );
        assert!(attempt.at > cut_at, "nothing failed before the cut");
    }
    assert!(
        attempts
            .iter()
            .any(|t| t.error.is_none() && t.at > restored_at),
        "the service recovered by itself"
    );
    let (status, body) = app.readiness().await;
    assert_eq!((status, &body["database"]), (200, &json!("up")));

    // The log is whole: gap-free, each attempted title at most once, every acknowledged
    // one present. (A commit whose answer was cut off may be in the log while its request
    // failed: that is what clientMutationId retries are for.)
    let (titles, log_seqs) = logged_titles(&app, &alice, &project).await;
    let last = *log_seqs.last().expect("events");
    assert_eq!(log_seqs, (1..=last).collect::<Vec<_>>(), "gap-free");
    let unique: HashSet<&String> = titles.iter().collect();
    assert_eq!(unique.len(), titles.len(), "no event twice");
    for attempt in attempts.iter().filter(|t| t.error.is_none()) {
        assert!(
            unique.contains(&attempt.title),
            "{} was lost",
            attempt.title
        );
    }
    let delivered = read_until(&mut watcher, "e", last).await;
    assert_eq!(delivered, (2..=last).collect::<Vec<_>>(), "in order, once");
    assert_eq!(watcher.next_event_or_nothing().await, None, "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_under_load_keeps_mutations_presence_and_streams_whole() {
    const NAME: &str = "redis_going_away_under_load_keeps_mutations_presence_and_streams_whole";
    if require_redis(NAME).is_none() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(url.clone());
        c.presence_timeout = Duration::from_millis(1500);
        c.gap_check_interval = Duration::from_millis(300);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let bob = a.token("bob");
    let carol = a.token("carol");
    let project = a.create_project(&alice, "P").await;
    a.add_member(&alice, &project, "bob", "EDITOR").await;
    a.add_member(&alice, &project, "carol", "EDITOR").await;
    let task_a = a.create_task(&alice, &project, "on A").await;
    let task_b = a.create_task(&alice, &project, "on B").await;
    let mut on_a = a.ws(&alice).await;
    on_a.subscribe("e", EVENTS, json!({ "p": project, "a": 2 }))
        .await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("e", EVENTS, json!({ "p": project, "a": 2 }))
        .await;
    let mut bob_on_b = b.ws(&bob).await;
    bob_on_b
        .subscribe("p", presence::EVENTS, json!({ "p": project }))
        .await;
    presence::until_present(&a, &alice, &project, &["bob"]).await;

    let until = Instant::now() + Duration::from_millis(4000);
    let pause = Duration::from_millis(15);
    let outage = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        redis.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = a.readiness().await;
        // Presence on A works from A's own state while Redis is away.
        let mut carol_on_a = a.ws(&carol).await;
        carol_on_a
            .subscribe("p", presence::EVENTS, json!({ "p": project }))
            .await;
        presence::until_present(&a, &carol, &project, &["carol"]).await;
        let focused = a
            .gql(
                Some(&carol),
                presence::FOCUS,
                json!({ "p": project, "t": task_a["id"] }),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        redis.restart().await;
        (during, focused, carol_on_a)
    };
    let (from_a, from_b, (during, focused, _carol_on_a)) = tokio::join!(
        keep_renaming(&a, &alice, &task_a, "a", pause, until),
        keep_renaming(&b, &alice, &task_b, "b", pause, until),
        outage
    );

    assert_eq!(
        during.0, 200,
        "Redis away does not make the service unready"
    );
    assert_eq!(during.1["status"], "degraded");
    assert_eq!(during.1["redis"], "down");
    assert!(focused.get("errors").is_none(), "{focused}");
    let failed: Vec<&Attempt> = from_a
        .iter()
        .chain(&from_b)
        .filter(|t| t.error.is_some())
        .collect();
    assert!(
        failed.is_empty(),
        "mutations kept working: {} failed, first {:?}",
        failed.len(),
        failed.first()
    );

    // Every event reaches both instances' subscribers, in order, exactly once.
    let (titles, log_seqs) = logged_titles(&a, &alice, &project).await;
    assert_eq!(titles.len(), from_a.len() + from_b.len());
    let last = *log_seqs.last().expect("events");
    assert_eq!(log_seqs, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        read_until(&mut on_a, "e", last).await,
        (3..=last).collect::<Vec<_>>()
    );
    assert_eq!(
        read_until(&mut on_b, "e", last).await,
        (3..=last).collect::<Vec<_>>()
    );
    assert_eq!(
        on_a.next_event_or_nothing().await,
        None,
        "no duplicates on A"
    );
    assert_eq!(
        on_b.next_event_or_nothing().await,
        None,
        "no duplicates on B"
    );

    // Once Redis is back (empty: it keeps nothing on disk) both instances write their
    // presence back, and each sees the other's users again, focus included.
    presence::until_present(&b, &bob, &project, &["bob", "carol"]).await;
    presence::until_present(&a, &alice, &project, &["bob", "carol"]).await;
    let listed = b
        .ok(
            &bob,
            "query($p: ID!) { presence(projectId: $p) { focusTaskId user { id } } }",
            json!({ "p": project }),
        )
        .await;
    let carol_entry = listed["presence"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["user"]["id"] == a.user("carol"))
        .expect("carol listed")
        .clone();
    assert_eq!(carol_entry["focusTaskId"], task_a["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_subscriptions_with_1001_and_clients_resume_elsewhere_without_loss() {
    let Some(redis) = require_redis(
        "sigterm_closes_subscriptions_with_1001_and_clients_resume_elsewhere_without_loss",
    ) else {
        return;
    };
    let a = spawn_app_with(|c| c.redis_url = Some(redis.clone())).await;
    let mut doomed = ChildInstance::start(&a.database_url, &redis).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    let mut client = WsClient::connect(doomed.addr, "graphql-transport-ws").await;
    client
        .init(json!({ "authorization": format!("Bearer {alice}") }))
        .await;
    client
        .subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;

    let until = Instant::now() + Duration::from_millis(2500);
    // The client reads until the server says goodbye, then resumes on instance A from the
    // last seq it saw, as graphql-ws clients do on 1001.
    let consumer = async {
        let mut seen = Vec::new();
        let code = loop {
            match client.next_or_close().await {
                Ok(message) if message["type"] == "next" => {
                    let seq = message["payload"]["data"]["projectEvents"]["seq"]
                        .as_i64()
                        .expect("seq");
                    seen.push(seq);
                }
                Ok(other) => panic!("unexpected {other}"),
                Err(code) => break code,
            }
        };
        (seen, code)
    };
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        doomed.terminate();
        doomed.exited().await
    };
    let (attempts, (before, code), status) = tokio::join!(
        keep_renaming(&a, &alice, &task, "w", Duration::from_millis(20), until),
        consumer,
        stopper
    );
    assert_eq!(code, Some(1001), "going away: reconnect elsewhere");
    assert!(status.success(), "a graceful exit: {status:?}");
    let failed = attempts.iter().find(|t| t.error.is_some());
    assert!(failed.is_none(), "{failed:?}");
    assert!(!before.is_empty(), "events arrived before the stop");

    let last_seen = *before.last().expect("a seq");
    let mut resumed = a.ws(&alice).await;
    resumed
        .subscribe("e", EVENTS, json!({ "p": project, "a": last_seen }))
        .await;
    let last = 1 + attempts.len() as i64;
    let after = read_until(&mut resumed, "e", last).await;
    let all: Vec<i64> = before.iter().chain(&after).copied().collect();
    assert_eq!(
        all,
        (2..=last).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
}
