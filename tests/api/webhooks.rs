//! Webhooks delivered from the event log: signed (Standard Webhooks), in `seq` order, at least
//! once, retried, disabled when gone, and managed only by owners. Every receiver is a real
//! HTTP server on a loopback port.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscriptions::rename;

const CREATE: &str = "mutation($in: CreateWebhookInput!) { createWebhook(input: $in) { secret webhook { id projectId url eventKinds description enabled lastDeliveredSeq lag } } }";
const LIST: &str = "query($p: ID!) { webhooks(projectId: $p) { id url eventKinds enabled disabledReason lastDeliveredSeq lag failedAttempts nextAttemptAt } }";
const DELIVERIES: &str = "query($w: ID!, $first: Int, $after: String) { webhookDeliveries(webhookId: $w, first: $first, after: $after) { hasMore endCursor deliveries { seq attempt messageId statusCode durationMs error at nextAttemptAt } } }";
const UPDATE: &str = "mutation($id: ID!, $in: UpdateWebhookInput!) { updateWebhook(id: $id, input: $in) { id url enabled disabledReason } }";

/// Settings for fast tests: loopback targets, short timeout, retries and polling.
pub fn fast(c: &mut tasknest::Config) {
    c.webhook_allow_private = true;
    c.webhook_timeout = Duration::from_millis(800);
    c.webhook_retry_schedule = vec![Duration::from_millis(100)];
    c.webhook_poll_interval = Duration::from_millis(100);
    c.webhook_lease = Duration::from_secs(3);
}

