//! Presence: JOINED once per user, FOCUS_CHANGED coalesced, LEFT when the last connection
//! goes, the same list on every instance, and LEFT for users of an instance that died.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

pub const EVENTS: &str = "subscription($p: ID!) { presenceEvents(projectId: $p) { kind projectId focusTaskId at user { id name } } }";
const LIST: &str =
    "query($p: ID!) { presence(projectId: $p) { focusTaskId onlineSince lastSeenAt user { id } } }";
pub const FOCUS: &str = "mutation($p: ID!, $t: ID) { focusTask(projectId: $p, taskId: $t) { focusTaskId user { id } } }";

pub fn presence_event(message: &Value) -> &Value {
    &message["payload"]["data"]["presenceEvents"]
}

/// Presence ids in a `presence` answer.
pub async fn present(app: &TestApp, token: &str, project: &str) -> Vec<String> {
    let data = app.ok(token, LIST, json!({ "p": project })).await;
    data["presence"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| app.name_of(p["user"]["id"].as_str().expect("an id")))
        .collect()
}

/// Waits until `presence` lists exactly `users` (names of this test's users).
pub async fn until_present(app: &TestApp, token: &str, project: &str, users: &[&str]) {
    for _ in 0..100 {
        let mut now = present(app, token, project).await;
        now.sort();
        if now == users {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "presence never became {users:?}: {:?}",
        present(app, token, project).await
    );
}

#[tokio::test]
async fn joining_a_second_tab_focusing_and_leaving_produce_one_event_each() {
    // A wide coalescing window, so that the burst below falls in one or two windows even
    // on a slow machine.
    let app = spawn_app_with(|c| c.presence_coalesce = Duration::from_secs(1)).await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let task = app.create_task(&alice, &project, "T").await;

    let mut watcher = app.ws(&alice).await;
    watcher
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&app, &alice, &project, &["alice"]).await;

    let mut tab1 = app.ws(&bob).await;
    tab1.subscribe("p", EVENTS, json!({ "p": project })).await;
    let joined = watcher.next().await.unwrap();
    assert_eq!(presence_event(&joined)["kind"], "JOINED");
    assert_eq!(
        presence_event(&joined)["user"],
        json!({ "id": app.user("bob"), "name": "Bob" })
    );
    let mut tab2 = app.ws(&bob).await;
    tab2.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&app, &alice, &project, &["alice", "bob"]).await;

    // Twenty focus changes in a burst reach the watcher coalesced, ending on the last.
    for i in 0..20 {
        let target = if i % 2 == 0 {
            Value::Null
        } else {
            task["id"].clone()
        };
        app.ok(&bob, FOCUS, json!({ "p": project, "t": target }))
            .await;
    }
    let focus = app
        .ok(&bob, FOCUS, json!({ "p": project, "t": task["id"] }))
        .await;
    assert_eq!(focus["focusTask"]["focusTaskId"], task["id"]);
    let mut focus_events = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(2500), watcher.next()).await
    {
        focus_events.push(presence_event(&message).clone());
    }
    assert!(
        !focus_events.is_empty() && focus_events.len() <= 3,
        "a burst of 21 focus changes gave {} events",
        focus_events.len()
    );
    assert!(
        focus_events.iter().all(|e| e["kind"] == "FOCUS_CHANGED"),
        "{focus_events:?}"
    );
    assert_eq!(focus_events.last().unwrap()["focusTaskId"], task["id"]);
    let listed = app.ok(&alice, LIST, json!({ "p": project })).await;
    let bob_entry = listed["presence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user"]["id"] == app.user("bob"))
        .unwrap()
        .clone();
    assert_eq!(bob_entry["focusTaskId"], task["id"]);

    tab1.close().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watcher.next())
            .await
            .is_err(),
        "closing one of two tabs is not leaving"
    );
    tab2.close().await;
    let left = watcher.next().await.unwrap();
    assert_eq!(presence_event(&left)["kind"], "LEFT");
    assert_eq!(presence_event(&left)["user"]["id"], app.user("bob"));
    until_present(&app, &alice, &project, &["alice"]).await;
}

#[tokio::test]
async fn non_members_can_neither_see_nor_join_presence() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mallory = app.token("mallory");
    let response = app.gql(Some(&mallory), LIST, json!({ "p": project })).await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
    let mut ws = app.ws(&mallory).await;
    ws.subscribe("p", EVENTS, json!({ "p": project })).await;
    let refused = ws.next().await.unwrap();
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
    assert!(present(&app, &alice, &project).await.is_empty());
}

