//! Tasks: defaults, updates, deletion tombstones, and writes against a base version.

use serde_json::{Value, json};

use crate::helpers::*;

const UPDATE: &str = r#"mutation($id: ID!, $patch: TaskPatch!, $base: Int, $cmid: String) {
  updateTask(id: $id, patch: $patch, baseVersion: $base, clientMutationId: $cmid) {
    __typename
    ... on TaskUpdated { merged task { id title description status priority position dueAt version assignee { id } updatedBy { id } } }
    ... on TaskConflict { taskId reason yourPatch conflictingFields clientMutationId serverTask { version title status } }
  } }"#;
const DELETE: &str = r#"mutation($id: ID!, $base: Int, $cmid: String) {
  deleteTask(id: $id, baseVersion: $base, clientMutationId: $cmid) {
    __typename
    ... on TaskDeleted { taskId }
    ... on TaskConflict { reason conflictingFields yourPatch serverTask { version } }
  } }"#;

async fn update(app: &TestApp, token: &str, id: &Value, patch: Value, base: Option<i64>) -> Value {
    app.ok(
        token,
        UPDATE,
        json!({ "id": id, "patch": patch, "base": base }),
    )
    .await["updateTask"]
        .clone()
}

#[tokio::test]
async fn a_new_task_gets_the_documented_defaults_and_goes_last() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let first = app.create_task(&alice, &project, "  First  ").await;
    let second = app.create_task(&alice, &project, "Second").await;
    assert_eq!(first["title"], "First");
    assert_eq!(first["status"], "TODO");
    assert_eq!(first["description"], "");
    assert_eq!(first["priority"], 0);
    assert_eq!(first["version"], 1);
    assert!(second["position"].as_f64() > first["position"].as_f64());
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][0]["kind"], "TASK_CREATED");
    assert_eq!(events["events"][0]["task"]["title"], "First");
}

#[tokio::test]
async fn an_update_bumps_the_version_and_logs_only_changed_fields() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let task = app.create_task(&alice, &project, "T").await;
    let result = update(
        &app,
        &alice,
        &task["id"],
        json!({ "title": "T", "status": "IN_PROGRESS", "assigneeId": app.user("bob"), "dueAt": "2027-01-02T03:04:05+00:00" }),
        None,
    )
    .await;
    assert_eq!(result["__typename"], "TaskUpdated");
    assert_eq!(result["merged"], false);
    assert_eq!(result["task"]["version"], 2);
    assert_eq!(result["task"]["status"], "IN_PROGRESS");
    assert_eq!(result["task"]["assignee"]["id"], app.user("bob"));
    assert_eq!(result["task"]["dueAt"], "2027-01-02T03:04:05+00:00");
    let events = app.events(&alice, &project, 2).await;
    assert_eq!(events["events"][0]["kind"], "TASK_UPDATED");
    assert_eq!(
        events["events"][0]["changes"],
        json!({ "status": "IN_PROGRESS", "assigneeId": app.user("bob"), "dueAt": "2027-01-02T03:04:05+00:00" }),
        "title did not change, so it is not in changes"
    );

    // Explicit nulls clear; priority null means 0; description null means empty.
    let cleared = update(
        &app,
        &alice,
        &task["id"],
        json!({ "assigneeId": null, "dueAt": null, "priority": null, "description": null }),
        None,
    )
    .await;
    assert_eq!(cleared["task"]["assignee"], Value::Null);
    assert_eq!(cleared["task"]["dueAt"], Value::Null);
    assert_eq!(cleared["task"]["priority"], 0);
    assert_eq!(cleared["task"]["version"], 3);
}

#[tokio::test]
async fn a_patch_that_restates_the_task_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "Same").await;
    let result = update(
        &app,
        &alice,
        &task["id"],
        json!({ "title": " Same ", "status": "TODO" }),
        None,
    )
    .await;
    assert_eq!(result["__typename"], "TaskUpdated");
    assert_eq!(result["task"]["version"], 1);
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 1);
}

#[tokio::test]
async fn writing_to_a_deleted_task_is_a_task_deleted_conflict() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let deleted = app.ok(&alice, DELETE, json!({ "id": task["id"] })).await;
    assert_eq!(
        deleted["deleteTask"],
        json!({ "__typename": "TaskDeleted", "taskId": task["id"] })
    );

    let result = update(
        &app,
        &alice,
        &task["id"],
        json!({ "status": "DONE" }),
        Some(1),
    )
    .await;
    assert_eq!(result["__typename"], "TaskConflict");
    assert_eq!(result["reason"], "TASK_DELETED");
    assert_eq!(result["serverTask"], Value::Null);
    assert_eq!(result["conflictingFields"], json!([]));
    assert_eq!(result["yourPatch"], json!({ "status": "DONE" }));
    let again = app.ok(&alice, DELETE, json!({ "id": task["id"] })).await;
    assert_eq!(again["deleteTask"]["reason"], "TASK_DELETED");

    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["lastSeq"], 2, "conflicts log nothing");
    assert_eq!(events["events"][1]["kind"], "TASK_DELETED");
    assert_eq!(events["events"][1]["task"], Value::Null);
    let read = app
        .gql(
            Some(&alice),
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": task["id"] }),
        )
        .await;
    assert_eq!(error_code(&read), Some("NOT_FOUND"));
}

