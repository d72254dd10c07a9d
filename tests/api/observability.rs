//! `/metrics`: what operators watch.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn metrics_count_requests_operations_connections_and_events() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    app.ok(&alice, "query Mine { projects { id } }", json!({}))
        .await;
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe(
        "e",
        crate::subscriptions::EVENTS,
        json!({ "p": project, "a": 0 }),
    )
    .await;
    app.create_task(&alice, &project, "T").await;
    assert_eq!(ws.next_event("e").await["seq"], 1);
    // The stream is live now: the next event goes through the room.
    app.create_task(&alice, &project, "U").await;
    assert_eq!(ws.next_event("e").await["seq"], 2);

    let response = app
        .client
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    };
    assert!(
        value("tasknest_http_requests_total{method=\"POST\",path=\"/graphql\",status=\"200\"}")
            >= 3.0
    );
    assert_eq!(
        value("tasknest_graphql_operations_total{operation=\"Mine\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(value("tasknest_websocket_connections"), 1.0);
    assert_eq!(value("tasknest_active_subscriptions"), 1.0);
    assert_eq!(value("tasknest_events_published_total"), 2.0);
    assert!(value("tasknest_events_delivered_total") >= 1.0);
    assert_eq!(value("tasknest_database_up"), 1.0);
    let statements = value("tasknest_db_statements_total");
    assert!(statements > 0.0);
    // Every statement counted was also timed (timed first, and read after the count, so
    // never fewer even while background checks run), and every rate-limit check: three
    // mutations and one subscription start.
    assert!(value("tasknest_db_statement_duration_seconds_count") >= statements);
    assert_eq!(
        value("tasknest_rate_limit_check_duration_seconds_count"),
        4.0
    );
    assert!(text.contains("tasknest_event_commit_to_delivery_seconds_bucket"));
    assert!(
        text.contains("tasknest_graphql_operation_duration_seconds_count{operation=\"Mine\"} 1")
    );

    ws.close().await;
    for _ in 0..50 {
        let text = app
            .client
            .get(format!("http://{}/metrics", app.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text
            .lines()
            .any(|l| l == "tasknest_websocket_connections 0")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the connection gauge did not go back to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_each_operations_name_user_and_request_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tasknest"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        )
        .env("JWT_SECRET", SECRET)
        .env("TASKNEST_ADDR", format!("127.0.0.1:{port}"))
        .env("TASKNEST_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "the binary did not start");
    let alice = format!("alice-{}", uuid::Uuid::new_v4().simple());
    let token = tasknest::auth::JwtKeys::new(SECRET.as_bytes())
        .mint(&alice, "Alice", None, std::time::Duration::from_secs(600))
        .expect("mint");
    let answer: serde_json::Value = client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&token)
        .header("x-request-id", "req-over-http")
        .json(&json!({ "query": "query WhoAmI { me { id } }" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer["data"]["me"]["id"], alice);
    let mut ws = WsClient::connect(addr, "graphql-transport-ws").await;
    ws.init(json!({ "authorization": format!("Bearer {token}") }))
        .await;
    ws.send(json!({ "type": "subscribe", "id": "1", "payload": { "query": "query OverSocket { me { id } }", "operationName": "OverSocket" } }))
        .await;
    let _ = ws.next().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = child.kill();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("output");
    let logs = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let operation = |name: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "operation" && l["span"]["operation"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no operation line for {name} in\n{logs}"))
    };
    let http = operation("WhoAmI");
    assert_eq!(http["span"]["user"], alice);
    let request = http["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["name"] == "request")
        .expect("the request span");
    assert_eq!(request["request_id"], "req-over-http");
    let socket_span = lines
        .iter()
        .flat_map(|l| l["spans"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == "graphql" && s["operation"] == "OverSocket");
    let socket_span =
        socket_span.unwrap_or_else(|| panic!("no span for the socket operation in\n{logs}"));
    assert_eq!(socket_span["user"], alice);
    assert!(
        socket_span["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}
