//! `projectEvents` over graphql-ws on one instance (no Redis): fan-out, replay,
//! catch-up, removal, deletion, and shutdown.

use serde_json::{Value, json};

use crate::helpers::*;

pub const EVENTS: &str = "subscription($p: ID!, $a: Int) { projectEvents(projectId: $p, after: $a) { seq kind taskId changes clientMutationId actor { id name } task { id title version createdBy { name } } } }";

pub async fn rename(app: &TestApp, token: &str, task: &Value, title: &str) {
    app.ok(
        token,
        "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { __typename } }",
        json!({ "id": task["id"], "t": title }),
    )
    .await;
}

#[tokio::test]
async fn fifty_subscribers_each_receive_every_event_of_a_hundred_mutations_in_order() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut ws = app.ws(&alice).await;
        // `after: 1` makes the hand-over race-free: whatever happens after seq 1 arrives.
        ws.subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
            .await;
        clients.push(ws);
    }
    for i in 0..100 {
        rename(&app, &alice, &task, &format!("v{i}")).await;
    }
    let readers = clients.into_iter().map(|mut ws| async move {
        let mut seqs = Vec::new();
        for _ in 0..100 {
            let event = ws.next_event("e").await;
            seqs.push(event["seq"].as_i64().expect("seq"));
        }
        let last = ws.next_event_or_nothing().await;
        (seqs, last)
    });
    for (seqs, extra) in futures_util::future::join_all(readers).await {
        assert_eq!(seqs, (2..=101).collect::<Vec<_>>());
        assert!(
            extra.is_none(),
            "no duplicate after the last event: {extra:?}"
        );
    }
}

#[tokio::test]
async fn an_event_carries_the_task_its_users_and_the_client_mutation_id() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    app.ok(
        &alice,
        "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"Live\", clientMutationId: \"c-1\"}) { id } }",
        json!({ "p": project }),
    )
    .await;
    let event = ws.next_event("e").await;
    assert_eq!(event["seq"], 1);
    assert_eq!(event["kind"], "TASK_CREATED");
    assert_eq!(event["clientMutationId"], "c-1");
    assert_eq!(
        event["actor"],
        json!({ "id": app.user("alice"), "name": "Alice" })
    );
    assert_eq!(event["task"]["title"], "Live");
    assert_eq!(event["task"]["createdBy"]["name"], "Alice");
}

#[tokio::test]
async fn resubscribing_after_a_gap_replays_exactly_the_missed_events_then_goes_live() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    assert_eq!(ws.next_event("e").await["seq"], 1);
    ws.close().await;

    for i in 0..20 {
        rename(&app, &alice, &task, &format!("offline {i}")).await;
    }
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;
    for expected in 2..=21 {
        let event = ws.next_event("e").await;
        assert_eq!(event["seq"], expected);
        assert_eq!(event["task"]["title"], format!("offline {}", expected - 2));
    }
    rename(&app, &alice, &task, "live").await;
    let live = ws.next_event("e").await;
    assert_eq!(live["seq"], 22);
    assert_eq!(live["task"]["title"], "live");
}

#[tokio::test]
async fn without_after_the_stream_starts_at_the_next_event() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project })).await;
    // The subscription joins asynchronously; keep writing until it shows up live.
    let mut first = None;
    for i in 0..50 {
        rename(&app, &alice, &task, &format!("n{i}")).await;
        if let Some(event) = ws.next_event_within("e", 100).await {
            first = Some(event);
            break;
        }
    }
    let first = first.expect("a live event");
    assert!(
        first["seq"].as_i64().expect("seq") >= 2,
        "history is not replayed without after"
    );
    rename(&app, &alice, &task, "after").await;
    let mut previous = first["seq"].as_i64().expect("seq");
    loop {
        let next = ws.next_event("e").await;
        assert_eq!(
            next["seq"].as_i64(),
            Some(previous + 1),
            "no gap, no repeat"
        );
        previous += 1;
        if next["task"]["title"] == "after" {
            break;
        }
    }
}

