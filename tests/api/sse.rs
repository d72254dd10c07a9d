//! GraphQL over Server-Sent Events (graphql-sse, distinct connections): queries, mutations
//! and subscriptions as event streams, `id:` = seq, and resume with `Last-Event-ID`.

use serde_json::json;

use crate::helpers::*;
use crate::subscriptions::{EVENTS, rename};

#[tokio::test]
async fn a_query_streams_one_result_then_complete() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let mut stream = app
        .sse(Some(&alice), "{ me { id } }", json!({}), None)
        .await;
    assert!(
        stream.content_type.starts_with("text/event-stream"),
        "{}",
        stream.content_type
    );
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    let next = stream.next().await.expect("next");
    assert_eq!(next.event, "next");
    assert_eq!(next.data["data"]["me"]["id"], app.user("alice"));
    assert_eq!(stream.next().await.expect("complete").event, "complete");
    assert_eq!(stream.next().await, None, "the stream ends");
}

#[tokio::test]
async fn a_client_that_also_accepts_json_gets_json_for_a_query() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    // What urql sends for queries and mutations.
    let response = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&alice)
        .header(
            "accept",
            "application/graphql-response+json, application/json, text/event-stream, multipart/mixed",
        )
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/graphql-response+json"),
        "{content_type}"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"]["me"]["id"], app.user("alice"));
}

#[tokio::test]
async fn a_mutation_over_sse_answers_once() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let mut stream = app
        .sse(
            Some(&alice),
            "mutation { createProject(input: {name: \"over SSE\"}) { name } }",
            json!({}),
            None,
        )
        .await;
    let next = stream.next().await.expect("next");
    assert_eq!(next.data["data"]["createProject"]["name"], "over SSE");
    assert_eq!(stream.next().await.expect("complete").event, "complete");
}

#[tokio::test]
async fn a_subscription_streams_events_with_their_seq_and_resumes_after_last_event_id() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let mut stream = app
        .sse(Some(&alice), EVENTS, json!({ "p": project }), None)
        .await;
    // Give the live subscription a moment to join its room.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 0..3 {
        rename(&app, &alice, &task, &format!("r{i}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = stream.next().await.expect("an event");
        assert_eq!(event.event, "next");
        let seq = event.data["data"]["projectEvents"]["seq"].as_i64().unwrap();
        assert_eq!(event.id, Some(seq.to_string()), "id: is the seq");
        seen.push(seq);
    }
    assert_eq!(seen, vec![2, 3, 4]);
    drop(stream);

    // Changes while disconnected, then a reconnect from the last id seen.
    for i in 3..6 {
        rename(&app, &alice, &task, &format!("r{i}")).await;
    }
    let mut resumed = app
        .sse(Some(&alice), EVENTS, json!({ "p": project }), Some(4))
        .await;
    rename(&app, &alice, &task, "live").await;
    let mut after = Vec::new();
    for _ in 0..4 {
        let event = resumed.next().await.expect("an event");
        after.push(event.data["data"]["projectEvents"]["seq"].as_i64().unwrap());
    }
    assert_eq!(after, vec![5, 6, 7, 8], "nothing missed, nothing twice");
    assert_eq!(resumed.next_within(300).await, None);

    // An EventSource reconnects with GET and the same header.
    let response = app
        .client
        .get(app.graphql_url())
        .query(&[
            ("query", EVENTS),
            ("variables", &json!({ "p": project }).to_string()),
        ])
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .header("last-event-id", "7")
        .send()
        .await
        .unwrap();
    let mut by_get = SseStream::new(response);
    let event = by_get.next().await.expect("an event");
    assert_eq!(event.id.as_deref(), Some("8"));
}

