//! `Project.tasks`: Relay pages by position with stable cursors.

use serde_json::{Value, json};

use crate::helpers::*;

const PAGE: &str = r#"query($p: ID!, $first: Int, $after: String, $status: TaskStatus) {
  project(id: $p) { tasks(first: $first, after: $after, status: $status) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { title } } nodes { title } } } }"#;

fn titles(page: &Value) -> Vec<String> {
    page["project"]["tasks"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["title"].as_str().expect("title").to_owned())
        .collect()
}

#[tokio::test]
async fn pages_walk_the_board_in_position_order() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for i in 1..=7 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .ok(
                &alice,
                PAGE,
                json!({ "p": project, "first": 3, "after": after }),
            )
            .await;
        let tasks = &page["project"]["tasks"];
        assert_eq!(tasks["totalCount"], 7);
        seen.extend(titles(&page));
        if !tasks["pageInfo"]["hasNextPage"].as_bool().expect("bool") {
            break;
        }
        after = tasks["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, (1..=7).map(|i| format!("t{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_cursor_stays_valid_when_tasks_are_added_before_it() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for i in 1..=4 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    let page = app
        .ok(&alice, PAGE, json!({ "p": project, "first": 2 }))
        .await;
    let cursor = page["project"]["tasks"]["pageInfo"]["endCursor"].clone();
    app.ok(
        &alice,
        "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"front\", position: -10}) { id } }",
        json!({ "p": project }),
    )
    .await;
    let next = app
        .ok(
            &alice,
            PAGE,
            json!({ "p": project, "first": 10, "after": cursor }),
        )
        .await;
    assert_eq!(titles(&next), vec!["t3", "t4"]);
}

#[tokio::test]
async fn the_status_filter_and_page_limits_apply() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.create_task(&alice, &project, "a").await;
    app.ok(
        &alice,
        "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"b\", status: DONE}) { id } }",
        json!({ "p": project }),
    )
    .await;
    let done = app
        .ok(&alice, PAGE, json!({ "p": project, "status": "DONE" }))
        .await;
    assert_eq!(titles(&done), vec!["b"]);
    assert_eq!(done["project"]["tasks"]["totalCount"], 1);

    for (first, after) in [(501, None), (-1, None), (10, Some("bogus-cursor"))] {
        let response = app
            .gql(
                Some(&alice),
                PAGE,
                json!({ "p": project, "first": first, "after": after }),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"), "{response}");
    }
}