/// Creates a webhook; returns `(id, secret)`.
pub async fn create_webhook(
    app: &TestApp,
    token: &str,
    project: &str,
    url: &str,
    kinds: &[&str],
) -> (String, String) {
    let data = app
        .ok(
            token,
            CREATE,
            json!({ "in": { "projectId": project, "url": url, "eventKinds": kinds, "description": "test" } }),
        )
        .await;
    let created = &data["createWebhook"];
    (
        created["webhook"]["id"].as_str().expect("id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

/// An app with fast settings, a receiver, and Alice's project with a webhook to it.
struct Hooked {
    app: TestApp,
    receiver: Receiver,
    alice: String,
    project: String,
    id: String,
    secret: String,
}

async fn hooked(receiver: Receiver, kinds: &[&str]) -> Hooked {
    let app = spawn_app_with(fast).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let (id, secret) = create_webhook(&app, &alice, &project, &receiver.url(), kinds).await;
    Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        secret,
    }
}

async fn webhook(app: &TestApp, token: &str, project: &str) -> Value {
    app.ok(token, LIST, json!({ "p": project })).await["webhooks"][0].clone()
}

/// Polls the webhook listing until `done` holds (panics after 20 s).
async fn wait_webhook(
    app: &TestApp,
    token: &str,
    project: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hook = webhook(app, token, project).await;
        if done(&hook) {
            return hook;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "webhook never got there: {hook}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_of_the_chosen_kinds_arrive_signed_in_order_exactly_once() {
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        secret,
    } = hooked(Receiver::start().await, &["TASK_CREATED", "TASK_UPDATED"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let task = app.create_task(&alice, &project, "T").await;
    for i in 0..10 {
        rename(&app, &alice, &task, &format!("title {i}")).await;
    }
    app.ok(
        &alice,
        "mutation($id: ID!) { deleteTask(id: $id) { __typename } }",
        json!({ "id": task["id"] }),
    )
    .await;
    let last = app.create_task(&alice, &project, "Last").await;

    let got = receiver.wait_accepted(12).await;
    let seqs: Vec<i64> = got.iter().map(Received::seq).collect();
    // 1 is the webhook's creation; the deletion (13) is not a wanted kind.
    let expected: Vec<i64> = (2..=12).chain([14]).collect();
    assert_eq!(seqs, expected, "wanted kinds, in order");
    for r in &got {
        assert!(r.signed_by(&secret), "signature of {}", r.id);
        assert!((chrono::Utc::now().timestamp() - r.timestamp.parse::<i64>().unwrap()).abs() < 60);
    }
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "one message id per event");

    let first = &got[0].body;
    assert_eq!(first["type"], "TASK_CREATED");
    assert_eq!(first["projectId"], project);
    assert_eq!(first["actor"]["id"], app.user("alice"));
    assert_eq!(first["actor"]["name"], "Alice");
    assert_eq!(first["actorVia"], "SESSION");
    assert_eq!(first["actorTokenName"], Value::Null);
    assert_eq!(first["task"]["id"], task["id"]);
    assert_eq!(first["task"]["title"], "T");
    assert_eq!(first["task"]["createdBy"]["name"], "Alice");
    assert!(first["occurredAt"].as_str().unwrap().ends_with('Z'));
    let update = &got[1].body;
    assert_eq!(update["type"], "TASK_UPDATED");
    assert_eq!(update["changes"]["title"], "title 0");
    assert_eq!(got[11].body["task"]["id"], last["id"]);

    // Nothing more comes, and the webhook is caught up with the head.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 12, "exactly once");
    let hook = wait_webhook(&app, &alice, &project, |h| h["lastDeliveredSeq"] == 14).await;
    assert_eq!(hook["lag"], 0);
    assert_eq!(hook["id"], id.as_str());

    // The webhook's creation is in the log, with who made it.
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][0]["kind"], "WEBHOOK_CREATED");
    assert_eq!(events["events"][0]["changes"]["webhookId"], id.as_str());
    assert_eq!(events["events"][0]["actor"]["id"], app.user("alice"));
}

#[tokio::test]
async fn a_failing_receiver_gets_every_event_in_order_with_stable_ids() {
    let app = spawn_app_with(fast).await;
    // 500 three times, then 200 for good.
    let receiver = Receiver::scripted(|n| if n < 3 { Reply::status(500) } else { Reply::OK }).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let (id, secret) = create_webhook(
        &app,
        &alice,
        &project,
        &receiver.url(),
        &["TASK_CREATED", "TASK_UPDATED"],
    )
    .await;
    let task = app.create_task(&alice, &project, "T").await;
    for i in 0..5 {
        rename(&app, &alice, &task, &format!("t{i}")).await;
    }
    receiver.wait_accepted(6).await;
    let all = receiver.received();
    assert_eq!(all.len(), 9, "three failures, then six deliveries");
    let seqs: Vec<i64> = all.iter().map(Received::seq).collect();
    assert_eq!(
        seqs,
        vec![2, 2, 2, 2, 3, 4, 5, 6, 7],
        "the next waits for the one before"
    );
    assert!(
        all[..4].iter().all(|r| r.id == all[0].id),
        "retries keep the webhook-id"
    );
    assert!(all.iter().all(|r| r.signed_by(&secret)));
    // The receiver records on arrival; the last attempt is logged once its answer is in.
    let hook = wait_webhook(&app, &alice, &project, |h| h["lastDeliveredSeq"] == 7).await;
    assert_eq!(hook["failedAttempts"], 0);

    let page = app
        .ok(&alice, DELIVERIES, json!({ "w": id, "first": 100 }))
        .await["webhookDeliveries"]
        .clone();
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 9);
    let oldest = &deliveries[8];
    assert_eq!(oldest["seq"], 2);
    assert_eq!(oldest["attempt"], 1);
    assert_eq!(oldest["statusCode"], 500);
    assert!(oldest["error"].as_str().unwrap().starts_with("HTTP 500"));
    assert!(oldest["nextAttemptAt"].is_string());
    let success = &deliveries[5];
    assert_eq!(
        (success["seq"].as_i64(), success["attempt"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(success["statusCode"], 200);
    assert_eq!(success["messageId"], all[0].id.as_str());
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        ..
    } = hooked(
        Receiver::scripted(|n| Reply {
            status: 200,
            delay: if n == 0 {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            },
        })
        .await,
        &["TASK_CREATED"],
    )
    .await;
    app.create_task(&alice, &project, "T").await;
    // The first request times out on TaskNest's side, the retry lands.
    receiver.wait_for(20, |r| r.len() >= 2).await;
    let page = app.ok(&alice, DELIVERIES, json!({ "w": id })).await["webhookDeliveries"].clone();
    let deliveries = page["deliveries"].as_array().unwrap();
    let first = deliveries.last().unwrap();
    assert_eq!(first["statusCode"], Value::Null);
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{first}"
    );
    assert!(
        first["durationMs"].as_i64().unwrap() < 2000,
        "cut at the timeout"
    );
    wait_webhook(&app, &alice, &project, |h| h["lastDeliveredSeq"] == 2).await;
}

#[tokio::test]
async fn a_410_disables_the_webhook_at_once_and_an_owner_can_enable_it_again() {
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        ..
    } = hooked(
        Receiver::scripted(|n| {
            if n == 0 {
                Reply::status(410)
            } else {
                Reply::OK
            }
        })
        .await,
        &["TASK_CREATED"],
    )
    .await;
    app.create_task(&alice, &project, "A").await;
    let hook = wait_webhook(&app, &alice, &project, |h| h["enabled"] == false).await;
    assert!(
        hook["disabledReason"].as_str().unwrap().contains("410"),
        "{hook}"
    );
    app.create_task(&alice, &project, "B").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "nothing after 410");

    let enabled = app
        .ok(
            &alice,
            UPDATE,
            json!({ "id": id, "in": { "enabled": true } }),
        )
        .await;
    assert_eq!(enabled["updateWebhook"]["enabled"], true);
    assert_eq!(enabled["updateWebhook"]["disabledReason"], Value::Null);
    let got = receiver.wait_accepted(2).await;
    let titles: Vec<&str> = got
        .iter()
        .map(|r| r.body["task"]["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        ["A", "B"],
        "resumes at its cursor, the refused event first"
    );
}