#[tokio::test]
async fn a_cursor_older_than_the_log_is_cursor_expired() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    app.create_task(&alice, &project, "T").await;
    // Older than a retention of 1 ms for sure, whatever the clock's granularity.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tasknest::events::retention::prune(&app.state.db, std::time::Duration::from_millis(1))
        .await
        .unwrap();
    let mut stream = app
        .sse(Some(&alice), EVENTS, json!({ "p": project }), Some(0))
        .await;
    let next = stream.next().await.expect("next");
    assert_eq!(
        next.data["errors"][0]["extensions"]["code"], "CURSOR_EXPIRED",
        "{:?}",
        next.data
    );
    assert_eq!(stream.next().await.expect("complete").event, "complete");
}

#[tokio::test]
async fn non_members_and_revoked_tokens_get_coded_errors_on_the_stream() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let mut stranger = app
        .sse(
            Some(&app.token("mallory")),
            EVENTS,
            json!({ "p": project }),
            None,
        )
        .await;
    let refused = stranger.next().await.expect("next");
    assert_eq!(refused.data["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(stranger.next().await.expect("complete").event, "complete");

    let created = app
        .ok(
            &alice,
            "mutation { createApiToken(input: {name: \"feed\", scopes: [READ]}) { secret token { id } } }",
            json!({}),
        )
        .await;
    let secret = created["createApiToken"]["secret"].as_str().unwrap();
    let id = created["createApiToken"]["token"]["id"].as_str().unwrap();
    let mut feed = app
        .sse(Some(secret), EVENTS, json!({ "p": project }), None)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.ok(
        &alice,
        "mutation($id: ID!) { revokeApiToken(id: $id) }",
        json!({ "id": id }),
    )
    .await;
    let ended = feed.next().await.expect("next");
    assert_eq!(
        ended.data["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{:?}",
        ended.data
    );
    assert_eq!(feed.next().await.expect("complete").event, "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_sse_client_runs_a_query_a_mutation_and_a_subscription_in_both_modes() {
    let Some(dir) = require_client_project("the graphql-sse client test") else {
        return;
    };
    let app = spawn_app().await;
    let alice = app.token("alice");
    for mode in ["distinct", "single"] {
        let project = app.create_project(&alice, mode).await;
        let task = app.create_task(&alice, &project, "T").await;
        let env = [
            ("TASKNEST_HTTP", app.graphql_url()),
            ("TOKEN", alice.clone()),
            ("PROJECT", project),
            ("TASK", task["id"].as_str().unwrap().to_owned()),
            ("MODE", mode.to_owned()),
        ];
        let result = run_node(&dir, "graphql-sse.mjs", &env).await;
        assert_eq!(result["me"], app.user("alice"), "{mode}");
        assert_eq!(result["renamed"], "renamed over SSE", "{mode}");
        assert_eq!(result["seqs"], json!([3, 4, 5]), "{mode}");
        assert_eq!(result["titles"], json!(["a", "b", "c"]), "{mode}");
    }
    // Every stream of the single connection mode was given back.
    assert!(
        app.state
            .metrics
            .render()
            .contains("tasknest_active_subscriptions 0")
    );
}

/// The README's `curl -N` examples, with this test's server, token and project.
fn readme_curl_examples(addr: std::net::SocketAddr, project: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut examples = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("curl -N") {
            continue;
        }
        let mut command = line.to_owned();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().expect("a continued line"));
        }
        examples.push(
            command
                .replace("http://127.0.0.1:8000", &format!("http://{addr}"))
                .replace("<project id>", project),
        );
    }
    examples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_examples_stream_a_mutations_event() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let examples = readme_curl_examples(app.addr, &project);
    assert_eq!(examples.len(), 2, "the SSE and the multipart example");
    for (example, expected) in examples.iter().zip(["event: next", "--graphql"]) {
        let command = example.clone();
        let token = alice.clone();
        // curl runs for 3 s; the mutation lands meanwhile.
        let run = tokio::task::spawn_blocking(move || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{command} --max-time 3"))
                .env("TOKEN", token)
                .output()
                .expect("curl runs")
        });
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        rename(&app, &alice, &task, &format!("seen by curl, {expected}")).await;
        let output = run.await.expect("joined");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(expected), "{example}\n{stdout}");
        assert!(stdout.contains("\"projectEvents\""), "{example}\n{stdout}");
    }
}

