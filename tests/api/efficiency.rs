//! Nested fields are batched: reading a board costs the same few statements whatever its size.

use serde_json::json;

use crate::helpers::*;

const BOARD: &str = r#"query($p: ID!) { project(id: $p) {
  name members { role user { id name } }
  tasks(first: 500) { totalCount nodes { title assignee { name } createdBy { name } updatedBy { name } } } } }"#;

async fn statements_to_read_board(app: &TestApp, token: &str, project: &str) -> u64 {
    // Warm the user cache so the token's user upsert is not counted.
    app.ok(token, "{ me { id } }", json!({})).await;
    let before = app.state.db_stats.statements();
    let data = app.ok(token, BOARD, json!({ "p": project })).await;
    assert!(data["project"]["tasks"]["nodes"].is_array());
    app.state.db_stats.statements() - before
}

#[tokio::test]
async fn reading_five_hundred_tasks_costs_as_few_statements_as_reading_five() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let small = app.create_project(&alice, "Small").await;
    let large = app.create_project(&alice, "Large").await;
    for user in ["bob", "carol", "dave"] {
        app.add_member(&alice, &small, user, "EDITOR").await;
        app.add_member(&alice, &large, user, "EDITOR").await;
    }
    let users = ["alice", "bob", "carol", "dave"];
    for (project, n) in [(&small, 5), (&large, 500)] {
        for i in 0..n {
            let creator = app.token(users[i % 4]);
            app.ok(
                &creator,
                "mutation($p: ID!, $t: String!, $a: ID) { createTask(input: {projectId: $p, title: $t, assigneeId: $a}) { id } }",
                json!({ "p": project, "t": format!("task {i}"), "a": app.user(users[(i + 1) % 4]) }),
            )
            .await;
        }
    }
    let for_five = statements_to_read_board(&app, &alice, &small).await;
    let for_five_hundred = statements_to_read_board(&app, &alice, &large).await;
    // Loader batches may or may not merge within their time window, so the exact count can
    // differ by one; what must hold is a small bound that does not depend on the board size.
    for (tasks, statements) in [(5, for_five), (500, for_five_hundred)] {
        assert!(
            statements <= 8,
            "{statements} statements to read a board of {tasks} tasks"
        );
    }
}

#[tokio::test]
async fn an_update_with_a_client_mutation_id_costs_a_fixed_few_statements() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let rename = "mutation($id: ID!, $t: String!, $c: String) { updateTask(id: $id, patch: {title: $t}, clientMutationId: $c) { __typename } }";
    app.ok(
        &alice,
        rename,
        json!({ "id": task["id"], "t": "warm", "c": "c0" }),
    )
    .await;
    let before = app.state.db_stats.statements();
    app.ok(
        &alice,
        rename,
        json!({ "id": task["id"], "t": "counted", "c": "c1" }),
    )
    .await;
    let statements = app.state.db_stats.statements() - before;
    // Task and project lookup, the project lock (seq counter), membership, the receipt
    // lookup, the update, the receipt, the event: each is a round trip inside the mutation's
    // answer time, so a new one should be a decision, not an accident.
    assert!(statements <= 9, "an update took {statements} statements");
}