#[tokio::test]
async fn a_removed_member_s_subscription_ends_with_forbidden() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "VIEWER").await;
    let mut ws = app.ws(&bob).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 1 }))
        .await;
    app.create_task(&alice, &project, "seen").await;
    assert_eq!(ws.next_event("e").await["seq"], 2);
    app.ok(
        &alice,
        "mutation($p: ID!, $u: ID!) { removeMember(projectId: $p, userId: $u) }",
        json!({ "p": project, "u": app.user("bob") }),
    )
    .await;
    let ended = ws.next().await.expect("a message");
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["payload"][0]["extensions"]["code"], "FORBIDDEN");
    app.create_task(&alice, &project, "unseen").await;
    assert_eq!(
        ws.next_event_or_nothing().await,
        None,
        "nothing after removal"
    );

    ws.subscribe("again", EVENTS, json!({ "p": project })).await;
    let refused = ws.next().await.expect("a message");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn a_non_member_cannot_subscribe() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&app.token("mallory")).await;
    ws.subscribe("e", EVENTS, json!({ "p": project })).await;
    let refused = ws.next().await.expect("a message");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn deleting_the_project_delivers_the_event_and_completes_the_stream() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    app.create_task(&alice, &project, "T").await;
    assert_eq!(
        ws.next_event("e").await["seq"],
        1,
        "the subscription is live"
    );
    app.ok(
        &alice,
        "mutation($p: ID!) { deleteProject(id: $p) }",
        json!({ "p": project }),
    )
    .await;
    assert_eq!(ws.next_event("e").await["kind"], "PROJECT_DELETED");
    let complete = ws.next().await.expect("complete");
    assert_eq!(complete, json!({ "type": "complete", "id": "e" }));
}

#[tokio::test]
async fn shutting_down_closes_websockets_with_1001() {
    let mut app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("e", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    app.shut_down().await;
    assert_eq!(ws.close_code().await, Some(1001));
}

#[tokio::test]
async fn queries_and_mutations_also_run_over_the_socket() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let mut ws = app.ws(&alice).await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    let answer = ws.next().await.expect("next");
    assert_eq!(answer["payload"]["data"]["me"]["id"], app.user("alice"));
    assert_eq!(
        ws.next().await.expect("complete"),
        json!({ "type": "complete", "id": "q" })
    );
}

#[tokio::test]
async fn a_subscriber_that_falls_far_behind_its_room_catches_up_from_the_log() {
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let project_id = uuid::Uuid::parse_str(&project).unwrap();
    let stream = tasknest::realtime::stream::project_events(
        app.state.realtime.hub.clone(),
        tasknest::realtime::stream::Subscriber::User(app.user("alice")),
        project_id,
        Some(0),
    );
    futures_util::pin_mut!(stream);
    assert_eq!(stream.next().await.unwrap().unwrap().seq(), 1);
    // The stream is not polled while more events than the room keeps (1,024) happen: its
    // receiver lags and the missing range must come from the log.
    let total = tasknest::realtime::hub::ROOM_BUFFER as i64 + 100;
    for i in 0..total {
        app.ok(
            &alice,
            "mutation($id: ID!, $p: Float!) { updateTask(id: $id, patch: {position: $p}) { __typename } }",
            json!({ "id": task["id"], "p": i as f64 }),
        )
        .await;
    }
    for expected in 2..=total + 1 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("an event")
            .expect("stream open")
            .expect("no error");
        assert_eq!(event.seq(), expected);
    }
}

