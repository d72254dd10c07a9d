//! The event log: gap-free numbering, catch-up pages, and payloads frozen at write time.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn catch_up_pages_follow_after_and_limit() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for i in 0..5 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    let page = app
        .ok(
            &alice,
            "query($p: ID!) { events(projectId: $p, after: 1, limit: 2) { lastSeq hasMore events { seq projectId at actor { id } } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(seqs(&page["events"]), vec![2, 3]);
    assert_eq!(page["events"]["lastSeq"], 5);
    assert_eq!(page["events"]["hasMore"], true);
    assert_eq!(page["events"]["events"][0]["projectId"], project);
    assert_eq!(
        page["events"]["events"][0]["actor"]["id"],
        app.user("alice")
    );
    let rest = app.events(&alice, &project, 3).await;
    assert_eq!(seqs(&rest), vec![4, 5]);
    assert_eq!(rest["hasMore"], false);
    let project_seq = app
        .ok(
            &alice,
            "query($p: ID!) { project(id: $p) { lastSeq } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        project_seq["project"]["lastSeq"], 5,
        "Project.lastSeq matches EventPage.lastSeq"
    );

    for (after, limit) in [(-1, 10), (0, 0)] {
        let response = app
            .gql(
                Some(&alice),
                "query($p: ID!, $a: Int, $l: Int) { events(projectId: $p, after: $a, limit: $l) { lastSeq } }",
                json!({ "p": project, "a": after, "l": limit }),
            )
            .await;
        assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
    }
}

#[tokio::test]
async fn an_event_shows_the_task_as_it_was_after_that_event() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "Before").await;
    app.ok(
        &alice,
        "mutation($id: ID!) { updateTask(id: $id, patch: {title: \"After\"}) { __typename } }",
        json!({ "id": task["id"] }),
    )
    .await;
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][0]["task"]["title"], "Before");
    assert_eq!(events["events"][0]["task"]["version"], 1);
    assert_eq!(events["events"][1]["task"]["title"], "After");
    assert_eq!(events["events"][1]["changes"], json!({ "title": "After" }));
}

#[tokio::test]
async fn fifty_concurrent_updates_get_fifty_consecutive_seqs() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let writers = (0..50).map(|i| {
        let (app, alice, id) = (&app, &alice, task["id"].clone());
        async move {
            app.ok(
                alice,
                "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { ... on TaskUpdated { task { version } } } }",
                json!({ "id": id, "t": format!("title {i}") }),
            )
            .await["updateTask"]["task"]["version"]
                .as_i64()
                .expect("version")
        }
    });
    let mut versions = futures_util::future::join_all(writers).await;
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=51).collect::<Vec<_>>(),
        "no version given twice"
    );

    let events = app.events(&alice, &project, 0).await;
    assert_eq!(seqs(&events), (1..=51).collect::<Vec<_>>());
    assert_eq!(events["lastSeq"], 51);
    let final_task = app
        .ok(
            &alice,
            "query($id: ID!) { task(id: $id) { title version } }",
            json!({ "id": task["id"] }),
        )
        .await;
    assert_eq!(final_task["task"]["version"], 51);
    assert_eq!(
        final_task["task"]["title"], events["events"][50]["task"]["title"],
        "the last event holds the task's final state"
    );
}

#[tokio::test]
async fn the_events_limit_is_capped_at_one_thousand() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    for i in 0..1_005 {
        app.ok(
            &alice,
            "mutation($id: ID!, $p: Float!) { updateTask(id: $id, patch: {position: $p}) { __typename } }",
            json!({ "id": task["id"], "p": i as f64 + 0.5 }),
        )
        .await;
    }
    let page = app
        .ok(
            &alice,
            "query($p: ID!) { events(projectId: $p, limit: 5000) { lastSeq hasMore events { seq } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        page["events"]["events"].as_array().expect("events").len(),
        1_000
    );
    assert_eq!(page["events"]["hasMore"], true);
    assert_eq!(page["events"]["lastSeq"], 1_006);
}

#[tokio::test]
async fn a_cursor_into_pruned_history_is_cursor_expired() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    for i in 0..3 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let pruned =
        tasknest::events::retention::prune(&app.state.db, std::time::Duration::from_millis(10))
            .await
            .expect("prune");
    assert_eq!(pruned, 3);
    let response = app
        .gql(
            Some(&alice),
            "query($p: ID!) { events(projectId: $p, after: 1) { lastSeq } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(error_code(&response), Some("CURSOR_EXPIRED"), "{response}");

    // Numbers are not reused after pruning, and a cursor at the head still works.
    let up_to_date = app.events(&alice, &project, 3).await;
    assert_eq!(up_to_date["lastSeq"], 3);
    app.create_task(&alice, &project, "t3").await;
    assert_eq!(seqs(&app.events(&alice, &project, 3).await), vec![4]);

    let mut ws = app.ws(&alice).await;
    ws.subscribe(
        "e",
        crate::subscriptions::EVENTS,
        json!({ "p": project, "a": 0 }),
    )
    .await;
    let refused = ws.next().await.expect("a message");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "CURSOR_EXPIRED"
    );
}
