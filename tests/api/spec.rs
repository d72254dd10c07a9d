//! Spec details independent clients check: response key order, validation of directives on
//! `__typename`, text the database cannot store, request errors without `data`, and errors
//! that are not hidden behind NOT_FOUND.

use serde_json::{Value, json};
use tasknest::auth::Claims;

use crate::helpers::{TestApp, error_code, error_field, spawn_app};

/// Posts `query` and returns the body exactly as sent.
async fn raw_body(app: &TestApp, token: &str, query: &str, accept: &str) -> (u16, String) {
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(token)
        .header("accept", accept)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Where `key` (quoted) first appears in `body`.
fn at(body: &str, key: &str) -> usize {
    body.find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("{key} missing from {body}"))
}

#[tokio::test]
async fn response_keys_follow_the_selection_set_on_merged_and_complex_objects() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.create_task(&alice, &project, "T").await;

    let (_, body) = raw_body(
        &app,
        &alice,
        "{ projects { id } me { id } }",
        "application/json",
    )
    .await;
    assert!(at(&body, "projects") < at(&body, "me"), "{body}");
    let (_, body) = raw_body(
        &app,
        &alice,
        "{ me { id } projects { id } }",
        "application/json",
    )
    .await;
    assert!(at(&body, "me") < at(&body, "projects"), "{body}");

    let query = "{ projects { tasks(first: 1) { totalCount nodes { title id } } id } }";
    let (_, body) = raw_body(&app, &alice, query, "application/json").await;
    assert!(at(&body, "tasks") < at(&body, "id"), "{body}");
    assert!(at(&body, "totalCount") < at(&body, "nodes"), "{body}");
    assert!(at(&body, "title") < at(&body, "id"), "{body}");
    let query = "{ projects { tasks(first: 1) { nodes { id } totalCount } } }";
    let (_, body) = raw_body(&app, &alice, query, "application/json").await;
    assert!(at(&body, "nodes") < at(&body, "totalCount"), "{body}");

    // Fragments expand in place; identical requests give identical bytes.
    let query = "{ ...Who projects { ...Fields } } fragment Who on Query { me { name id } } \
                 fragment Fields on Project { viewerRole name }";
    let (_, first) = raw_body(&app, &alice, query, "application/json").await;
    let (_, second) = raw_body(&app, &alice, query, "application/json").await;
    assert_eq!(first, second);
    assert!(at(&first, "me") < at(&first, "projects"), "{first}");
    assert!(at(&first, "name") < at(&first, "id"), "{first}");
    assert!(at(&first, "viewerRole") < at(&first, "P"), "{first}");
}

#[tokio::test]
async fn response_keys_follow_the_selection_set_over_graphql_ws() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("q", "{ projects { id } me { id } }", json!({}))
        .await;
    let frame = ws.next_text().await;
    assert!(at(&frame, "projects") < at(&frame, "me"), "{frame}");
}

#[tokio::test]
async fn a_variable_used_only_in_a_directive_on_typename_is_used() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let query = "query A($b: Boolean!) { me { id } t: __typename @include(if: $b) }";
    for include in [true, false] {
        let response = app.gql(Some(&alice), query, json!({ "b": include })).await;
        assert!(response.get("errors").is_none(), "{response}");
        assert_eq!(response["data"]["me"]["id"], app.user("alice"));
        assert_eq!(response["data"].get("t").is_some(), include, "{response}");
    }
    // Over GET too.
    let response: Value = app
        .client
        .get(app.graphql_url())
        .bearer_auth(&alice)
        .query(&[("query", query), ("variables", r#"{"b":true}"#)])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(response["data"]["t"], "Query", "{response}");
    // And such a directive is now validated like any other.
    let undefined = app
        .gql(
            Some(&alice),
            "{ me { id } t: __typename @include(if: $nope) }",
            json!({}),
        )
        .await;
    assert_eq!(
        error_code(&undefined),
        Some("BAD_USER_INPUT"),
        "{undefined}"
    );
}

#[tokio::test]
async fn a_nul_character_in_any_string_input_is_bad_user_input_and_writes_nothing() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let before = app.events(&alice, &project, 0).await["lastSeq"].clone();

    let cases = [
        (
            "mutation($n: String!) { createProject(input: {name: $n}) { id } }",
            json!({ "n": "a\u{0}b" }),
            "n",
        ),
        (
            r#"mutation { createProject(input: {name: "a\u0000b"}) { id } }"#,
            json!({}),
            "input.name",
        ),
        (
            "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }",
            json!({ "input": { "projectId": project, "title": "x\u{0}" } }),
            "input.title",
        ),
        (
            "mutation($id: ID!, $c: String) { updateTask(id: $id, patch: {title: \"ok\"}, clientMutationId: $c) { __typename } }",
            json!({ "id": task["id"], "c": "\u{0}" }),
            "c",
        ),
        (
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": "\u{0}" }),
            "id",
        ),
    ];
    for (query, variables, field) in cases {
        let response = app.gql(Some(&alice), query, variables).await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
        assert_eq!(error_field(&response), Some(field), "{response}");
        assert!(response["data"].is_null(), "{response}");
    }
    let projects = app.ok(&alice, "{ projects { name } }", json!({})).await;
    assert_eq!(projects["projects"].as_array().map(Vec::len), Some(1));
    let after = app.events(&alice, &project, 0).await["lastSeq"].clone();
    assert_eq!(before, after, "nothing was logged");

    // A token whose claims hold a NUL is refused the same way, before any user row is written.
    let token = app.token_with(&Claims {
        sub: "mallory".into(),
        name: Some("Mal\u{0}lory".into()),
        avatar: None,
        exp: tasknest::auth::unix_now() + 600,
        nbf: None,
        iat: None,
    });
    let response = app.gql(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    assert_eq!(error_field(&response), Some("token.name"), "{response}");
}

#[tokio::test]
async fn a_request_that_fails_before_execution_has_no_data_key() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    for query in ["{ me { id ", "{ nope }"] {
        let (status, body) =
            raw_body(&app, &alice, query, "application/graphql-response+json").await;
        assert_eq!(status, 400, "{body}");
        let parsed: Value = serde_json::from_str(&body).expect("JSON");
        assert!(parsed.get("data").is_none(), "{body}");
        assert_eq!(error_code(&parsed), Some("BAD_USER_INPUT"), "{body}");
    }
    // An execution error keeps `data`.
    let (status, body) = raw_body(
        &app,
        &alice,
        "{ project(id: \"6f1c2a57-0d7e-4a57-9a53-3f3c1c1b2d4e\") { id } }",
        "application/graphql-response+json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"data\""), "{body}");
}

#[tokio::test]
async fn extensions_that_are_not_an_object_are_a_bad_request() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&alice)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": "{ me { id } }", "extensions": "nope" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"), "{body}");
    let response = app
        .client
        .get(app.graphql_url())
        .bearer_auth(&alice)
        .header("accept", "application/graphql-response+json")
        .query(&[("query", "{ me { id } }"), ("extensions", "[1]")])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn a_database_failure_during_the_access_check_is_internal_not_not_found() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    // Break the access check's table from outside, as a failing database would.
    let db = sea_orm::Database::connect(&app.database_url)
        .await
        .expect("connect");
    db.execute_unprepared("DROP TABLE project_members")
        .await
        .expect("drop");
    db.close().await.ok();
    let response = app
        .gql(
            Some(&alice),
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": task["id"] }),
        )
        .await;
    assert_eq!(error_code(&response), Some("INTERNAL"), "{response}");
    assert_eq!(response["errors"][0]["message"], "internal error");
}