#[tokio::test]
async fn identical_live_subscriptions_share_one_execution_and_still_check_each_member() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "VIEWER").await;
    app.add_member(&alice, &project, "carol", "VIEWER").await;
    let task = app.create_task(&alice, &project, "T").await;
    let live = "subscription($p: ID!) { projectEvents(projectId: $p) { seq kind task { title } } }";
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut ws = app.ws(&app.token(user)).await;
        ws.subscribe("live", live, json!({ "p": project })).await;
        clients.push(ws);
    }
    // Live from now: write until every subscriber has seen an event, then compare.
    let mut last_seen = [0i64; 3];
    for i in 0..100 {
        rename(&app, &alice, &task, &format!("warm {i}")).await;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        for (k, ws) in clients.iter_mut().enumerate() {
            while let Some(event) = ws.next_event_within("live", 20).await {
                last_seen[k] = event["seq"].as_i64().unwrap();
            }
        }
        if last_seen.iter().all(|s| *s > 0) && last_seen.iter().all(|s| *s == last_seen[0]) {
            break;
        }
    }
    assert!(
        last_seen[0] > 0 && last_seen.iter().all(|s| *s == last_seen[0]),
        "{last_seen:?}"
    );
    let base = last_seen[0];

    rename(&app, &alice, &task, "shared").await;
    for ws in &mut clients {
        let event = ws.next_event("live").await;
        assert_eq!(event["seq"], base + 1);
        assert_eq!(event["task"]["title"], "shared");
    }
    app.ok(
        &alice,
        "mutation($p: ID!, $u: ID!) { removeMember(projectId: $p, userId: $u) }",
        json!({ "p": project, "u": app.user("bob") }),
    )
    .await;
    let bob = &mut clients[1];
    let ended = bob.next().await.expect("a message");
    assert_eq!(
        ended["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{ended}"
    );
    for k in [0, 2] {
        let event = clients[k].next_event("live").await;
        assert_eq!(event["kind"], "MEMBER_REMOVED");
        assert_eq!(event["seq"], base + 2);
    }
    rename(&app, &alice, &task, "after bob").await;
    for k in [0, 2] {
        assert_eq!(clients[k].next_event("live").await["seq"], base + 3);
    }
    assert_eq!(clients[1].next_event_or_nothing().await, None);
}

#[tokio::test]
async fn a_websocket_subscriber_that_stops_reading_catches_up_from_the_log_without_a_gap() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut ws = app.ws_with_small_window(&alice).await;
    let live =
        "subscription($p: ID!) { projectEvents(projectId: $p) { seq task { description } } }";
    ws.subscribe("live", live, json!({ "p": project })).await;
    // Live from now: the first event seen is where this subscriber starts.
    let mut first = None;
    for i in 0..100 {
        describe(&app, &alice, &task, &format!("warm {i}")).await;
        if let Some(event) = ws.next_event_within("live", 50).await {
            first = event["seq"].as_i64();
            break;
        }
    }
    let mut first = first.expect("the subscription is live");
    while let Some(event) = ws.next_event_within("live", 300).await {
        first = event["seq"].as_i64().expect("seq");
    }

    // The client reads nothing while 20 KB events pile up, until the server's output for it
    // is past its limit and the subscription goes on alone. One whose group ended during the
    // warm-up (its feed from the room lagged on a loaded machine) goes on alone already, with
    // nothing left to fall behind from; the catch-up below must hold all the same.
    let behind = || app.state.metrics.subscribers_behind.get();
    let before = behind();
    let mut last = first;
    while before == 0 && behind() == before {
        assert!(
            last - first < 2_000,
            "the subscriber never fell behind ({} shared executions)",
            app.state.metrics.shared_executions.get()
        );
        last += 1;
        describe(&app, &alice, &task, &format!("{last:>20000}")).await;
    }
    // A few more while it catches up on its own.
    for _ in 0..5 {
        last += 1;
        describe(&app, &alice, &task, &format!("{last:>20000}")).await;
    }
    for seq in first + 1..=last {
        let event = ws.next_event("live").await;
        assert_eq!(event["seq"], seq, "every event once, in order");
        let description = event["task"]["description"].as_str().expect("text");
        assert_eq!(description.trim_start(), seq.to_string());
    }
    assert_eq!(ws.next_event_or_nothing().await, None);
}

async fn describe(app: &TestApp, token: &str, task: &Value, description: &str) {
    app.ok(
        token,
        "mutation($id: ID!, $d: String!) { updateTask(id: $id, patch: {description: $d}) { __typename } }",
        json!({ "id": task["id"], "d": description }),
    )
    .await;
}
