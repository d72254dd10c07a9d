//! Projects: create, list, read, rename, delete.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_created_project_is_owned_by_its_creator_and_listed() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let data = app
        .ok(
            &alice,
            r#"mutation { createProject(input: {name: "  Launch  ", description: "Q4"}) {
                id name description viewerRole lastSeq createdAt updatedAt
                members { role user { id name } } } }"#,
            json!({}),
        )
        .await;
    let project = &data["createProject"];
    assert_eq!(project["name"], "Launch", "names are stored trimmed");
    assert_eq!(project["description"], "Q4");
    assert_eq!(project["viewerRole"], "OWNER");
    assert_eq!(project["lastSeq"], 0, "createProject writes no event");
    assert_eq!(
        project["members"],
        json!([{ "role": "OWNER", "user": { "id": app.user("alice"), "name": "Alice" } }])
    );

    let listed = app.ok(&alice, "{ projects { id name } }", json!({})).await;
    assert_eq!(listed["projects"][0]["id"], project["id"]);
    let bob = app.token("bob");
    let others = app.ok(&bob, "{ projects { id } }", json!({})).await;
    assert_eq!(
        others["projects"],
        json!([]),
        "bob sees none of alice's projects"
    );
}

#[tokio::test]
async fn renaming_a_project_logs_only_the_changed_fields() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "Old").await;
    let data = app
        .ok(
            &alice,
            r#"mutation($id: ID!) { updateProject(id: $id, input: {name: "New", description: null}) { name description lastSeq } }"#,
            json!({ "id": project }),
        )
        .await;
    assert_eq!(data["updateProject"]["name"], "New");
    assert_eq!(data["updateProject"]["lastSeq"], 1);
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][0]["kind"], "PROJECT_UPDATED");
    assert_eq!(events["events"][0]["changes"], json!({ "name": "New" }));

    // The same values again change nothing and log nothing.
    let again = app
        .ok(
            &alice,
            r#"mutation($id: ID!) { updateProject(id: $id, input: {name: "New"}) { lastSeq } }"#,
            json!({ "id": project }),
        )
        .await;
    assert_eq!(again["updateProject"]["lastSeq"], 1);
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 1);
}

#[tokio::test]
async fn a_deleted_project_is_not_found_for_everyone() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "Doomed").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    let task = app.create_task(&alice, &project, "t").await;
    let data = app
        .ok(
            &alice,
            "mutation($id: ID!) { deleteProject(id: $id) }",
            json!({ "id": project }),
        )
        .await;
    assert_eq!(data["deleteProject"], true);

    for who in ["alice", "bob"] {
        let token = app.token(who);
        let response = app
            .gql(
                Some(&token),
                "query($id: ID!) { project(id: $id) { id } }",
                json!({ "id": project }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{who}");
        let response = app
            .gql(
                Some(&token),
                "query($id: ID!) { task(id: $id) { id } }",
                json!({ "id": task["id"] }),
            )
            .await;
        assert_eq!(error_code(&response), Some("NOT_FOUND"), "{who}");
        assert_eq!(
            app.ok(&token, "{ projects { id } }", json!({})).await["projects"],
            json!([])
        );
    }
}

#[tokio::test]
async fn an_unknown_project_id_is_not_found() {
    let app = spawn_app().await;
    let response = app
        .gql(
            Some(&app.token("alice")),
            "query($id: ID!) { project(id: $id) { id } }",
            json!({ "id": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(error_code(&response), Some("NOT_FOUND"));
    assert_eq!(response["data"], serde_json::Value::Null);
}