#[tokio::test]
async fn a_receiver_down_past_the_give_up_time_is_disabled_with_the_reason() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhook_give_up_after = Duration::from_millis(1500);
        c.webhook_retry_schedule = vec![Duration::from_millis(200)];
    })
    .await;
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    create_webhook(
        &app,
        &alice,
        &project,
        &format!("http://{closed}/hook"),
        &["TASK_CREATED"],
    )
    .await;
    app.create_task(&alice, &project, "T").await;
    let hook = wait_webhook(&app, &alice, &project, |h| h["enabled"] == false).await;
    let reason = hook["disabledReason"].as_str().unwrap();
    assert!(reason.starts_with("failing since"), "{reason}");
    assert_eq!(hook["lastDeliveredSeq"], 1, "the event is still owed");
    assert_eq!(hook["lag"], 1);
}

#[tokio::test]
async fn rotating_the_secret_signs_with_both_during_the_overlap() {
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        secret: old,
    } = hooked(Receiver::start().await, &["TASK_CREATED"]).await;
    app.create_task(&alice, &project, "before").await;
    let before = receiver.wait_accepted(1).await;
    assert_eq!(before[0].signature.split(' ').count(), 1);

    let rotated = app
        .ok(
            &alice,
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret webhook { id } } }",
            json!({ "id": id }),
        )
        .await;
    let new = rotated["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert_ne!(new, old);
    app.create_task(&alice, &project, "after").await;
    let after = receiver.wait_accepted(2).await;
    let last = &after[1];
    assert_eq!(last.signature.split(' ').count(), 2, "{}", last.signature);
    assert!(last.signed_by(new) && last.signed_by(&old));

    // The listing never shows a secret.
    let listed = app.ok(&alice, LIST, json!({ "p": project })).await;
    assert!(!listed.to_string().contains(new) && !listed.to_string().contains(&old));
}

#[tokio::test]
async fn internal_addresses_are_refused_unless_allowed() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://127.1/hook",
        "http://[::1]/hook",
        "http://localhost:9/hook",
        "http://0.0.0.0/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/",
        "not a url",
    ] {
        let refused = app
            .gql(
                Some(&alice),
                CREATE,
                json!({ "in": { "projectId": project, "url": url, "eventKinds": ["TASK_CREATED"] } }),
            )
            .await;
        assert_eq!(
            error_code(&refused),
            Some("BAD_USER_INPUT"),
            "{url}: {refused}"
        );
        assert_eq!(error_field(&refused), Some("input.url"), "{url}");
        assert!(!refused.to_string().contains("internal error"));
    }
    let listed = app.ok(&alice, LIST, json!({ "p": project })).await;
    assert_eq!(listed["webhooks"], json!([]));
}

