//! Subscriptions over multipart HTTP (Apollo Client's HttpLink without a WebSocket link).

use serde_json::{Value, json};

use crate::helpers::*;
use crate::subscriptions::{EVENTS, rename};

pub const ACCEPT: &str =
    r#"multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json"#;

/// The JSON parts of a multipart body read so far that are complete (closed by the next
/// boundary line).
fn complete_parts(raw: &str) -> Vec<Value> {
    let mut pieces: Vec<&str> = raw.split("\r\n--graphql").collect();
    // The last piece is either the terminator ("--\r\n") or a part still open.
    pieces.pop();
    pieces
        .iter()
        .filter_map(|piece| piece.split_once("\r\n\r\n"))
        .filter_map(|(_, body)| serde_json::from_str(body).ok())
        .collect()
}

/// Reads `response` into `raw` until a complete part with a payload arrived; returns it.
pub async fn next_payload_part(response: &mut reqwest::Response, raw: &mut String) -> Value {
    let seen = complete_parts(raw).len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(part) = complete_parts(raw)
            .into_iter()
            .skip(seen)
            .find(|p| p.get("payload").is_some())
        {
            return part;
        }
        assert!(std::time::Instant::now() < deadline, "{raw}");
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(15), response.chunk())
            .await
            .expect("a chunk")
            .expect("the body reads")
            .expect("more body");
        raw.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn a_subscription_streams_payload_parts_each_closed_by_the_next_boundary() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&alice)
        .header("accept", ACCEPT)
        .json(&json!({ "query": EVENTS, "variables": { "p": project } }))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        content_type,
        r#"multipart/mixed;boundary="graphql";subscriptionSpec="1.0""#
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    rename(&app, &alice, &task, "over multipart").await;
    let mut raw = String::new();
    let part = next_payload_part(&mut response, &mut raw).await;
    assert_eq!(part["payload"]["data"]["projectEvents"]["seq"], 2);
    assert_eq!(
        part["payload"]["data"]["projectEvents"]["task"]["title"],
        "over multipart"
    );
    assert!(
        raw.ends_with("\r\n--graphql"),
        "the part is closed at once: {raw:?}"
    );
}

#[tokio::test]
async fn a_non_member_gets_the_error_in_the_payload_and_the_body_ends() {
    let app = spawn_app().await;
    let project = app.create_project(&app.token("alice"), "P").await;
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(app.token("mallory"))
        .header("accept", ACCEPT)
        .json(&json!({ "query": EVENTS, "variables": { "p": project } }))
        .send()
        .await
        .unwrap();
    let body = response.text().await.unwrap();
    let parts = complete_parts(&body);
    assert_eq!(
        parts[0]["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{body:?}"
    );
    assert!(body.ends_with("\r\n--graphql--\r\n"), "{body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_client_with_a_plain_http_link_receives_a_subscription() {
    let Some(dir) = require_client_project("the Apollo multipart test") else {
        return;
    };
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let env = [
        ("TASKNEST_HTTP", app.graphql_url()),
        ("TOKEN", alice),
        ("PROJECT", project),
        ("TASK", task["id"].as_str().unwrap().to_owned()),
    ];
    let result = run_node(&dir, "apollo-multipart.mjs", &env).await;
    assert_eq!(result["seqs"], json!([2, 3, 4]));
    assert_eq!(result["titles"], json!(["one", "two", "three"]));
}

#[tokio::test]
async fn an_expiring_token_ends_sse_and_multipart_streams_with_unauthenticated() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let short = app
        .keys
        .mint(
            &app.user("alice"),
            "Alice",
            None,
            std::time::Duration::from_secs(2),
        )
        .expect("mint");
    let mut sse = app
        .sse(Some(&short), EVENTS, json!({ "p": project }), None)
        .await;
    let multipart = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&short)
        .header("accept", ACCEPT)
        .json(&json!({ "query": EVENTS, "variables": { "p": project } }))
        .send()
        .await
        .unwrap();
    let ended = sse.next().await.expect("next");
    assert_eq!(
        ended.data["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{:?}",
        ended.data
    );
    assert_eq!(sse.next().await.expect("complete").event, "complete");
    let body = tokio::time::timeout(std::time::Duration::from_secs(15), multipart.text())
        .await
        .expect("the body ends")
        .unwrap();
    let fatal = complete_parts(&body)
        .into_iter()
        .find(|p| p.get("errors").is_some())
        .expect("a fatal error part");
    assert_eq!(fatal["payload"], Value::Null);
    assert_eq!(fatal["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert!(body.ends_with("\r\n--graphql--\r\n"), "{body:?}");
}
