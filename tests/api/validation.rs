//! Bad input: a clear BAD_USER_INPUT naming the argument, and nothing written.

use serde_json::{Value, json};

use crate::helpers::*;

const CREATE: &str = "mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }";

#[tokio::test]
async fn invalid_task_input_names_the_offending_field_and_writes_nothing() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "projectId": project, "title": "   " }),
            "input.title",
        ),
        (
            json!({ "projectId": project, "title": "x".repeat(201) }),
            "input.title",
        ),
        (
            json!({ "projectId": project, "title": "ok", "description": "d".repeat(20_001) }),
            "input.description",
        ),
        (
            json!({ "projectId": project, "title": "ok", "priority": 5 }),
            "input.priority",
        ),
        (
            json!({ "projectId": project, "title": "ok", "priority": -1 }),
            "input.priority",
        ),
        (
            json!({ "projectId": "not-a-uuid", "title": "ok" }),
            "input.projectId",
        ),
        (
            json!({ "projectId": project, "title": "ok", "assigneeId": "nobody" }),
            "input.assigneeId",
        ),
        (
            json!({ "projectId": project, "title": "ok", "clientMutationId": "" }),
            "input.clientMutationId",
        ),
    ];
    for (input, field) in cases {
        let response = app.gql(Some(&alice), CREATE, json!({ "in": input })).await;
        assert_eq!(
            error_code(&response),
            Some("BAD_USER_INPUT"),
            "{field}: {response}"
        );
        assert_eq!(error_field(&response), Some(field), "{response}");
    }
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 0);
    let count = app
        .ok(
            &alice,
            "query($p: ID!) { project(id: $p) { tasks { totalCount } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(count["project"]["tasks"]["totalCount"], 0);
}

#[tokio::test]
async fn two_hundred_characters_is_the_longest_title_counted_in_characters() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let title = "ü".repeat(200);
    let task = app.create_task(&alice, &project, &title).await;
    assert_eq!(task["title"], title);
}

#[tokio::test]
async fn an_unknown_enum_value_is_bad_input_with_its_path() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    // Inline literal: caught by validation.
    let response = app
        .gql(
            Some(&alice),
            &format!("mutation {{ createTask(input: {{projectId: \"{project}\", title: \"t\", status: FINISHED}}) {{ id }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert_eq!(error_field(&response), Some("input.status"));
    // Through a variable: caught when the variable is coerced.
    let response = app
        .gql(
            Some(&alice),
            CREATE,
            json!({ "in": { "projectId": project, "title": "t", "status": "FINISHED" } }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 0);
}

#[tokio::test]
async fn null_for_a_required_patch_field_is_bad_input() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    for (patch, field) in [
        (json!({ "title": null }), "patch.title"),
        (json!({ "status": null }), "patch.status"),
        (json!({ "position": null }), "patch.position"),
        (json!({ "priority": 9 }), "patch.priority"),
    ] {
        let response = app
            .gql(
                Some(&alice),
                "mutation($id: ID!, $p: TaskPatch!) { updateTask(id: $id, patch: $p) { __typename } }",
                json!({ "id": task["id"], "p": patch }),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        assert_eq!(error_field(&response), Some(field));
    }
}

#[tokio::test]
async fn malformed_ids_are_bad_input_not_internal_errors() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    for id in ["", "123", "'; DROP TABLE tasks; --", &"9".repeat(5000)] {
        let response = app
            .gql(
                Some(&alice),
                "query($id: ID!) { task(id: $id) { id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{id}");
        assert_eq!(error_field(&response), Some("id"));
    }
}

#[tokio::test]
async fn a_syntax_error_has_a_code_and_reveals_no_internals() {
    let app = spawn_app().await;
    let response = app
        .gql(Some(&app.token("a")), "{ me { id ", json!({}))
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
    let text = response.to_string().to_lowercase();
    for leak in ["sqlx", "sqlite", "postgres", "panicked", "/src/"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}
