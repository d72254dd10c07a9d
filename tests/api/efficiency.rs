//! Nested fields are batched: reading a board costs the same few statements whatever its size.

use serde_json::{Value, json};

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

/// Round trips to the database (statements, and `BEGIN` and `COMMIT` of each transaction)
/// that running `mutation` costs, and its data.
async fn round_trips(app: &TestApp, token: &str, mutation: &str, variables: Value) -> (u64, Value) {
    // The counter is the whole instance's: let background work the app started (retention's
    // first pruning, on a busy machine) finish first, so only the mutation is counted.
    let mut before = app.state.db_stats.round_trips();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let now = app.state.db_stats.round_trips();
        if now == before {
            break;
        }
        before = now;
    }
    let data = app.ok(token, mutation, variables).await;
    (app.state.db_stats.round_trips() - before, data)
}

const CREATE: &str = "mutation($p: ID!, $t: String!, $c: String) { createTask(input: {projectId: $p, title: $t, clientMutationId: $c}) { id version } }";
const RENAME: &str = "mutation($id: ID!, $t: String!, $b: Int, $c: String) { updateTask(id: $id, patch: {title: $t}, baseVersion: $b, clientMutationId: $c) { __typename ... on TaskUpdated { merged task { title version } } } }";
const DELETE: &str = "mutation($id: ID!, $b: Int, $c: String) { deleteTask(id: $id, baseVersion: $b, clientMutationId: $c) { __typename } }";

#[tokio::test]
async fn on_postgres_creating_updating_and_deleting_a_task_each_take_one_round_trip() {
    if require_postgres(
        "on_postgres_creating_updating_and_deleting_a_task_each_take_one_round_trip",
    )
    .is_none()
    {
        return;
    }
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    // Warm the user cache so the token's user upsert is not counted.
    app.ok(&alice, "{ me { id } }", json!({})).await;

    let (trips, data) = round_trips(
        &app,
        &alice,
        CREATE,
        json!({ "p": project, "t": "T", "c": "c1" }),
    )
    .await;
    assert_eq!(trips, 1, "createTask took {trips} round trips");
    let id = data["createTask"]["id"].as_str().expect("id").to_owned();

    let variables = json!({ "id": id, "t": "renamed", "b": 1, "c": "c2" });
    let (trips, data) = round_trips(&app, &alice, RENAME, variables.clone()).await;
    assert_eq!(trips, 1, "updateTask took {trips} round trips");
    assert_eq!(
        data["updateTask"]["task"],
        json!({ "title": "renamed", "version": 2 })
    );
    assert_eq!(data["updateTask"]["merged"], json!(false));

    // The receipt the one-statement write left answers a retry with the first answer.
    let retried = app.ok(&alice, RENAME, variables).await;
    assert_eq!(retried, data);

    let (trips, data) =
        round_trips(&app, &alice, DELETE, json!({ "id": id, "b": 2, "c": "c3" })).await;
    assert_eq!(trips, 1, "deleteTask took {trips} round trips");
    assert_eq!(data["deleteTask"]["__typename"], "TaskDeleted");

    // The log holds every write once, in order, with the fields a subscriber reads.
    let page = app.events(&alice, &project, 0).await;
    let log: Vec<_> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["seq"].clone(),
                e["kind"].clone(),
                e["changes"].clone(),
                e["clientMutationId"].clone(),
                e["actor"]["name"].clone(),
            )
        })
        .collect();
    assert_eq!(
        log,
        [
            (
                json!(1),
                json!("TASK_CREATED"),
                json!(null),
                json!("c1"),
                json!("Alice")
            ),
            (
                json!(2),
                json!("TASK_UPDATED"),
                json!({ "title": "renamed" }),
                json!("c2"),
                json!("Alice")
            ),
            (
                json!(3),
                json!("TASK_DELETED"),
                json!(null),
                json!("c3"),
                json!("Alice")
            ),
        ]
    );
    assert_eq!(seqs(&page), [1, 2, 3], "gap-free");
}

#[tokio::test]
async fn a_stale_base_version_still_merges_through_the_general_path() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let retitle = json!({ "id": task["id"], "t": "first", "b": 1 });
    app.ok(&alice, RENAME, retitle).await;
    let move_it = "mutation($id: ID!) { updateTask(id: $id, patch: {status: DONE}, baseVersion: 1) { __typename ... on TaskUpdated { merged task { title status version } } } }";
    let data = app.ok(&alice, move_it, json!({ "id": task["id"] })).await;
    assert_eq!(
        data["updateTask"],
        json!({ "__typename": "TaskUpdated", "merged": true, "task": { "title": "first", "status": "DONE", "version": 3 } })
    );
    let clash = app
        .ok(
            &alice,
            RENAME,
            json!({ "id": task["id"], "t": "second", "b": 1 }),
        )
        .await;
    assert_eq!(clash["updateTask"]["__typename"], "TaskConflict");
}

#[tokio::test]
async fn an_update_with_a_client_mutation_id_costs_a_fixed_few_round_trips() {
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
    let (trips, _) = round_trips(
        &app,
        &alice,
        rename,
        json!({ "id": task["id"], "t": "counted", "c": "c1" }),
    )
    .await;
    // SQLite's general path: task and project lookup, the project lock (seq counter),
    // membership, the receipt lookup, the update, the receipt, the event, and BEGIN and
    // COMMIT; each is a round trip inside the mutation's answer time, so a new one should be
    // a decision, not an accident. PostgreSQL does it all in one.
    let bound = if postgres_url().is_some() { 1 } else { 11 };
    assert!(trips <= bound, "an update took {trips} round trips");
}

/// The document cache's (hits, misses) so far, from `/metrics`.
async fn document_cache(app: &TestApp) -> (f64, f64) {
    let text = app
        .client
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics body");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    (
        value("tasknest_graphql_document_cache_hits_total"),
        value("tasknest_graphql_document_cache_misses_total"),
    )
}

#[tokio::test]
async fn a_document_sent_again_is_not_parsed_again_and_runs_with_its_own_variables() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let first = app.create_task(&alice, &project, "first").await;
    let second = app.create_task(&alice, &project, "second").await;
    const TITLE: &str = "query Title($id: ID!) { task(id: $id) { title } }";

    let (hits, misses) = document_cache(&app).await;
    for (task, title) in [(&first, "first"), (&second, "second"), (&first, "first")] {
        let data = app.ok(&alice, TITLE, json!({ "id": task["id"] })).await;
        assert_eq!(data["task"]["title"], title);
    }
    // The same text over graphql-ws is the same document.
    let mut ws = app.ws(&alice).await;
    ws.subscribe("t", TITLE, json!({ "id": second["id"] }))
        .await;
    let answer = ws.next().await.expect("next");
    assert_eq!(answer["payload"]["data"]["task"]["title"], "second");
    assert_eq!(
        document_cache(&app).await,
        (hits + 3.0, misses + 1.0),
        "parsed once, then served from the cache three times"
    );

    // A cached document is still checked on every use: a missing variable is still refused.
    let refused = app.gql(Some(&alice), TITLE, json!({})).await;
    assert!(refused["errors"][0]["message"].is_string(), "{refused}");
    // And a document that does not parse is reported, not kept.
    let broken = app.gql(Some(&alice), "query { task(", json!({})).await;
    assert!(broken["errors"][0]["message"].is_string(), "{broken}");
    assert_eq!(document_cache(&app).await.1, misses + 1.0);
}