#[tokio::test]
async fn presence_is_shared_across_instances_through_redis() {
    let Some(redis) = require_redis("presence_is_shared_across_instances_through_redis") else {
        return;
    };
    shared_by_two_instances(|c: &mut tasknest::Config| c.redis_url = Some(redis.clone())).await;
}

/// Two instances configured by `configure` (sharing one Redis or Redis Cluster) show the same
/// presence, each user joins and leaves once, and focus changes cross.
pub async fn shared_by_two_instances(configure: impl Fn(&mut tasknest::Config) + Copy) {
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let bob = a.token("bob");
    let project = a.create_project(&alice, "P").await;
    a.add_member(&alice, &project, "bob", "EDITOR").await;
    let task = a.create_task(&alice, &project, "T").await;

    let mut on_a = a.ws(&alice).await;
    on_a.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&b, &bob, &project, &["alice"]).await;
    let mut on_b = b.ws(&bob).await;
    on_b.subscribe("p", EVENTS, json!({ "p": project })).await;
    let joined = on_a.next().await.expect("a presence event");
    assert_eq!(presence_event(&joined)["kind"], "JOINED");
    assert_eq!(presence_event(&joined)["user"]["id"], b.user("bob"));
    // A second tab of bob's on the other instance is no second JOINED.
    let mut bob_on_a = a.ws(&bob).await;
    bob_on_a
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&a, &alice, &project, &["alice", "bob"]).await;
    until_present(&b, &bob, &project, &["alice", "bob"]).await;

    b.ok(&bob, FOCUS, json!({ "p": project, "t": task["id"] }))
        .await;
    let focus = on_a.next().await.expect("a presence event");
    assert_eq!(presence_event(&focus)["kind"], "FOCUS_CHANGED", "{focus}");
    assert_eq!(presence_event(&focus)["focusTaskId"], task["id"]);

    on_b.close().await;
    bob_on_a.close().await;
    let left = on_a.next().await.expect("a presence event");
    assert_eq!(presence_event(&left)["kind"], "LEFT");
    until_present(&b, &bob, &project, &["alice"]).await;
}

#[tokio::test]
async fn the_users_of_a_killed_instance_are_marked_left_once_within_the_timeout() {
    let Some(redis) =
        require_redis("the_users_of_a_killed_instance_are_marked_left_once_within_the_timeout")
    else {
        return;
    };
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(redis.clone());
        c.presence_timeout = Duration::from_millis(1500);
    };
    let a = spawn_app_with(configure).await;
    // A second survivor, sweeping too: still one LEFT.
    let _b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let bob = a.token("bob");
    let project = a.create_project(&alice, "P").await;
    a.add_member(&alice, &project, "bob", "EDITOR").await;
    let mut doomed = ChildInstance::start(&a.database_url, &redis).await;

    let mut on_a = a.ws(&alice).await;
    on_a.subscribe("p", EVENTS, json!({ "p": project })).await;
    until_present(&a, &alice, &project, &["alice"]).await;
    let mut on_doomed = WsClient::connect(doomed.addr, "graphql-transport-ws").await;
    let ack = on_doomed
        .init(json!({ "authorization": format!("Bearer {bob}") }))
        .await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    on_doomed
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&a, &alice, &project, &["alice", "bob"]).await;
    let joined = on_a.next().await.unwrap();
    assert_eq!(presence_event(&joined)["kind"], "JOINED");

    doomed.kill();
    let killed_at = std::time::Instant::now();
    let left = on_a.next().await.unwrap();
    assert_eq!(presence_event(&left)["kind"], "LEFT");
    assert_eq!(presence_event(&left)["user"]["id"], a.user("bob"));
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "LEFT took {:?}",
        killed_at.elapsed()
    );
    until_present(&a, &alice, &project, &["alice"]).await;
    // Both survivors' ticks have passed several times by now.
    let again = tokio::time::timeout(Duration::from_secs(2), on_a.next()).await;
    assert!(again.is_err(), "one LEFT only, then {again:?}");
}

