//! Personal API tokens for integrations: scopes, projects, revocation on every instance,
//! who-did-it on events, and a rate-limit budget of their own.

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;
use crate::subscriptions::EVENTS;

const CREATE_TOKEN: &str = "mutation($in: CreateApiTokenInput!) { createApiToken(input: $in) { secret token { id name scopes projectIds createdAt expiresAt lastUsedAt revokedAt } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeApiToken(id: $id) }";
const LIST: &str =
    "{ apiTokens { id name scopes projectIds createdAt expiresAt lastUsedAt revokedAt } }";
const UPDATE_TITLE: &str =
    "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { __typename } }";
const CREATE_TASK: &str =
    "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { id } }";
const WHO: &str = "query($p: ID!) { events(projectId: $p, limit: 100) { events { seq kind actor { id } actorVia actorTokenName } } }";

/// Creates a token as `session`; returns `(id, secret)`.
async fn create_token(app: &TestApp, session: &str, input: Value) -> (String, String) {
    let data = app.ok(session, CREATE_TOKEN, json!({ "in": input })).await;
    let created = &data["createApiToken"];
    (
        created["token"]["id"].as_str().expect("id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

#[tokio::test]
async fn a_read_token_reads_and_subscribes_to_its_project_and_nothing_else() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let a = app.create_project(&alice, "A").await;
    let b = app.create_project(&alice, "B").await;
    let task = app.create_task(&alice, &a, "T").await;
    let (_, bot) = create_token(
        &app,
        &alice,
        json!({ "name": "Dashboard", "scopes": ["READ"], "projectIds": [a] }),
    )
    .await;

    let listed = app.ok(&bot, "{ projects { id } }", json!({})).await;
    assert_eq!(listed["projects"], json!([{ "id": a }]), "only its project");
    let other = app
        .gql(
            Some(&bot),
            "query($id: ID!) { project(id: $id) { id } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(error_code(&other), Some("NOT_FOUND"), "{other}");
    let read = app
        .ok(
            &bot,
            "query($id: ID!) { project(id: $id) { name } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(read["project"]["name"], "A");

    let write = app
        .gql(
            Some(&bot),
            UPDATE_TITLE,
            json!({ "id": task["id"], "t": "by a reader" }),
        )
        .await;
    assert_eq!(error_code(&write), Some("FORBIDDEN"), "{write}");
    let project = app
        .gql(
            Some(&bot),
            "mutation { createProject(input: {name: \"X\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&project), Some("FORBIDDEN"), "{project}");
    let tasks = app
        .ok(
            &alice,
            "query($id: ID!) { project(id: $id) { tasks { nodes { title } } } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(
        tasks["project"]["tasks"]["nodes"][0]["title"], "T",
        "nothing written"
    );

    // The same token over graphql-ws: its project streams, the other is not there.
    let mut ws = app.ws(&bot).await;
    ws.subscribe("b", EVENTS, json!({ "p": b })).await;
    let refused = ws.next().await.expect("a message");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
    ws.subscribe("a", EVENTS, json!({ "p": a, "a": 1 })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    crate::subscriptions::rename(&app, &alice, &task, "seen by the bot").await;
    let event = ws.next_event("a").await;
    assert_eq!(event["task"]["title"], "seen by the bot");
}

#[tokio::test]
async fn a_write_token_edits_tasks_as_its_user_and_every_event_says_through_what() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    let bobs = app.create_project(&bob, "Bob's").await;
    app.add_member(&bob, &bobs, "alice", "VIEWER").await;
    let (_, bot) = create_token(
        &app,
        &alice,
        json!({ "name": "CI bot", "scopes": ["WRITE"] }),
    )
    .await;

    let created = app
        .ok(&bot, CREATE_TASK, json!({ "p": project, "t": "from CI" }))
        .await;
    let task = created["createTask"]["id"].as_str().unwrap().to_owned();
    app.ok(&alice, UPDATE_TITLE, json!({ "id": task, "t": "by hand" }))
        .await;
    let events = app.ok(&alice, WHO, json!({ "p": project })).await;
    let events = events["events"]["events"].as_array().unwrap();
    let by_bot = events.iter().find(|e| e["kind"] == "TASK_CREATED").unwrap();
    assert_eq!(by_bot["actor"]["id"], app.user("alice"), "acts as its user");
    assert_eq!(by_bot["actorVia"], "API_TOKEN");
    assert_eq!(by_bot["actorTokenName"], "CI bot");
    let by_hand = events.iter().find(|e| e["kind"] == "TASK_UPDATED").unwrap();
    assert_eq!(by_hand["actorVia"], "SESSION");
    assert_eq!(by_hand["actorTokenName"], Value::Null);

    // Within the user's role: Alice only views Bob's project, so her token cannot write it.
    let viewer_write = app
        .gql(Some(&bot), CREATE_TASK, json!({ "p": bobs, "t": "no" }))
        .await;
    assert_eq!(
        error_code(&viewer_write),
        Some("FORBIDDEN"),
        "{viewer_write}"
    );
    // Members are ADMIN work.
    let member = app
        .gql(
            Some(&bot),
            "mutation($p: ID!, $u: ID!) { addMember(projectId: $p, userId: $u, role: EDITOR) { role } }",
            json!({ "p": project, "u": app.user("carol") }),
        )
        .await;
    assert_eq!(error_code(&member), Some("FORBIDDEN"), "{member}");

    // An ADMIN token manages the project, and the listing shows when a token was used.
    let (_, admin) = create_token(
        &app,
        &alice,
        json!({ "name": "Admin", "scopes": ["ADMIN"] }),
    )
    .await;
    app.ok(
        &admin,
        "mutation($p: ID!, $u: ID!) { addMember(projectId: $p, userId: $u, role: EDITOR) { role } }",
        json!({ "p": project, "u": app.user("carol") }),
    )
    .await;
    let listed = app.ok(&alice, LIST, json!({})).await;
    let tokens = listed["apiTokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["name"], "Admin", "newest first");
    assert!(
        tokens.iter().all(|t| t["lastUsedAt"].is_string()),
        "{listed}"
    );
}

#[tokio::test]
async fn a_token_limited_to_one_project_cannot_write_tasks_of_another() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let mine = app.create_project(&alice, "Mine").await;
    let other = app.create_project(&alice, "Other").await;
    let outside = app.create_task(&alice, &other, "untouched").await;
    let (_, bot) = create_token(
        &app,
        &alice,
        json!({ "name": "Scoped", "scopes": ["WRITE"], "projectIds": [mine] }),
    )
    .await;

    app.ok(&bot, CREATE_TASK, json!({ "p": mine, "t": "inside" }))
        .await;
    let create = app
        .gql(Some(&bot), CREATE_TASK, json!({ "p": other, "t": "no" }))
        .await;
    assert_eq!(error_code(&create), Some("NOT_FOUND"), "{create}");
    let update = app
        .gql(
            Some(&bot),
            "mutation($id: ID!) { updateTask(id: $id, patch: {title: \"no\"}, baseVersion: 1, clientMutationId: \"u1\") { __typename } }",
            json!({ "id": outside["id"] }),
        )
        .await;
    assert_eq!(error_code(&update), Some("NOT_FOUND"), "{update}");
    let delete = app
        .gql(
            Some(&bot),
            "mutation($id: ID!) { deleteTask(id: $id, clientMutationId: \"d1\") { __typename } }",
            json!({ "id": outside["id"] }),
        )
        .await;
    assert_eq!(error_code(&delete), Some("NOT_FOUND"), "{delete}");

    // Nothing was written to the other project: its only task is as it was.
    let page = app.events(&alice, &other, 0).await;
    let kinds: Vec<_> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["kind"].clone(), e["task"]["title"].clone()))
        .collect();
    assert_eq!(kinds, [(json!("TASK_CREATED"), json!("untouched"))]);
}

#[tokio::test]
async fn the_secret_is_shown_once_and_only_its_hash_is_stored() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let data = app
        .ok(
            &alice,
            CREATE_TOKEN,
            json!({ "in": { "name": "Importer", "scopes": ["WRITE", "READ", "WRITE"], "projectIds": [project] } }),
        )
        .await;
    let created = &data["createApiToken"];
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("tn_"), "{secret}");
    assert!(secret.len() >= 3 + 22, "at least 128 bits: {secret}");
    assert_eq!(created["token"]["scopes"], json!(["READ", "WRITE"]));
    assert_eq!(created["token"]["projectIds"], json!([project]));
    assert_eq!(created["token"]["lastUsedAt"], Value::Null);

    // Listing never carries the secret, and the schema has no field for it.
    let listed = app.ok(&alice, LIST, json!({})).await;
    assert!(!listed.to_string().contains(secret));
    let asked = app
        .gql(Some(&alice), "{ apiTokens { secret } }", json!({}))
        .await;
    assert_eq!(error_code(&asked), Some("BAD_USER_INPUT"), "{asked}");

    let db = sea_orm::Database::connect(&app.database_url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT secret_hash FROM api_tokens".to_owned(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].try_get("", "secret_hash").unwrap();
    let expected: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored, expected, "SHA-256 of the secret");

    // A secret with a broken checksum, or made up, is refused like any bad token.
    let mut forged = secret.to_owned();
    forged.replace_range(5..6, if &secret[5..6] == "a" { "b" } else { "a" });
    for bad in [forged.as_str(), "tn_not-a-real-token"] {
        let refused = app.gql(Some(bad), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
    }
}

#[tokio::test]
async fn only_a_signed_in_person_manages_tokens() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let (id, token) = create_token(
        &app,
        &alice,
        json!({ "name": "All", "scopes": ["READ", "WRITE", "ADMIN"] }),
    )
    .await;
    let create = app
        .gql(
            Some(&token),
            CREATE_TOKEN,
            json!({ "in": { "name": "child", "scopes": ["READ"] } }),
        )
        .await;
    assert_eq!(error_code(&create), Some("FORBIDDEN"), "{create}");
    let list = app.gql(Some(&token), LIST, json!({})).await;
    assert_eq!(error_code(&list), Some("FORBIDDEN"), "{list}");
    let revoke = app.gql(Some(&token), REVOKE, json!({ "id": id })).await;
    assert_eq!(error_code(&revoke), Some("FORBIDDEN"), "{revoke}");

    // Someone else's token is not there to revoke.
    let bob = app.token("bob");
    let foreign = app.gql(Some(&bob), REVOKE, json!({ "id": id })).await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    app.ok(&token, "{ me { id } }", json!({})).await;
}

#[tokio::test]
async fn bad_token_requests_are_refused_with_the_field_at_fault() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bobs = app.create_project(&app.token("bob"), "Bob's").await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let cases = [
        (
            json!({ "name": "", "scopes": ["READ"] }),
            "BAD_USER_INPUT",
            Some("input.name"),
        ),
        (
            json!({ "name": "x", "scopes": [] }),
            "BAD_USER_INPUT",
            Some("input.scopes"),
        ),
        (
            json!({ "name": "x", "scopes": ["READ"], "expiresAt": past }),
            "BAD_USER_INPUT",
            Some("input.expiresAt"),
        ),
        (
            json!({ "name": "x", "scopes": ["READ"], "projectIds": [] }),
            "BAD_USER_INPUT",
            Some("input.projectIds"),
        ),
        (
            json!({ "name": "x", "scopes": ["READ"], "projectIds": [bobs] }),
            "NOT_FOUND",
            None,
        ),
        (
            json!({ "name": "x", "scopes": ["READ"], "projectIds": ["nope"] }),
            "BAD_USER_INPUT",
            Some("input.projectIds"),
        ),
    ];
    for (input, code, field) in cases {
        let refused = app
            .gql(Some(&alice), CREATE_TOKEN, json!({ "in": input }))
            .await;
        assert_eq!(error_code(&refused), Some(code), "{input}: {refused}");
        if field.is_some() {
            assert_eq!(error_field(&refused), field, "{input}: {refused}");
        }
    }
    let listed = app.ok(&alice, LIST, json!({})).await;
    assert_eq!(listed["apiTokens"], json!([]), "nothing half-made");
}

