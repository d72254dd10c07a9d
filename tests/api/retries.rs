//! Safe retries: the same mutation with the same `clientMutationId` gets the first answer
//! and changes nothing twice.

use serde_json::json;

use crate::helpers::*;

const UPDATE: &str = r#"mutation($id: ID!, $t: String!, $cmid: String) {
  updateTask(id: $id, patch: {title: $t}, clientMutationId: $cmid) {
    __typename ... on TaskUpdated { task { title version } } } }"#;

#[tokio::test]
async fn a_retried_update_gets_the_first_answer_and_no_second_event() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let first = app
        .ok(
            &alice,
            UPDATE,
            json!({ "id": task["id"], "t": "once", "cmid": "r-1" }),
        )
        .await;
    // Someone else changes the task before the retry arrives.
    app.ok(&alice, UPDATE, json!({ "id": task["id"], "t": "later" }))
        .await;
    let retry = app
        .ok(
            &alice,
            UPDATE,
            json!({ "id": task["id"], "t": "once", "cmid": "r-1" }),
        )
        .await;
    assert_eq!(retry, first, "the first answer, not a second change");
    assert_eq!(first["updateTask"]["task"]["version"], 2);
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(
        seqs(&events),
        vec![1, 2, 3],
        "one event for the first send, one for the other write"
    );
    let now = app
        .ok(
            &alice,
            "query($id: ID!) { task(id: $id) { title version } }",
            json!({ "id": task["id"] }),
        )
        .await;
    assert_eq!(now["task"], json!({ "title": "later", "version": 3 }));
}

#[tokio::test]
async fn copies_of_one_create_racing_each_other_make_one_task() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let copies = (0..8).map(|_| {
        let (app, alice, project) = (&app, &alice, &project);
        async move {
            app.ok(
                alice,
                "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"once\", clientMutationId: \"c-9\"}) { id } }",
                json!({ "p": project }),
            )
            .await["createTask"]["id"]
                .clone()
        }
    });
    let ids = futures_util::future::join_all(copies).await;
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(seqs(&events), vec![1]);
}

#[tokio::test]
async fn a_client_mutation_id_belongs_to_its_user_and_its_mutation() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let one = app.create_task(&alice, &project, "one").await;
    let two = app.create_task(&alice, &project, "two").await;
    app.ok(
        &alice,
        UPDATE,
        json!({ "id": one["id"], "t": "a", "cmid": "same" }),
    )
    .await;
    // Bob's "same" is his own.
    let bobs = app
        .ok(
            &bob,
            UPDATE,
            json!({ "id": one["id"], "t": "b", "cmid": "same" }),
        )
        .await;
    assert_eq!(bobs["updateTask"]["task"]["title"], "b");
    // Alice reusing it on another task is a client bug, and says so.
    let reused = app
        .gql(
            Some(&alice),
            UPDATE,
            json!({ "id": two["id"], "t": "x", "cmid": "same" }),
        )
        .await;
    assert_eq!(error_code(&reused), Some("BAD_USER_INPUT"));
    assert_eq!(error_field(&reused), Some("clientMutationId"));
}

#[tokio::test]
async fn a_retried_conflict_and_a_retried_delete_answer_as_the_first_time() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let delete = "mutation($id: ID!, $cmid: String) { deleteTask(id: $id, clientMutationId: $cmid) { __typename ... on TaskConflict { reason } } }";
    let first = app
        .ok(&alice, delete, json!({ "id": task["id"], "cmid": "d-1" }))
        .await;
    assert_eq!(first["deleteTask"]["__typename"], "TaskDeleted");
    let retry = app
        .ok(&alice, delete, json!({ "id": task["id"], "cmid": "d-1" }))
        .await;
    assert_eq!(
        retry, first,
        "a retried delete is not a TASK_DELETED conflict"
    );
    let other = app
        .ok(&alice, delete, json!({ "id": task["id"], "cmid": "d-2" }))
        .await;
    assert_eq!(other["deleteTask"]["reason"], "TASK_DELETED");
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 2);
}
