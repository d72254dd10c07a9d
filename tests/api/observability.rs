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
    assert!(value("tasknest_db_statements_total") > 0.0);
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
