//! The graphql-ws protocol layer: both subprotocols, auth at `connection_init`, and the close
//! codes clients rely on.

use std::time::Duration;

use serde_json::json;
use tasknest::auth::Claims;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;
use crate::subscriptions::{EVENTS, rename};

#[tokio::test]
async fn a_missing_or_bad_token_closes_the_socket_with_4403() {
    let app = spawn_app().await;
    for payload in [
        json!({}),
        json!({ "authorization": "Bearer nope" }),
        json!({ "token": app.keys.mint("a", "A", None, Duration::from_secs(60)).unwrap() + "x" }),
    ] {
        let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
        ws.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(ws.close_code().await, Some(4403), "{payload}");
    }
}

#[tokio::test]
async fn the_token_may_come_under_any_of_the_documented_keys() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for payload in [
        json!({ "authorization": format!("Bearer {token}") }),
        json!({ "Authorization": format!("Bearer {token}") }),
        json!({ "token": token }),
        json!({ "authorization": token }),
    ] {
        let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
        assert_eq!(
            ws.init(payload.clone()).await["type"],
            "connection_ack",
            "{payload}"
        );
    }
}

#[tokio::test]
async fn protocol_violations_get_their_close_codes() {
    let app = spawn_app().await;
    let token = app.token("alice");

    let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
    ws.subscribe("1", "{ me { id } }", json!({})).await;
    assert_eq!(ws.close_code().await, Some(4401), "subscribe before init");

    let mut ws = app.ws(&token).await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": token } }))
        .await;
    assert_eq!(ws.close_code().await, Some(4429), "a second init");

    let project = app.create_project(&token, "P").await;
    let mut ws = app.ws(&token).await;
    ws.subscribe("dup", EVENTS, json!({ "p": project })).await;
    ws.subscribe("dup", EVENTS, json!({ "p": project })).await;
    assert_eq!(ws.close_code().await, Some(4409), "a duplicate id");

    let mut ws = app.ws(&token).await;
    ws.send(json!({ "type": "what_is_this" })).await;
    assert_eq!(ws.close_code().await, Some(4400), "an unknown type");

    let mut ws = app.ws(&token).await;
    ws.send_raw(Message::Text("{not json".into())).await;
    assert_eq!(ws.close_code().await, Some(4400), "malformed JSON");

    let mut ws = app.ws(&token).await;
    ws.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(ws.close_code().await, Some(4400), "a binary frame");
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4408() {
    let app = spawn_app_with(|c| c.ws_init_timeout = Duration::from_millis(300)).await;
    let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
    assert_eq!(ws.close_code().await, Some(4408));
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4403() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let token = app.token_with(&Claims {
        sub: app.user("alice"),
        name: Some("Alice".into()),
        avatar: None,
        exp: now + 2,
        nbf: None,
        iat: Some(now),
    });
    let mut ws = app.ws(&token).await;
    assert_eq!(ws.close_code().await, Some(4403));
}

#[tokio::test]
async fn ping_gets_pong_and_the_server_pings_idle_clients() {
    let app = spawn_app_with(|c| c.ws_keepalive = Duration::from_millis(200)).await;
    let mut ws = app.ws(&app.token("alice")).await;
    ws.send(json!({ "type": "ping", "payload": { "n": 1 } }))
        .await;
    assert_eq!(
        ws.next().await,
        Some(json!({ "type": "pong", "payload": { "n": 1 } }))
    );
    assert_eq!(ws.next_raw_type().await.as_deref(), Some("ping"));
}

#[tokio::test]
async fn a_websocket_ping_frame_is_answered_with_its_pong() {
    // A protocol-level ping (RFC 6455 §5.5.2), which proxies and browsers send to check a
    // connection, unlike graphql-ws's JSON ping: the server answers it even with nothing
    // else to send, and carries on.
    let app = spawn_app().await;
    let mut ws = app.ws(&app.token("alice")).await;
    ws.send_raw(Message::Ping(b"are you there"[..].into()))
        .await;
    assert_eq!(
        ws.next_frame().await,
        Message::Pong(b"are you there"[..].into())
    );
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.next().await, Some(json!({ "type": "pong" })));
}