#[tokio::test]
async fn an_open_stream_counts_as_one_of_the_users_connections() {
    let app = spawn_app_with(|c| c.max_connections_per_user = 1).await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let open = app
        .sse(Some(&alice), EVENTS, json!({ "p": project }), None)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut second = app
        .sse(Some(&alice), EVENTS, json!({ "p": project }), None)
        .await;
    let refused = second.next().await.expect("next");
    assert_eq!(
        refused.data["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{:?}",
        refused.data
    );
    assert_eq!(second.next().await.expect("complete").event, "complete");
    // A WebSocket is a connection too.
    let mut ws = WsClient::connect(app.addr, "graphql-transport-ws").await;
    ws.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {alice}") } }))
        .await;
    assert_eq!(ws.close_code().await, Some(4429));
    drop(open);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut again = app
        .sse(Some(&alice), "{ me { id } }", json!({}), None)
        .await;
    assert_eq!(
        again.next().await.expect("next").data["data"]["me"]["id"],
        app.user("alice")
    );
}

#[tokio::test]
async fn a_reserved_stream_carries_many_operations_and_only_its_user_may_use_it() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let reserved = app
        .client
        .put(app.graphql_url())
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(reserved.status(), 201);
    let token = reserved.text().await.unwrap();
    let open = || {
        app.client
            .get(format!("{}?token={token}", app.graphql_url()))
            .bearer_auth(&alice)
            .header("accept", "text/event-stream")
            .send()
    };
    let mut stream = SseStream::new(open().await.unwrap());
    assert_eq!(
        open().await.unwrap().status(),
        409,
        "one stream per reservation"
    );

    let post = |who: String, id: &'static str, query: &'static str| {
        app.client
            .post(app.graphql_url())
            .bearer_auth(who)
            .header("x-graphql-event-stream-token", token.clone())
            .json(&json!({ "query": query, "variables": { "p": project }, "extensions": { "operationId": id } }))
            .send()
    };
    let mallory = post(app.token("mallory"), "x", "{ me { id } }")
        .await
        .unwrap();
    assert_eq!(mallory.status(), 404, "another user cannot use the stream");
    assert_eq!(
        post(alice.clone(), "events", EVENTS)
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        post(alice.clone(), "me", "{ me { id } }")
            .await
            .unwrap()
            .status(),
        202
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    rename(&app, &alice, &task, "on the single stream").await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = stream.next().await.expect("an event");
        seen.push((
            event.event.clone(),
            event.data["id"].as_str().unwrap().to_owned(),
        ));
        if event.data["id"] == "events" && event.event == "next" {
            assert_eq!(event.data["payload"]["data"]["projectEvents"]["seq"], 2);
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("complete".to_owned(), "me".to_owned()),
            ("next".to_owned(), "events".to_owned()),
            ("next".to_owned(), "me".to_owned()),
        ]
    );
    let stopped = app
        .client
        .delete(format!("{}?operationId=events", app.graphql_url()))
        .bearer_auth(&alice)
        .header("x-graphql-event-stream-token", token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    rename(&app, &alice, &task, "after the stop").await;
    assert_eq!(stream.next_within(500).await, None, "nothing after DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_sse_client_resumes_a_cut_stream_by_last_event_id_missing_nothing() {
    let Some(dir) = require_client_project("the graphql-sse resume test") else {
        return;
    };
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    // The client reaches the server through a proxy the test cuts mid-stream.
    let proxy = TcpProxy::start(app.addr).await;
    let mut child = tokio::process::Command::new("node")
        .arg("graphql-sse-resume.mjs")
        .current_dir(&dir)
        .env(
            "TASKNEST_HTTP",
            format!("http://127.0.0.1:{}/graphql", proxy.port),
        )
        .env("TOKEN", &alice)
        .env("PROJECT", &project)
        .env("AFTER", "1")
        .env("COUNT", "200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    for i in 0..200 {
        if i == 100 {
            // Let the client connect and get some way (node may still be starting: the
            // writes alone can be done first), then drop its connection; it comes back.
            proxy.wait_for_a_link().await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            proxy.cut();
            proxy.restore().await;
        }
        rename(&app, &alice, &task, &format!("r{i}")).await;
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        use tokio::io::AsyncReadExt as _;
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .await
            .expect("read");
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .await
            .expect("read");
        (stdout, stderr, child.wait().await.expect("exit"))
    })
    .await
    .expect("the client finishes");
    let (stdout, stderr, status) = output;
    assert!(status.success(), "{stdout}\n{stderr}");
    let result: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a result line")).expect("JSON");
    let seqs: Vec<i64> = result["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|s| s.as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (2..=201).collect::<Vec<_>>(),
        "nothing missed or repeated"
    );
    assert!(
        result["connects"].as_i64().expect("connects") >= 2,
        "it reconnected: {result}"
    );
}

/// A live subscription that does not select `seq`.
const WITHOUT_SEQ: &str =
    "subscription($p: ID!) { projectEvents(projectId: $p) { kind task { title } } }";

#[tokio::test]
async fn sse_multipart_and_websocket_subscribers_share_one_execution_and_sse_ids_need_no_seq() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let bob = app.token("bob");
    let project = app.create_project(&alice, "P").await;
    app.add_member(&alice, &project, "bob", "VIEWER").await;
    let task = app.create_task(&alice, &project, "T").await;
    let vars = json!({ "p": project });
    let mut first = app.sse(Some(&alice), WITHOUT_SEQ, vars.clone(), None).await;
    let mut second = app.sse(Some(&bob), WITHOUT_SEQ, vars.clone(), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        app.state.metrics.shared_executions.get(),
        1,
        "two event streams, one execution"
    );
    let mut multipart = app
        .client
        .post(app.graphql_url())
        .bearer_auth(&bob)
        .header("accept", crate::multipart::ACCEPT)
        .json(&json!({ "query": WITHOUT_SEQ, "variables": vars }))
        .send()
        .await
        .unwrap();
    let mut ws = app.ws(&alice).await;
    ws.subscribe("1", WITHOUT_SEQ, vars.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.state.metrics.shared_executions.get(),
        1,
        "four subscribers on three transports, one execution"
    );

    rename(&app, &alice, &task, "shared").await;
    let seq = app
        .ok(
            &alice,
            "query($p: ID!) { project(id: $p) { lastSeq } }",
            json!({ "p": project }),
        )
        .await["project"]["lastSeq"]
        .as_i64()
        .unwrap();
    for stream in [&mut first, &mut second] {
        let event = stream.next().await.expect("an event");
        assert_eq!(
            event.id,
            Some(seq.to_string()),
            "id: is the seq, unselected"
        );
        assert_eq!(
            event.data["data"]["projectEvents"]["task"]["title"],
            "shared"
        );
        assert!(event.data["data"]["projectEvents"].get("seq").is_none());
    }
    let mut raw = String::new();
    let part = crate::multipart::next_payload_part(&mut multipart, &mut raw).await;
    assert_eq!(
        part["payload"]["data"]["projectEvents"]["task"]["title"],
        "shared"
    );
    assert_eq!(ws.next_event("1").await["task"]["title"], "shared");

    // A resumed stream runs on its own (it starts in the past) and is numbered the same way.
    let mut resumed = app.sse(Some(&bob), WITHOUT_SEQ, vars, Some(seq - 1)).await;
    let replayed = resumed.next().await.expect("the replayed event");
    assert_eq!(replayed.id, Some(seq.to_string()));
    assert_eq!(
        replayed.data["data"]["projectEvents"]["kind"],
        "TASK_UPDATED"
    );
    assert_eq!(app.state.metrics.shared_executions.get(), 1);

    // When the last member leaves, the shared execution ends.
    drop((first, second, multipart, resumed));
    ws.close().await;
    // No event is needed for it to notice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.state.metrics.shared_executions.get() != 0 {
        assert!(std::time::Instant::now() < deadline, "the group ends");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
