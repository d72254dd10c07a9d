//! Members: adding by id, changing roles, removing, and the last OWNER rule.

use serde_json::json;

use crate::helpers::*;

const ADD: &str = "mutation($p: ID!, $u: ID!, $r: Role!) { addMember(projectId: $p, userId: $u, role: $r) { role joinedAt user { id name avatarUrl } } }";
const REMOVE: &str = "mutation($p: ID!, $u: ID!) { removeMember(projectId: $p, userId: $u) }";

#[tokio::test]
async fn a_user_never_seen_can_be_added_and_is_named_by_id_until_signing_in() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let data = app
        .ok(
            &alice,
            ADD,
            json!({ "p": project, "u": app.user("carol"), "r": "VIEWER" }),
        )
        .await;
    assert_eq!(
        data["addMember"]["user"],
        json!({ "id": app.user("carol"), "name": app.user("carol"), "avatarUrl": null })
    );
    assert_eq!(data["addMember"]["role"], "VIEWER");

    // Carol signs in: her row takes the token's name, and she sees the project.
    let carol = app.token("carol");
    let mine = app
        .ok(&carol, "{ projects { id viewerRole } }", json!({}))
        .await;
    assert_eq!(
        mine["projects"],
        json!([{ "id": project, "viewerRole": "VIEWER" }])
    );
    let members = app
        .ok(
            &alice,
            "query($p: ID!) { project(id: $p) { members { user { id name } } } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(members["project"]["members"][1]["user"]["name"], "Carol");

    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][0]["kind"], "MEMBER_ADDED");
    assert_eq!(
        events["events"][0]["changes"],
        json!({ "userId": app.user("carol"), "role": "VIEWER" })
    );
}

#[tokio::test]
async fn adding_an_existing_member_changes_its_role() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "VIEWER").await;
    let data = app
        .ok(
            &alice,
            ADD,
            json!({ "p": project, "u": app.user("bob"), "r": "EDITOR" }),
        )
        .await;
    assert_eq!(data["addMember"]["role"], "EDITOR");
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(seqs(&events), vec![1, 2]);
    assert_eq!(events["events"][1]["kind"], "MEMBER_ROLE_CHANGED");
    // The same role again is no change.
    app.ok(
        &alice,
        ADD,
        json!({ "p": project, "u": app.user("bob"), "r": "EDITOR" }),
    )
    .await;
    assert_eq!(app.events(&alice, &project, 0).await["lastSeq"], 2);
}

#[tokio::test]
async fn the_last_owner_can_be_neither_removed_nor_demoted() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let response = app
        .gql(
            Some(&alice),
            REMOVE,
            json!({ "p": project, "u": app.user("alice") }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
    let response = app
        .gql(
            Some(&alice),
            ADD,
            json!({ "p": project, "u": app.user("alice"), "r": "EDITOR" }),
        )
        .await;
    assert_eq!(error_code(&response), Some("BAD_USER_INPUT"));
    assert_eq!(
        app.events(&alice, &project, 0).await["lastSeq"],
        0,
        "nothing was logged"
    );

    // With a second owner, the first may step down.
    app.add_member(&alice, &project, "bob", "OWNER").await;
    let data = app
        .ok(
            &alice,
            REMOVE,
            json!({ "p": project, "u": app.user("alice") }),
        )
        .await;
    assert_eq!(data["removeMember"], true);
    let response = app
        .gql(
            Some(&alice),
            "query($p: ID!) { project(id: $p) { id } }",
            json!({ "p": project }),
        )
        .await;
    assert_eq!(
        error_code(&response),
        Some("NOT_FOUND"),
        "a removed member is a non-member"
    );
}

#[tokio::test]
async fn a_member_may_leave_but_not_remove_others() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "EDITOR").await;
    app.add_member(&alice, &project, "carol", "VIEWER").await;
    let bob = app.token("bob");
    let response = app
        .gql(
            Some(&bob),
            REMOVE,
            json!({ "p": project, "u": app.user("carol") }),
        )
        .await;
    assert_eq!(error_code(&response), Some("FORBIDDEN"));
    let data = app
        .ok(&bob, REMOVE, json!({ "p": project, "u": app.user("bob") }))
        .await;
    assert_eq!(data["removeMember"], true);
    let events = app.events(&alice, &project, 0).await;
    assert_eq!(events["events"][2]["kind"], "MEMBER_REMOVED");
    assert_eq!(
        events["events"][2]["changes"],
        json!({ "userId": app.user("bob") })
    );
}