#[tokio::test]
async fn a_bad_upgrade_request_is_refused_with_400_and_the_reason() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let mut socket = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "GET /graphql HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, close\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
        app.addr
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(15),
        socket.read_to_string(&mut response),
    )
    .await
    .expect("an answer")
    .expect("read");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.ends_with("`Sec-WebSocket-Key` header missing"),
        "{response}"
    );
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_streams_events_too() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut ws = WsClient::connect(app.addr, "graphql-ws").await;
    let ack = ws
        .init(json!({ "authorization": format!("Bearer {alice}") }))
        .await;
    assert_eq!(ack["type"], "connection_ack");
    ws.send(json!({ "type": "start", "id": "1", "payload": { "query": EVENTS, "variables": { "p": project, "a": 0 } } }))
        .await;
    let first = ws.next_event("1").await;
    assert_eq!(first["seq"], 1);
    rename(&app, &alice, &task, "legacy").await;
    let second = ws.next_event("1").await;
    assert_eq!(second["task"]["title"], "legacy");
    ws.send(json!({ "type": "stop", "id": "1" })).await;
    rename(&app, &alice, &task, "after stop").await;
    assert_eq!(
        ws.next_event_or_nothing().await,
        None,
        "stop ends the stream"
    );
}

#[tokio::test]
async fn a_connection_may_run_only_so_many_operations_at_once() {
    let app = spawn_app_with(|c| c.max_subscriptions = 2).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    ws.subscribe("1", EVENTS, json!({ "p": project })).await;
    ws.subscribe("2", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    ws.subscribe("3", EVENTS, json!({ "p": project })).await;
    let refused = ws.next().await.expect("a message");
    assert_eq!(refused["id"], "3");
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    // Completing one frees a slot.
    ws.send(json!({ "type": "complete", "id": "1" })).await;
    ws.subscribe("4", EVENTS, json!({ "p": project, "a": 0 }))
        .await;
    app.create_task(&alice, &project, "T").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            ws.next().await.expect("an event")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    ids.sort();
    assert_eq!(ids, vec!["2", "4"]);
}

#[tokio::test]
async fn an_id_is_free_again_as_soon_as_its_complete_arrives() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let mut ws = app.ws(&alice).await;
    for round in 0..20 {
        ws.subscribe("q", "{ me { name } }", json!({})).await;
        let result = ws.next().await.expect("a result");
        assert_eq!(result["type"], "next", "round {round}: {result}");
        assert_eq!(result["payload"]["data"]["me"]["name"], "Alice");
        let complete = ws.next().await.expect("complete");
        assert_eq!(
            complete,
            json!({ "type": "complete", "id": "q" }),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn every_subscription_on_a_connection_gets_each_event_once_in_order() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut ws = app.ws(&alice).await;
    let ids = ["a", "b", "c", "d", "e"];
    for id in ids {
        ws.subscribe(id, EVENTS, json!({ "p": project })).await;
    }
    // Live subscriptions start from now: one warm-up event each must arrive first.
    let mut warmed = std::collections::HashSet::new();
    let mut titles = std::collections::HashMap::<String, Vec<String>>::new();
    let mut n = 0;
    while warmed.len() < ids.len() {
        n += 1;
        app.create_task(&alice, &project, &format!("warm {n}"))
            .await;
        while let Some(event) = ws.next_event_or_nothing().await {
            warmed.insert(event["id"].as_str().expect("id").to_owned());
        }
    }
    for i in 0..10 {
        app.create_task(&alice, &project, &format!("t{i}")).await;
    }
    while titles.values().map(Vec::len).sum::<usize>() < ids.len() * 10 {
        let event = ws.next().await.expect("an event");
        let title = event["payload"]["data"]["projectEvents"]["task"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if title.starts_with('t') {
            titles
                .entry(event["id"].as_str().expect("id").to_owned())
                .or_default()
                .push(title);
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    for id in ids {
        assert_eq!(titles[id], expected, "subscription {id}");
    }
}

#[tokio::test]
async fn a_user_over_the_connection_limit_is_closed_with_4429_and_others_are_not() {
    let app = spawn_app_with(|c| c.max_connections_per_user = 2).await;
    let alice = app.token("alice");
    let first = app.ws(&alice).await;
    let _second = app.ws(&alice).await;
    let mut third = WsClient::connect(app.addr, "graphql-transport-ws").await;
    third
        .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {alice}") } }))
        .await;
    assert_eq!(third.close_code().await, Some(4429));
    // Another user is not affected, and a closed connection frees its slot.
    let _bob = app.ws(&app.token("bob")).await;
    first.close().await;
    let mut freed = None;
    for _ in 0..50 {
        let mut again = WsClient::connect(app.addr, "graphql-transport-ws").await;
        again
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {alice}") } }))
            .await;
        if again
            .next_or_close()
            .await
            .is_ok_and(|answer| answer["type"] == "connection_ack")
        {
            freed = Some(again);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed.is_some(), "the closed connection's slot was freed");
}
