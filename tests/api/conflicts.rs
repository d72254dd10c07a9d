//! Conflicts reach every connection of the user who lost, and concurrent writers with
//! `baseVersion` never lose an update or reuse a version.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const CONFLICTS: &str = "subscription($p: ID!) { conflicts(projectId: $p) { taskId reason clientMutationId conflictingFields yourPatch serverTask { version status } } }";

const UPDATE: &str = r#"mutation($id: ID!, $patch: TaskPatch!, $base: Int, $cmid: String) {
  updateTask(id: $id, patch: $patch, baseVersion: $base, clientMutationId: $cmid) {
    __typename
    ... on TaskUpdated { merged task { version } }
    ... on TaskConflict { reason conflictingFields }
  } }"#;

/// Waits until the `conflicts` subscription is registered, by provoking conflicts until one
/// arrives (a conflict changes nothing, so probing is harmless).
async fn until_listening(app: &TestApp, token: &str, ws: &mut WsClient, task: &Value) {
    for i in 0..50 {
        // A fresh id each time: a retry of the same one would not be pushed again.
        let cmid = format!("probe-{i}");
        app.ok(
            token,
            UPDATE,
            json!({ "id": task["id"], "patch": { "title": "probe" }, "base": 1, "cmid": cmid }),
        )
        .await;
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), ws.next()).await
        {
            let cmid = message["payload"]["data"]["conflicts"]["clientMutationId"].as_str();
            assert!(cmid.is_some_and(|c| c.starts_with("probe-")), "{message}");
            // Later probes' conflicts may still be on their way: let them arrive and go.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), ws.next()).await
            {}
            return;
        }
    }
    panic!("the conflicts subscription never became live");
}

/// A moves a task to DONE from version 2 while B deletes it first: A's HTTP answer is
/// TASK_DELETED, and A's other tab (on `tab_app`) receives the same conflict.
async fn deleted_meanwhile_scenario(app: &TestApp, tab_app: &TestApp) {
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let task = app.create_task(&alice, &project, "T").await;
    // Make the task stale for probing (version 2, changed title).
    app.ok(
        &bob,
        UPDATE,
        json!({ "id": task["id"], "patch": { "title": "moved on" } }),
    )
    .await;

    let mut other_tab = tab_app.ws(&alice).await;
    other_tab
        .subscribe("c", CONFLICTS, json!({ "p": project }))
        .await;
    until_listening(app, &alice, &mut other_tab, &task).await;
    let mut bobs_tab = tab_app.ws(&bob).await;
    bobs_tab
        .subscribe("c", CONFLICTS, json!({ "p": project }))
        .await;

    app.ok(
        &bob,
        "mutation($id: ID!) { deleteTask(id: $id) { __typename } }",
        json!({ "id": task["id"] }),
    )
    .await;
    let lost = app
        .ok(
            &alice,
            UPDATE,
            json!({ "id": task["id"], "patch": { "status": "DONE" }, "base": 2, "cmid": "a-42" }),
        )
        .await;
    assert_eq!(lost["updateTask"]["reason"], "TASK_DELETED");

    let pushed = other_tab.next().await.expect("a conflict");
    let conflict = &pushed["payload"]["data"]["conflicts"];
    assert_eq!(conflict["reason"], "TASK_DELETED");
    assert_eq!(conflict["clientMutationId"], "a-42");
    assert_eq!(conflict["taskId"], task["id"]);
    assert_eq!(conflict["serverTask"], Value::Null);
    assert_eq!(conflict["yourPatch"], json!({ "status": "DONE" }));
    assert_eq!(
        tokio::time::timeout(Duration::from_millis(500), bobs_tab.next())
            .await
            .ok()
            .flatten(),
        None,
        "bob did not lose anything"
    );
}

#[tokio::test]
async fn a_write_to_a_task_deleted_meanwhile_reaches_the_writers_other_connection() {
    let app = spawn_app().await;
    deleted_meanwhile_scenario(&app, &app).await;
}