#[tokio::test]
async fn an_instance_follows_the_presence_of_only_the_projects_it_has_listeners_in() {
    const NAME: &str = "an_instance_follows_the_presence_of_only_the_projects_it_has_listeners_in";
    let Some(redis) = require_redis(NAME) else {
        return;
    };
    // Short ticks: a room nobody listens to closes within about two of them.
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(redis.clone());
        c.presence_timeout = Duration::from_millis(900);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let bob = a.token("bob");
    let watched = a.create_project(&alice, "Watched on B").await;
    let elsewhere = a.create_project(&alice, "Only on A").await;
    a.add_member(&alice, &watched, "bob", "EDITOR").await;
    a.add_member(&alice, &elsewhere, "bob", "EDITOR").await;
    let followers = |p: &str| {
        let channel = format!("tasknest:presence:{{{p}}}");
        let redis = redis.clone();
        async move { crate::multi_instance::redis_subscribers(&redis, &channel).await }
    };

    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("p", EVENTS, json!({ "p": watched })).await;
    until_present(&a, &alice, &watched, &["alice"]).await;
    assert_eq!(
        followers(&watched).await,
        1,
        "B follows the watched project"
    );
    assert_eq!(followers(&elsewhere).await, 0, "nobody follows the other");

    // Bob in the other project, on A: A follows it, B hears nothing of it.
    let mut bob_elsewhere = a.ws(&bob).await;
    bob_elsewhere
        .subscribe("p", EVENTS, json!({ "p": elsewhere }))
        .await;
    until_present(&a, &bob, &elsewhere, &["bob"]).await;
    assert_eq!(followers(&elsewhere).await, 1);
    assert_eq!(
        on_b.next_event_or_nothing().await,
        None,
        "B hears nothing of it"
    );

    // Bob in the watched project, on A: alice on B hears it.
    let mut bob_watched = a.ws(&bob).await;
    bob_watched
        .subscribe("p", EVENTS, json!({ "p": watched }))
        .await;
    let joined = on_b.next().await.expect("a presence event");
    assert_eq!(presence_event(&joined)["kind"], "JOINED", "{joined}");
    assert_eq!(presence_event(&joined)["projectId"], watched);
    assert_eq!(presence_event(&joined)["user"]["id"], a.user("bob"));
    assert_eq!(followers(&watched).await, 2);

    // Once alice's subscription ends, B stops following the project.
    on_b.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while followers(&watched).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "B unfollows the watched project"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((bob_elsewhere, bob_watched));
}

#[tokio::test]
async fn presence_that_redis_forgot_or_swept_is_written_back_by_the_next_heartbeat() {
    const NAME: &str = "presence_that_redis_forgot_or_swept_is_written_back_by_the_next_heartbeat";
    if require_redis(NAME).is_none() {
        return;
    }
    let redis = RedisServer::start().await;
    let url = redis.url();
    let app = spawn_app_with(|c| {
        c.redis_url = Some(url.clone());
        c.presence_timeout = Duration::from_millis(1500);
    })
    .await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let mut watcher = app.ws(&alice).await;
    watcher
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    until_present(&app, &alice, &project, &["alice"]).await;
    let mut bob_tab = app.ws(&bob).await;
    bob_tab
        .subscribe("p", EVENTS, json!({ "p": project }))
        .await;
    let joined = watcher.next().await.expect("a presence event");
    assert_eq!(presence_event(&joined)["kind"], "JOINED");
    until_present(&app, &alice, &project, &["alice", "bob"]).await;

    // What a Redis that restarted empty between two ticks looks like: no call failed, the
    // keys are just gone.
    let mut conn = ::redis::Client::open(url.as_str())
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis");
    let () = ::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("FLUSHALL");
    let second_tab = another_tab_once_rewritten(&app, &project, &mut watcher).await;

    // What a survivor's sweep leaves of an instance it took for dead while it was only late:
    // the lease is still there, the entries and counts are gone.
    let keys: Vec<String> = ["entries", "users"]
        .iter()
        .map(|k| format!("tasknest:presence:{{{project}}}:{k}"))
        .collect();
    let () = ::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let third_tab = another_tab_once_rewritten(&app, &project, &mut watcher).await;

    // Leaving, once every tab is gone, is one LEFT.
    bob_tab.close().await;
    second_tab.close().await;
    third_tab.close().await;
    let left = watcher.next().await.expect("a presence event");
    assert_eq!(presence_event(&left)["kind"], "LEFT", "{left}");
    assert_eq!(presence_event(&left)["user"]["id"], app.user("bob"));
}