#[tokio::test]
async fn a_task_id_that_never_existed_is_not_found() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let id = uuid::Uuid::new_v4().to_string();
    let response = app
        .gql(
            Some(&alice),
            UPDATE,
            json!({ "id": id, "patch": { "title": "x" } }),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
    let response = app.gql(Some(&alice), DELETE, json!({ "id": id })).await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
}

#[tokio::test]
async fn edits_to_different_fields_from_the_same_version_are_both_applied() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let bob = app.token("bob");
    let task = app.create_task(&alice, &project, "T").await;

    let first = update(
        &app,
        &alice,
        &task["id"],
        json!({ "status": "DONE" }),
        Some(1),
    )
    .await;
    assert_eq!(first["merged"], false);
    let second = update(
        &app,
        &bob,
        &task["id"],
        json!({ "title": "Renamed" }),
        Some(1),
    )
    .await;
    assert_eq!(second["__typename"], "TaskUpdated");
    assert_eq!(second["merged"], true);
    assert_eq!(second["task"]["status"], "DONE");
    assert_eq!(second["task"]["title"], "Renamed");
    assert_eq!(second["task"]["version"], 3);
}

#[tokio::test]
async fn edits_to_the_same_field_from_the_same_version_conflict() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    update(
        &app,
        &alice,
        &task["id"],
        json!({ "status": "DONE" }),
        Some(1),
    )
    .await;
    let response = app
        .ok(
            &alice,
            UPDATE,
            json!({ "id": task["id"], "patch": { "status": "IN_REVIEW", "title": "X" }, "base": 1, "cmid": "m-7" }),
        )
        .await;
    let lost = &response["updateTask"];
    assert_eq!(lost["__typename"], "TaskConflict");
    assert_eq!(lost["reason"], "STALE_VERSION");
    assert_eq!(lost["conflictingFields"], json!(["status"]));
    assert_eq!(
        lost["yourPatch"],
        json!({ "status": "IN_REVIEW", "title": "X" })
    );
    assert_eq!(lost["clientMutationId"], "m-7");
    assert_eq!(
        lost["serverTask"],
        json!({ "version": 2, "title": "T", "status": "DONE" })
    );

    // Setting the field to the value it already has is not a conflict.
    let same = update(
        &app,
        &alice,
        &task["id"],
        json!({ "status": "DONE" }),
        Some(1),
    )
    .await;
    assert_eq!(same["__typename"], "TaskUpdated");
}

#[tokio::test]
async fn a_base_version_from_the_future_is_bad_input() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let response = app
        .gql(
            Some(&alice),
            UPDATE,
            json!({ "id": task["id"], "patch": { "title": "x" }, "base": 9 }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
    assert_eq!(error_field(&response), Some("baseVersion"));
}

#[tokio::test]
async fn deleting_with_a_stale_version_is_a_conflict_naming_the_changed_fields() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    update(&app, &alice, &task["id"], json!({ "priority": 3 }), None).await;
    let data = app
        .ok(&alice, DELETE, json!({ "id": task["id"], "base": 1 }))
        .await;
    assert_eq!(data["deleteTask"]["reason"], "STALE_VERSION");
    assert_eq!(data["deleteTask"]["conflictingFields"], json!(["priority"]));
    assert_eq!(data["deleteTask"]["yourPatch"], json!({}));
    let data = app
        .ok(&alice, DELETE, json!({ "id": task["id"], "base": 2 }))
        .await;
    assert_eq!(data["deleteTask"]["__typename"], "TaskDeleted");
}

#[tokio::test]
async fn the_client_mutation_id_is_echoed_on_the_event() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    app.ok(
        &alice,
        UPDATE,
        json!({ "id": task["id"], "patch": { "title": "U" }, "cmid": "abc-1" }),
    )
    .await;
    let events = app.events(&alice, &project, 1).await;
    assert_eq!(events["events"][0]["clientMutationId"], "abc-1");
}

#[tokio::test]
async fn titles_with_quotes_sql_and_html_round_trip_byte_for_byte() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for title in [
        r#"Robert'); DROP TABLE tasks;-- "quoted" \ back"#,
        "<script>alert('x')</script> &amp;",
        "emoji 🚀 and ünïcödé, tab\there",
    ] {
        let task = app.create_task(&alice, &project, title).await;
        assert_eq!(task["title"], title);
        let read = app
            .ok(
                &alice,
                "query($id: ID!) { task(id: $id) { title } }",
                json!({ "id": task["id"] }),
            )
            .await;
        assert_eq!(read["task"]["title"], title);
    }
}
