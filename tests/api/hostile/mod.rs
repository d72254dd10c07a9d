//! Hostile input, as one table (in `cases.rs`): every bad request gets a clear, coded
//! error, the server stays up, and nothing in the database changes. And strings that look
//! like code round-trip byte for byte.

mod cases;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::*;
pub use cases::text;
use cases::{CREATE, GRAPHQL_RESPONSE, Send, cases};

/// Everything the database holds, as row counts and version sums: a write shows.
async fn fingerprint(app: &TestApp) -> Vec<i64> {
    let sql = "SELECT \
        CAST((SELECT COUNT(*) FROM users) AS BIGINT), \
        CAST((SELECT COUNT(*) FROM projects) AS BIGINT), \
        CAST((SELECT COUNT(*) FROM project_members) AS BIGINT), \
        CAST((SELECT COUNT(*) FROM tasks) AS BIGINT), \
        CAST((SELECT COALESCE(SUM(version), 0) FROM tasks) AS BIGINT), \
        CAST((SELECT COUNT(*) FROM events) AS BIGINT), \
        CAST((SELECT COALESCE(SUM(last_seq), 0) FROM projects) AS BIGINT)";
    let db = &app.state.db;
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("fingerprint query")
        .expect("a row");
    (0..7)
        .map(|i| row.try_get_by_index::<i64>(i).expect("a count"))
        .collect()
}

#[tokio::test]
async fn every_hostile_request_gets_a_coded_error_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let task = app.create_task(&alice, &project, "T").await;
    let task_id = task["id"].as_str().expect("id").to_owned();
    let before = fingerprint(&app).await;
    let cases = cases(&app, &project, &task_id);
    assert!(cases.len() >= 60, "{} cases", cases.len());

    let mut failures = Vec::new();
    for case in cases {
        match case.send {
            Send::Post {
                content_type,
                body,
                token,
            } => {
                let mut request = app
                    .client
                    .post(app.graphql_url())
                    .header("accept", GRAPHQL_RESPONSE)
                    .bearer_auth(token.unwrap_or_else(|| alice.clone()))
                    .body(body);
                if !content_type.is_empty() {
                    request = request.header("content-type", content_type);
                }
                let response = request.send().await.expect("the server answers");
                failures.extend(check_http(case.name, response, case.expect, case.code).await);
            }
            Send::Get(query) => {
                let response = app
                    .client
                    .get(format!("{}?{query}", app.graphql_url()))
                    .header("accept", GRAPHQL_RESPONSE)
                    .bearer_auth(&alice)
                    .send()
                    .await
                    .expect("the server answers");
                failures.extend(check_http(case.name, response, case.expect, case.code).await);
            }
            Send::Ws(frames) => {
                let mut client = WsClient::connect(app.addr, "graphql-transport-ws").await;
                for frame in frames {
                    client.send_raw(frame).await;
                }
                let close = loop {
                    match client.next_or_close().await {
                        Ok(message) => assert!(
                            message["type"] == "connection_ack",
                            "{}: unexpected {message}",
                            case.name
                        ),
                        Err(code) => break code,
                    }
                };
                if close != Some(case.expect) {
                    failures.push(format!("{}: closed with {close:?}", case.name));
                }
            }
        }
        app.assert_up(case.name).await;
        assert_eq!(
            fingerprint(&app).await,
            before,
            "{} changed data",
            case.name
        );
    }
}

/// What is wrong with an HTTP answer, if anything.
async fn check_http(
    name: &str,
    response: reqwest::Response,
    status: u16,
    code: Option<&str>,
) -> Option<String> {
    let got = response.status().as_u16();
    let body = response.text().await.expect("a body");
    let short = &body[..body.len().min(300)];
    if got != status {
        return Some(format!("{name}: status {got}, not {status}: {short}"));
    }
    let code = code?;
    let Ok(parsed) = serde_json::from_str::<Value>(&body) else {
        return Some(format!("{name}: not JSON: {short}"));
    };
    if error_code(&parsed) != Some(code) {
        return Some(format!("{name}: not {code}: {short}"));
    }
    let message = parsed["errors"][0]["message"].as_str().unwrap_or_default();
    if message.is_empty() {
        return Some(format!("{name}: no message"));
    }
    ["sqlx", "sea_orm", "SELECT", "panicked", "src/"]
        .iter()
        .find(|leak| body.contains(*leak))
        .map(|leak| format!("{name} leaks {leak}: {short}"))
}

#[tokio::test]
async fn titles_with_quotes_sql_html_and_unicode_round_trip_byte_for_byte() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let project = app.create_project(&alice, "P").await;
    let titles = [
        r#"He said "hi" and left \"escaped\""#,
        "Robert'); DROP TABLE tasks;--",
        "' OR '1'='1",
        "<script>alert('x')</script>",
        "<img src=x onerror=alert(1)>&amp;&lt;",
        "emoji 🧪 and RTL \u{202e}txet and zero\u{200b}width",
        "tab\tnew\nline and backslash \\",
        "％ wide percent and ${template} and {{moustache}}",
    ];
    for title in titles {
        let created = app
            .ok(
                &alice,
                CREATE,
                json!({ "in": { "projectId": project, "title": title } }),
            )
            .await;
        let id = created["createTask"]["id"].clone();
        let read = app
            .ok(
                &alice,
                "query($id: ID!) { task(id: $id) { title } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(read["task"]["title"], title, "read back");
        let logged = app.events(&alice, &project, 0).await;
        let last = logged["events"]
            .as_array()
            .expect("events")
            .last()
            .expect("an event")
            .clone();
        assert_eq!(last["task"]["title"], title, "in the log");
    }
}