#[tokio::test]
async fn an_expiring_token_stops_working_and_ends_its_subscriptions() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (_, token) = create_token(
        &app,
        &alice,
        json!({ "name": "Short", "scopes": ["READ"], "expiresAt": expires.to_rfc3339() }),
    )
    .await;
    let mut ws = app.ws(&token).await;
    ws.subscribe("e", EVENTS, json!({ "p": project })).await;
    let started = std::time::Instant::now();
    assert_eq!(ws.close_code().await, Some(4403), "closed as forbidden");
    assert!(started.elapsed() < Duration::from_secs(6));
    let refused = app.gql(Some(&token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
}

#[tokio::test]
async fn revoking_a_token_refuses_it_and_ends_its_subscriptions_on_every_instance() {
    let Some(redis) =
        require_redis("revoking_a_token_refuses_it_and_ends_its_subscriptions_on_every_instance")
    else {
        return;
    };
    // No periodic help: only the notice on the bus can end B's stream in time.
    let configure = |c: &mut tasknest::Config| {
        c.redis_url = Some(redis.clone());
        c.gap_check_interval = Duration::from_secs(600);
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_sharing(&a, configure).await;
    let alice = a.token("alice");
    let project = a.create_project(&alice, "P").await;
    let (id, token) = create_token(&a, &alice, json!({ "name": "Bot", "scopes": ["READ"] })).await;
    let (_, other) = create_token(&a, &alice, json!({ "name": "Other", "scopes": ["READ"] })).await;
    let mut on_a = a.ws(&token).await;
    let mut on_b = b.ws(&token).await;
    let mut unrelated = b.ws(&other).await;
    for ws in [&mut on_a, &mut on_b, &mut unrelated] {
        ws.subscribe("e", EVENTS, json!({ "p": project })).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    assert_eq!(
        a.ok(&alice, REVOKE, json!({ "id": id })).await["revokeApiToken"],
        true
    );
    assert_eq!(on_a.close_code().await, Some(4403));
    assert_eq!(on_b.close_code().await, Some(4403));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for app in [&a, &b] {
        let refused = app.gql(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&refused), Some("UNAUTHENTICATED"), "{refused}");
    }
    let mut refused_ws = WsClient::connect(b.addr, "graphql-transport-ws").await;
    refused_ws
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
        .await;
    assert_eq!(refused_ws.close_code().await, Some(4403));

    // The other token's stream goes on; revoking again changes nothing.
    let task = a.create_task(&alice, &project, "still live").await;
    let event = unrelated.next_event("e").await;
    assert_eq!(event["taskId"], task["id"]);
    assert_eq!(
        a.ok(&alice, REVOKE, json!({ "id": id })).await["revokeApiToken"],
        true
    );
    let listed = a.ok(&alice, LIST, json!({})).await;
    let revoked = listed["apiTokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revokedAt"].is_string(), "{revoked}");
}

#[tokio::test]
async fn a_token_spends_a_rate_limit_budget_of_its_own() {
    let app = spawn_app_with(|c| {
        c.rate_burst = 3;
        c.rate_per_second = 0.5;
    })
    .await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let (_, bot) = create_token(
        &app,
        &alice,
        json!({ "name": "Importer", "scopes": ["WRITE"] }),
    )
    .await;
    for i in 0..3 {
        app.ok(
            &bot,
            CREATE_TASK,
            json!({ "p": project, "t": format!("t{i}") }),
        )
        .await;
    }
    let limited = app
        .gql(
            Some(&bot),
            CREATE_TASK,
            json!({ "p": project, "t": "one too many" }),
        )
        .await;
    assert_eq!(error_code(&limited), Some("RATE_LIMITED"), "{limited}");
    // Alice in the UI still has her budget (she spent two on the project and the token).
    app.ok(&alice, CREATE_TASK, json!({ "p": project, "t": "by hand" }))
        .await;
}