#[tokio::test]
async fn a_write_to_a_task_deleted_meanwhile_reaches_the_writers_tab_on_another_instance() {
    let Some(redis) = require_redis(
        "a_write_to_a_task_deleted_meanwhile_reaches_the_writers_tab_on_another_instance",
    ) else {
        return;
    };
    let configure = |c: &mut tasknest::Config| c.redis_url = Some(redis.clone());
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    deleted_meanwhile_scenario(&a, &b).await;
}

#[tokio::test]
async fn conflicts_cross_instances_through_redis() {
    let Some(redis) = require_redis("conflicts_cross_instances_through_redis") else {
        return;
    };
    let configure = |c: &mut tasknest::Config| c.redis_url = Some(redis.clone());
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let task = a.create_task(&alice, &project, "T").await;
    a.ok(
        &alice,
        UPDATE,
        json!({ "id": task["id"], "patch": { "title": "v2" } }),
    )
    .await;
    let mut on_b = b.ws(&alice).await;
    on_b.subscribe("c", CONFLICTS, json!({ "p": project }))
        .await;
    // Probe through A: the notice must cross to B.
    until_listening(&a, &alice, &mut on_b, &task).await;
    a.ok(
        &alice,
        UPDATE,
        json!({ "id": task["id"], "patch": { "title": "mine" }, "base": 1, "cmid": "x-1" }),
    )
    .await;
    let pushed = on_b.next().await.expect("a conflict");
    assert_eq!(
        pushed["payload"]["data"]["conflicts"]["clientMutationId"],
        "x-1"
    );
    assert_eq!(
        pushed["payload"]["data"]["conflicts"]["reason"],
        "STALE_VERSION"
    );
    assert_eq!(
        pushed["payload"]["data"]["conflicts"]["conflictingFields"],
        json!(["title"])
    );
}

#[tokio::test]
async fn twenty_concurrent_writers_with_a_base_version_lose_no_update() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    // Every writer starts from version 1; half touch the title, the others one field each.
    let patches: Vec<Value> = (0..20)
        .map(|i| match i % 4 {
            0 | 1 => json!({ "title": format!("title {i}") }),
            2 => json!({ "priority": (i % 5) }),
            _ => json!({ "status": "IN_REVIEW", "position": i as f64 }),
        })
        .collect();
    let writers = patches.iter().map(|patch| {
        let (app, alice, id) = (&app, &alice, task["id"].clone());
        async move {
            app.ok(
                alice,
                UPDATE,
                json!({ "id": id, "patch": patch, "base": 1 }),
            )
            .await["updateTask"]
                .clone()
        }
    });
    let results = futures_util::future::join_all(writers).await;
    let mut versions: Vec<i64> = results
        .iter()
        .filter(|r| r["__typename"] == "TaskUpdated")
        .map(|r| r["task"]["version"].as_i64().unwrap())
        .collect();
    let conflicts = results
        .iter()
        .filter(|r| r["__typename"] == "TaskConflict")
        .count();
    assert_eq!(
        versions.len() + conflicts,
        20,
        "each write applied or reported"
    );
    assert!(conflicts > 0, "same-field writes from one base must clash");
    versions.sort_unstable();
    versions.dedup();
    let applied_changes = versions.len();
    assert!(applied_changes >= 1);

    // Replay the log from the start and compare with the task.
    let events = app.events(&alice, &project, 0).await;
    let mut replayed = Value::Null;
    let mut last_version = 0;
    for event in events["events"].as_array().unwrap() {
        if event["kind"] == "TASK_CREATED" {
            replayed = json!({ "title": event["task"]["title"] });
            last_version = 1;
        } else if event["kind"] == "TASK_UPDATED" {
            for (field, value) in event["changes"].as_object().unwrap() {
                replayed[field] = value.clone();
            }
            assert_eq!(
                event["task"]["version"],
                last_version + 1,
                "consecutive versions"
            );
            last_version += 1;
        }
    }
    let current = app
        .ok(
            &alice,
            "query($id: ID!) { task(id: $id) { title priority status position version } }",
            json!({ "id": task["id"] }),
        )
        .await["task"]
        .clone();
    assert_eq!(current["version"], last_version);
    for (field, value) in replayed.as_object().unwrap() {
        assert_eq!(
            &current[field], value,
            "{field} differs from the replayed log"
        );
    }
}
