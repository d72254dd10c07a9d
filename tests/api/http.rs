//! GraphQL over HTTP as clients and the specification expect, and the request limits.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    accept: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String, Value) {
    let mut request = app
        .client
        .post(app.graphql_url())
        .bearer_auth(app.token("alice"))
        .header("content-type", content_type)
        .body(body);
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let media = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, media, body)
}

#[tokio::test]
async fn the_response_media_type_follows_accept() {
    let app = spawn_app().await;
    let query = serde_json::to_vec(&json!({ "query": "{ me { id } }" })).unwrap();
    let (status, media, body) = post_raw(
        &app,
        "application/json",
        Some("application/graphql-response+json"),
        query.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        media.starts_with("application/graphql-response+json"),
        "{media}"
    );
    assert_eq!(body["data"]["me"]["id"], app.user("alice"));
    let (_, media, _) = post_raw(
        &app,
        "application/json",
        Some("application/json"),
        query.clone(),
    )
    .await;
    assert!(media.starts_with("application/json"), "{media}");
    let (_, media, _) = post_raw(&app, "application/json", None, query).await;
    assert!(
        media.starts_with("application/json"),
        "no Accept means application/json: {media}"
    );
}

#[tokio::test]
async fn requests_that_cannot_run_get_4xx_with_a_coded_error() {
    let app = spawn_app().await;
    let gql = Some("application/graphql-response+json");
    // (case, content type, accept, body, expected status)
    type Case = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            "application/json",
            gql,
            b"{\"query\": ".to_vec(),
            400,
        ),
        (
            "invalid UTF-8",
            "application/json",
            gql,
            vec![0xff, 0xfe, 0x00],
            400,
        ),
        ("no query", "application/json", gql, b"{}".to_vec(), 400),
        (
            "a batch",
            "application/json",
            gql,
            b"[{\"query\":\"{ me { id } }\"}]".to_vec(),
            400,
        ),
        (
            "variables not an object",
            "application/json",
            gql,
            b"{\"query\":\"{ me { id } }\",\"variables\":[1]}".to_vec(),
            400,
        ),
        (
            "a syntax error",
            "application/json",
            gql,
            b"{\"query\":\"{ me { id \"}".to_vec(),
            400,
        ),
        (
            "an unknown field",
            "application/json",
            gql,
            b"{\"query\":\"{ nope }\"}".to_vec(),
            400,
        ),
        (
            "text/plain",
            "text/plain",
            gql,
            b"{ me { id } }".to_vec(),
            415,
        ),
        (
            "form data",
            "application/x-www-form-urlencoded",
            gql,
            b"query=x".to_vec(),
            415,
        ),
    ];
    for (name, content_type, accept, body, want) in cases {
        let (status, _, body) = post_raw(&app, content_type, accept, body).await;
        assert_eq!(status.as_u16(), want, "{name}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{name}: {body}"
        );
    }
    // With application/json a GraphQL error is still a 200, as older clients expect.
    let (status, _, body) = post_raw(
        &app,
        "application/json",
        Some("application/json"),
        b"{\"query\":\"{ nope }\"}".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn queries_run_over_get_and_mutations_do_not() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let get = |query: &str| {
        app.client
            .get(app.graphql_url())
            .bearer_auth(&alice)
            .query(&[("query", query)])
            .send()
    };
    let response = get("{ me { id } }").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"]["me"]["id"],
        app.user("alice")
    );
    let response = get("mutation { createProject(input: {name: \"x\"}) { id } }")
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert_eq!(
        app.ok(&alice, "{ projects { id } }", json!({})).await["projects"],
        json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn oversized_bodies_deep_queries_and_big_pages_are_refused() {
    let app = spawn_app().await;
    let huge = serde_json::to_vec(
        &json!({ "query": format!("{{ me {{ id }} }} #{}", "x".repeat(2 * 1024 * 1024)) }),
    )
    .unwrap();
    let (status, _, _) = post_raw(&app, "application/json", None, huge).await;
    assert_eq!(status, 413);

    let deep = "{ projects { tasks { nodes { project: projectId assignee { id } } } } }";
    let ok = app.gql(Some(&app.token("alice")), deep, json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let mut nested = String::from("id");
    for _ in 0..20 {
        nested = format!("__typename ... on Query {{ {nested} }}");
    }
    let too_deep = app
        .gql(
            Some(&app.token("alice")),
            &format!("{{ me {{ id }} ... on Query {{ {nested} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&too_deep), Some("BAD_USER_INPUT"), "{too_deep}");
    let alias_bomb = format!(
        "{{ {} }}",
        (0..3000)
            .map(|i| format!("a{i}: me {{ id }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let bombed = app
        .gql(Some(&app.token("alice")), &alias_bomb, json!({}))
        .await;
    assert_eq!(
        error_code(&bombed),
        Some("BAD_USER_INPUT"),
        "complexity limit"
    );
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let app = spawn_app_with(|c| c.introspection = false).await;
    let response = app
        .gql(None, "{ __schema { queryType { name } } }", json!({}))
        .await;
    assert_eq!(response["data"]["__schema"], Value::Null, "{response}");
    let response = app
        .gql(
            None,
            "{ __type(name: \"Task\") { fields { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(response["data"]["__type"], Value::Null, "{response}");
    // The API itself still works.
    let me = app
        .ok(&app.token("alice"), "{ me { id } }", json!({}))
        .await;
    assert_eq!(me["me"]["id"], app.user("alice"));
}

#[tokio::test]
async fn cors_allows_listed_origins_with_credentials_and_no_others() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.graphql_url())
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let denied = preflight("https://evil.example.net").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_keeps_the_callers() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.graphql_url())
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let response = app
        .client
        .post(app.graphql_url())
        .header("x-request-id", "trace-me-42")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn with_batching_on_a_batch_runs_each_operation_and_answers_an_array() {
    let app = spawn_app_with(|c| c.max_batch = 3).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let create = "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { title } }";
    let batch = json!([
        { "query": create, "variables": { "p": project, "t": "one" } },
        { "query": "{ me { id } }" },
        { "variables": {} },
    ]);
    let (status, _, body) = post_raw(
        &app,
        "application/json",
        Some("application/json"),
        batch.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let results = body.as_array().expect("an array, one result per operation");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["data"]["createTask"]["title"], "one");
    assert_eq!(results[1]["data"]["me"]["id"], app.user("alice"));
    assert_eq!(error_code(&results[2]), Some("BAD_USER_INPUT"));

    // Over the cap: refused whole, nothing of it runs.
    let over: Vec<Value> = (0..4)
        .map(
            |i| json!({ "query": create, "variables": { "p": project, "t": format!("over {i}") } }),
        )
        .collect();
    let (status, _, body) = post_raw(
        &app,
        "application/json",
        Some("application/json"),
        Value::Array(over).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), Some("BAD_USER_INPUT"));
    let (status, _, _) = post_raw(&app, "application/json", None, b"[]".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an empty batch");
    assert_eq!(
        app.events(&alice, &project, 0).await["lastSeq"],
        1,
        "only the first batch wrote"
    );
}
