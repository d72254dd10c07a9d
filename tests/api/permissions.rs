//! The permission matrix: who may do what in a project, and what everyone else learns.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tasknest::auth::{Claims, JwtKeys};

use crate::helpers::*;

/// A caller in the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Owner,
    Editor,
    Viewer,
    NonMember,
    NoToken,
    Expired,
    WrongSignature,
    AlgNone,
}

const CALLERS: [Caller; 8] = [
    Caller::Owner,
    Caller::Editor,
    Caller::Viewer,
    Caller::NonMember,
    Caller::NoToken,
    Caller::Expired,
    Caller::WrongSignature,
    Caller::AlgNone,
];

fn token_for(app: &TestApp, caller: Caller) -> Option<String> {
    let now = chrono::Utc::now().timestamp();
    match caller {
        Caller::Owner => Some(app.token("owner")),
        Caller::Editor => Some(app.token("editor")),
        Caller::Viewer => Some(app.token("viewer")),
        Caller::NonMember => Some(app.token("stranger")),
        Caller::NoToken => None,
        Caller::Expired => Some(app.token_with(&Claims {
            sub: app.user("owner"),
            name: Some("Owner".into()),
            avatar: None,
            exp: now - 60,
            nbf: None,
            iat: Some(now - 3600),
        })),
        Caller::WrongSignature => Some(
            JwtKeys::new(b"some-other-secret-some-other-secret!")
                .mint(
                    &app.user("owner"),
                    "Owner",
                    None,
                    std::time::Duration::from_secs(600),
                )
                .expect("mint"),
        ),
        Caller::AlgNone => {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
            let claims = URL_SAFE_NO_PAD
                .encode(json!({ "sub": "owner", "name": "Owner", "exp": now + 600 }).to_string());
            Some(format!("{header}.{claims}."))
        }
    }
}

/// What each caller gets: `None` for success, or the error code.
fn expected(caller: Caller, needs: &str) -> Option<&'static str> {
    match caller {
        Caller::NoToken | Caller::Expired | Caller::WrongSignature | Caller::AlgNone => {
            Some("UNAUTHENTICATED")
        }
        Caller::NonMember => Some("NOT_FOUND"),
        Caller::Owner => None,
        Caller::Editor if needs != "OWNER" => None,
        Caller::Viewer if needs == "VIEWER" => None,
        _ => Some("FORBIDDEN"),
    }
}

struct Fixture {
    project: String,
    task: Value,
    /// The id of the member the owner removes.
    leaver: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let owner = app.token("owner");
    let project = app.create_project(&owner, "Matrix").await;
    app.add_member(&owner, &project, "editor", "EDITOR").await;
    app.add_member(&owner, &project, "viewer", "VIEWER").await;
    app.add_member(&owner, &project, "leaver", "VIEWER").await;
    let task = app.create_task(&owner, &project, "Target").await;
    // The non-member must exist as a user, so that "not found" is about membership.
    app.ok(&app.token("stranger"), "{ me { id } }", json!({}))
        .await;
    Fixture {
        project,
        task,
        leaver: app.user("leaver"),
    }
}

/// (operation, role it needs, query, variables).
fn operations(f: &Fixture) -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let p = &f.project;
    let t = &f.task["id"];
    vec![
        (
            "read project",
            "VIEWER",
            "query($p: ID!) { project(id: $p) { id tasks { totalCount } members { role } } }",
            json!({ "p": p }),
        ),
        (
            "read task",
            "VIEWER",
            "query($t: ID!) { task(id: $t) { id title } }",
            json!({ "t": t }),
        ),
        (
            "read events",
            "VIEWER",
            "query($p: ID!) { events(projectId: $p) { lastSeq } }",
            json!({ "p": p }),
        ),
        (
            "create task",
            "EDITOR",
            "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"new\"}) { id } }",
            json!({ "p": p }),
        ),
        (
            "update task",
            "EDITOR",
            "mutation($t: ID!) { updateTask(id: $t, patch: {priority: 2}) { __typename } }",
            json!({ "t": t }),
        ),
        (
            "update project",
            "OWNER",
            "mutation($p: ID!) { updateProject(id: $p, input: {description: \"d\"}) { id } }",
            json!({ "p": p }),
        ),
        (
            "add member",
            "OWNER",
            "mutation($p: ID!) { addMember(projectId: $p, userId: \"newbie\", role: VIEWER) { role } }",
            json!({ "p": p }),
        ),
        (
            "remove member",
            "OWNER",
            "mutation($p: ID!, $u: ID!) { removeMember(projectId: $p, userId: $u) }",
            json!({ "p": p, "u": f.leaver }),
        ),
        (
            "delete task",
            "EDITOR",
            "mutation($t: ID!) { deleteTask(id: $t) { __typename } }",
            json!({ "t": t }),
        ),
        (
            "delete project",
            "OWNER",
            "mutation($p: ID!) { deleteProject(id: $p) }",
            json!({ "p": p }),
        ),
    ]
}

#[tokio::test]
async fn every_caller_gets_exactly_what_its_role_allows() {
    let app = spawn_app().await;
    let owner = app.token("owner");
    for caller in CALLERS {
        let token = token_for(&app, caller);
        // A fresh project per caller, so that allowed writes do not change the next check.
        let f = fixture(&app).await;
        for (name, needs, query, variables) in operations(&f) {
            let seq_before = app.events(&owner, &f.project, 0).await["lastSeq"].clone();
            let response = app.gql(token.as_deref(), query, variables).await;
            let want = expected(caller, needs);
            assert_eq!(
                error_code(&response),
                want,
                "{caller:?} doing {name}: {response:#}"
            );
            if want.is_some() {
                assert_eq!(
                    response["data"],
                    Value::Null,
                    "{caller:?} {name} leaks data"
                );
                if name != "delete project" {
                    let seq_after = app.events(&owner, &f.project, 0).await["lastSeq"].clone();
                    assert_eq!(seq_before, seq_after, "{caller:?} {name} changed something");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_non_member_cannot_tell_a_project_from_a_missing_one() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let stranger = app.token("stranger");
    let existing = app
        .gql(
            Some(&stranger),
            "query($p: ID!) { project(id: $p) { id } }",
            json!({ "p": f.project }),
        )
        .await;
    let missing = app
        .gql(
            Some(&stranger),
            "query($p: ID!) { project(id: $p) { id } }",
            json!({ "p": uuid::Uuid::new_v4() }),
        )
        .await;
    assert_eq!(
        existing["errors"][0]["message"],
        missing["errors"][0]["message"]
    );
    assert_eq!(error_code(&existing), error_code(&missing));
}