/// Once presence that Redis lost is written back, alice and bob are listed again, and the
/// counts came back with the entries: another tab of bob's is no JOINED.
async fn another_tab_once_rewritten(
    app: &TestApp,
    project: &str,
    watcher: &mut WsClient,
) -> WsClient {
    until_present(app, &app.token("alice"), project, &["alice", "bob"]).await;
    let mut tab = app.ws(&app.token("bob")).await;
    tab.subscribe("p", EVENTS, json!({ "p": project })).await;
    assert_eq!(
        watcher.next_event_or_nothing().await,
        None,
        "no JOINED again"
    );
    tab
}

#[tokio::test]
async fn a_room_of_five_hundred_present_users_stays_correct() {
    let redis = std::env::var("TEST_REDIS_URL").ok();
    let app = spawn_app_with(|c| c.redis_url = redis.clone()).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "Big room").await;
    let task = app.create_task(&alice, &project, "T").await;
    let users: Vec<String> = (0..500).map(|i| format!("user{i:03}")).collect();
    for user in &users {
        app.add_member(&alice, &project, user, "VIEWER").await;
    }
    let head = app.events(&alice, &project, 0).await["lastSeq"].clone();
    // Each user holds one socket with presence and events; a task per socket drains it.
    let mut drains = Vec::new();
    for user in &users {
        let mut ws = app.ws(&app.token(user)).await;
        ws.subscribe("p", EVENTS, json!({ "p": project })).await;
        ws.subscribe(
            "e",
            crate::subscriptions::EVENTS,
            json!({ "p": project, "a": head }),
        )
        .await;
        let mine = project.clone();
        drains.push(tokio::spawn(async move {
            // Read until this socket has seen the marker event, keeping what presence said.
            // A late joiner hears nothing until the marker, which comes only once the test
            // has seen all 500 listed; on a loaded machine that can take minutes, so the wait
            // is the test's whole budget. A reader hands its socket back rather than close
            // it: a socket closed once it has the marker would send its user's LEFT to the
            // sockets still reading up to theirs.
            let mut heard = Vec::new();
            loop {
                let Some(message) = ws.next_waiting(Duration::from_secs(300)).await else {
                    return (false, heard, ws);
                };
                if message["id"] == "p" {
                    let event = presence_event(&message);
                    heard.push(format!(
                        "{} {} {}{}",
                        message["type"].as_str().unwrap_or("?"),
                        event["kind"].as_str().unwrap_or("-"),
                        event["user"]["name"].as_str().unwrap_or("-"),
                        if event["projectId"] == mine {
                            String::new()
                        } else {
                            format!(" of project {}", event["projectId"])
                        },
                    ));
                } else if message["payload"]["data"]["projectEvents"]["task"]["title"] == "marker" {
                    return (true, heard, ws);
                }
            }
        }));
    }
    // The joins are processed as the server gets to them; with other tests running at the
    // same time on two cores that can take a while after the last socket connected.
    let mut listed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        listed = present(&app, &alice, &project).await;
        if listed.len() == 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    listed.sort();
    assert_eq!(listed, users, "every connected user is listed once");
    // Subscribed with `after`, nobody can miss the marker, whenever their stream went live.
    crate::subscriptions::rename(&app, &alice, &task, "marker").await;
    // Every socket's story first, then one verdict: the first failure alone can hide the
    // one that caused it.
    let mut no_marker = Vec::new();
    let mut wrong = Vec::new();
    let mut sockets = Vec::new();
    for (user, drain) in users.iter().zip(drains) {
        match drain.await {
            Ok((true, heard, ws)) => {
                sockets.push(ws);
                // Only those who joined after this socket can be announced to it, each once.
                let mut seen = std::collections::HashSet::new();
                let odd: Vec<&String> = heard
                    .iter()
                    .filter(|h| !h.starts_with("next JOINED ") || !seen.insert(*h))
                    .collect();
                if !odd.is_empty() || heard.len() >= 500 {
                    wrong.push(format!("{user}: {} messages, {odd:?}", heard.len()));
                }
            }
            Ok((false, _, _)) => no_marker.push(format!("{user} (socket closed)")),
            Err(err) => no_marker.push(format!("{user} ({err})")),
        }
    }
    assert!(
        no_marker.is_empty(),
        "every member gets the task event; missed by {no_marker:?}"
    );
    assert!(
        wrong.is_empty(),
        "at most one JOINED per later user, nothing else; {wrong:?}"
    );
}