#[tokio::test]
async fn an_address_allowed_when_saved_is_checked_again_when_connecting() {
    let receiver = Receiver::start().await;
    let mut lax = spawn_app_with(fast).await;
    let alice = lax.token("alice");
    let project = lax.create_project(&alice, "P").await;
    let (id, _) = create_webhook(&lax, &alice, &project, &receiver.url(), &["TASK_CREATED"]).await;
    lax.shut_down().await;
    // The same database, served by an instance that does not allow private addresses.
    let strict = spawn_app_sharing(&lax, |c| {
        fast(c);
        c.webhook_allow_private = false;
    })
    .await;
    strict.create_task(&alice, &project, "T").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let page = strict
            .ok(&alice, DELIVERIES, json!({ "w": id }))
            .await["webhookDeliveries"]["deliveries"]
            .clone();
        if let Some(first) = page.as_array().unwrap().last().cloned() {
            break first;
        }
        assert!(std::time::Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused["error"].as_str().unwrap().starts_with("refused"),
        "{refused}"
    );
    assert!(
        receiver.received().is_empty(),
        "no request reached the address"
    );
}

#[tokio::test]
async fn only_owners_and_admin_tokens_manage_webhooks() {
    let app = spawn_app_with(fast).await;
    let receiver = Receiver::start().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "eve", "EDITOR").await;
    let input = json!({ "in": { "projectId": project, "url": receiver.url(), "eventKinds": ["TASK_CREATED"] } });
    let editor = app
        .gql(Some(&app.token("eve")), CREATE, input.clone())
        .await;
    assert_eq!(error_code(&editor), Some("FORBIDDEN"), "{editor}");
    let stranger = app
        .gql(Some(&app.token("mallory")), CREATE, input.clone())
        .await;
    assert_eq!(error_code(&stranger), Some("NOT_FOUND"), "{stranger}");
    let listed = app
        .gql(Some(&app.token("eve")), LIST, json!({ "p": project }))
        .await;
    assert_eq!(error_code(&listed), Some("FORBIDDEN"), "{listed}");

    let token = |scopes: Value| {
        let app = &app;
        let alice = alice.clone();
        async move {
            app.ok(
                &alice,
                "mutation($s: [ApiScope!]!) { createApiToken(input: {name: \"hooks\", scopes: $s}) { secret } }",
                json!({ "s": scopes }),
            )
            .await["createApiToken"]["secret"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let writer = token(json!(["WRITE"])).await;
    let refused = app.gql(Some(&writer), CREATE, input.clone()).await;
    assert_eq!(error_code(&refused), Some("FORBIDDEN"), "{refused}");
    let admin = token(json!(["ADMIN"])).await;
    let created = app.ok(&admin, CREATE, input).await;
    let id = created["createWebhook"]["webhook"]["id"].as_str().unwrap();

    // The change is recorded as made through the token.
    let events = app
        .ok(
            &alice,
            "query($p: ID!) { events(projectId: $p) { events { kind actorVia actorTokenName } } }",
            json!({ "p": project }),
        )
        .await;
    let made = events["events"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "WEBHOOK_CREATED")
        .unwrap()
        .clone();
    assert_eq!(made["actorVia"], "API_TOKEN");
    assert_eq!(made["actorTokenName"], "hooks");

    let deleted = app
        .gql(
            Some(&app.token("eve")),
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&deleted), Some("FORBIDDEN"), "{deleted}");
    let deleted = app
        .ok(
            &alice,
            "mutation($id: ID!) { deleteWebhook(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["deleteWebhook"], true);
    let events = app.events(&alice, &project, 0).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.ends_with(&["WEBHOOK_CREATED", "WEBHOOK_DELETED"]),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn deliveries_page_and_events_can_be_redelivered_or_replayed() {
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        ..
    } = hooked(Receiver::start().await, &["TASK_CREATED"]).await;
    for i in 0..5 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    let first_round = receiver.wait_accepted(5).await;
    // Logged once each answer is in: wait for the cursor, which moves after the log.
    wait_webhook(&app, &alice, &project, |h| h["lastDeliveredSeq"] == 6).await;

    // Pages of two, newest first, until the end.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .ok(
                &alice,
                DELIVERIES,
                json!({ "w": id, "first": 2, "after": after }),
            )
            .await["webhookDeliveries"]
            .clone();
        seen.extend(
            page["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["seq"].as_i64().unwrap()),
        );
        if page["hasMore"] == false {
            break;
        }
        after = page["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, vec![6, 5, 4, 3, 2]);

    let again = app
        .ok(
            &alice,
            "mutation($w: ID!) { redeliverWebhookEvent(webhookId: $w, seq: 4) }",
            json!({ "w": id }),
        )
        .await;
    assert_eq!(again["redeliverWebhookEvent"], true);
    let got = receiver.wait_accepted(6).await;
    assert_eq!(got[5].seq(), 4);
    assert_ne!(
        got[5].id, first_round[2].id,
        "a redelivery is a new message"
    );

    let replayed = app
        .ok(
            &alice,
            "mutation($w: ID!) { replayWebhook(webhookId: $w, fromSeq: 5) { lastDeliveredSeq } }",
            json!({ "w": id }),
        )
        .await;
    assert_eq!(replayed["replayWebhook"]["lastDeliveredSeq"], 4);
    let got = receiver.wait_accepted(8).await;
    let seqs: Vec<i64> = got[6..].iter().map(Received::seq).collect();
    assert_eq!(
        seqs,
        vec![5, 6],
        "from 5 on (the replay's own event is not a wanted kind)"
    );
    assert_ne!(
        got[6].id, first_round[3].id,
        "replayed messages have new ids"
    );

    let bad = app
        .gql(
            Some(&alice),
            "mutation($w: ID!) { replayWebhook(webhookId: $w, fromSeq: 0) { id } }",
            json!({ "w": id }),
        )
        .await;
    assert_eq!(error_code(&bad), Some("BAD_USER_INPUT"), "{bad}");
    // Once the log has pruned the start, replaying from there is CURSOR_EXPIRED.
    // Older than a retention of 1 ms for sure, whatever the clock's granularity.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tasknest::events::retention::prune(&app.state.db, Duration::from_millis(1))
        .await
        .unwrap();
    let expired = app
        .gql(
            Some(&alice),
            "mutation($w: ID!) { replayWebhook(webhookId: $w, fromSeq: 2) { id } }",
            json!({ "w": id }),
        )
        .await;
    assert_eq!(error_code(&expired), Some("CURSOR_EXPIRED"), "{expired}");
}

#[tokio::test]
async fn two_instances_deliver_each_event_once_and_a_killed_deliverer_is_replaced() {
    let Some(_) = require_postgres(
        "two_instances_deliver_each_event_once_and_a_killed_deliverer_is_replaced",
    ) else {
        return;
    };
    let Some(redis) =
        require_redis("two_instances_deliver_each_event_once_and_a_killed_deliverer_is_replaced")
    else {
        return;
    };
    // Slow enough that the kill lands mid-stream.
    let receiver = Receiver::scripted(|_| Reply {
        status: 200,
        delay: Duration::from_millis(100),
    })
    .await;
    // This test's own instance only serves the API; two child processes deliver.
    let app = spawn_app_with(|c| {
        fast(c);
        c.redis_url = Some(redis.clone());
        c.webhook_concurrency = 0;
    })
    .await;
    let env = [
        ("TASKNEST_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TASKNEST_WEBHOOK_TIMEOUT", "800ms"),
        ("TASKNEST_WEBHOOK_RETRY_SCHEDULE", "100ms"),
        ("TASKNEST_WEBHOOK_POLL_INTERVAL", "100ms"),
        ("TASKNEST_WEBHOOK_LEASE", "2s"),
    ];
    let mut doomed = ChildInstance::start_with(&app.database_url, &redis, &env).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let (_, secret) =
        create_webhook(&app, &alice, &project, &receiver.url(), &["TASK_CREATED"]).await;
    for i in 0..40 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    receiver.wait_for(20, |r| r.len() >= 10).await;
    // A second deliverer joins; the first holds the lease, so it only waits its turn.
    let _survivor = ChildInstance::start_with(&app.database_url, &redis, &env).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kill = receiver.received();
    let seqs: Vec<i64> = before_kill.iter().map(Received::seq).collect();
    // One deliverer at a time: the order never goes back. On a busy machine an attempt may
    // outlast the 800 ms timeout and be sent again (at least once), so a repeat is allowed.
    assert!(
        seqs.windows(2).all(|w| w[0] <= w[1]),
        "one deliverer at a time: {seqs:?}"
    );
    doomed.kill();
    let got = receiver
        .wait_for(30, |r| {
            let mut seqs: Vec<i64> = r.iter().map(Received::seq).collect();
            seqs.dedup();
            seqs.last() == Some(&41)
        })
        .await;
    // In order; anything sent twice is the same message (same webhook-id), right where the
    // killed instance stopped.
    let seqs: Vec<i64> = got.iter().map(Received::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "in order: {seqs:?}");
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique, (2..=41).collect::<Vec<_>>(), "nothing lost");
    let timed_out_before_kill = before_kill.len()
        - before_kill
            .iter()
            .map(Received::seq)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    assert!(
        seqs.len() - unique.len() <= 1 + timed_out_before_kill,
        "the kill repeated at most the in-flight one: {seqs:?}"
    );
    for pair in got.windows(2) {
        if pair[0].seq() == pair[1].seq() {
            assert_eq!(
                pair[0].id, pair[1].id,
                "a repeat carries the same webhook-id"
            );
        }
    }
    assert!(got.iter().all(|r| r.signed_by(&secret)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standardwebhooks_library_verifies_every_delivery() {
    let Some(dir) = require_client_project("the standardwebhooks test") else {
        return;
    };
    let Hooked {
        app,
        receiver,
        alice,
        project,
        id,
        secret: old,
    } = hooked(Receiver::start().await, &["TASK_CREATED", "TASK_UPDATED"]).await;
    let task = app.create_task(&alice, &project, "Ünïcödé ✓").await;
    rename(&app, &alice, &task, "quotes \" and \\ backslashes").await;
    let rotated = app
        .ok(
            &alice,
            "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret } }",
            json!({ "id": id }),
        )
        .await;
    let new = rotated["rotateWebhookSecret"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    rename(&app, &alice, &task, "after the rotation").await;
    let got = receiver.wait_accepted(3).await;

    // Each delivery checked with the secret the integrator holds at the time, and the last
    // one (signed by both) with each of the two secrets.
    let mut cases: Vec<Value> = got
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "secret": if i < 2 { &old } else { &new },
                "id": r.id, "timestamp": r.timestamp, "signature": r.signature,
                "body": String::from_utf8(r.raw.clone()).expect("UTF-8 body"),
            })
        })
        .collect();
    let mut with_old = cases[2].clone();
    with_old["secret"] = json!(old);
    cases.push(with_old);
    let mut tampered = cases[0].clone();
    tampered["body"] = json!(tampered["body"].as_str().expect("body").replace("Ü", "U"));
    cases.push(tampered);

    let verdicts = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new("node")
            .arg("standardwebhooks.mjs")
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("node runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&serde_json::to_vec(&cases).expect("JSON"))
            .expect("written");
        child.wait_with_output().expect("node ends")
    })
    .await
    .expect("joined");
    assert!(
        verdicts.status.success(),
        "{}",
        String::from_utf8_lossy(&verdicts.stderr)
    );
    let verdicts: Value = serde_json::from_slice(&verdicts.stdout).expect("JSON verdicts");
    let ok: Vec<bool> = verdicts
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["ok"] == true)
        .collect();
    assert_eq!(ok, [true, true, true, true, false], "{verdicts}");
    assert_eq!(verdicts[0]["type"], "TASK_CREATED");
    assert_eq!(verdicts[2]["seq"], 5, "after the rotation's own event (4)");
}
