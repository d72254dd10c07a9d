//! Hostile input, as one table: every bad request gets a clear, coded error, the server
//! stays up, and nothing in the database changes. And strings that look like code
//! round-trip byte for byte.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::{now, sign, unsigned};
use crate::helpers::*;

const CREATE: &str = "mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }";
const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// How a case reaches the server.
enum Send {
    /// POST with this content type and body, as alice (or with the given token).
    Post {
        content_type: &'static str,
        body: Vec<u8>,
        token: Option<String>,
    },
    /// GET with this query string.
    Get(String),
    /// These WebSocket frames after the upgrade.
    Ws(Vec<Message>),
}

/// One row of the table.
struct Case {
    name: &'static str,
    send: Send,
    /// HTTP status, or the WebSocket close code.
    expect: u16,
    /// The first error's `extensions.code` (HTTP cases).
    code: Option<&'static str>,
}

fn post(name: &'static str, body: Value, expect: u16, code: &'static str) -> Case {
    Case {
        name,
        send: Send::Post {
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            token: None,
        },
        expect,
        code: Some(code),
    }
}

fn raw(name: &'static str, content_type: &'static str, body: Vec<u8>, expect: u16) -> Case {
    Case {
        name,
        send: Send::Post {
            content_type,
            body,
            token: None,
        },
        expect,
        code: None,
    }
}

/// A createTask that a bad token must not be allowed to run.
fn with_token(name: &'static str, token: String, project: &str) -> Case {
    let body =
        json!({ "query": CREATE, "variables": { "in": { "projectId": project, "title": "x" } } });
    Case {
        name,
        send: Send::Post {
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            token: Some(token),
        },
        expect: 200,
        code: Some("UNAUTHENTICATED"),
    }
}

fn ws(name: &'static str, frames: Vec<Message>, close: u16) -> Case {
    Case {
        name,
        send: Send::Ws(frames),
        expect: close,
        code: None,
    }
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn create(project: &str, input: Value) -> Value {
    let mut input = input;
    input["projectId"] = json!(project);
    json!({ "query": CREATE, "variables": { "in": input } })
}

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

fn cases(app: &TestApp, project: &str, task_id: &str) -> Vec<Case> {
    let valid = json!({ "sub": "alice", "name": "Alice", "exp": now() + 600 });
    let deep = format!(
        "{{ me {}{}{} }}",
        "{ projects { members { user ".repeat(6),
        "{ id }",
        " } } }".repeat(6)
    );
    let aliases: String = (0..3000).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let mut fragment_bomb = String::from("query { me { ...F0 } } fragment F0 on User { id }");
    for i in 1..40 {
        fragment_bomb = format!(
            "{fragment_bomb} fragment F{i} on User {{ ...F{} ...F{} }}",
            i - 1,
            i - 1
        );
    }
    fragment_bomb = fragment_bomb.replacen("...F0 }", "...F39 }", 1);
    let huge_list: Vec<i32> = (0..50_000).collect();
    let long_id = "9".repeat(10_000);
    let init = || {
        text(
            json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", app.token("alice")) } }),
        )
    };
    let sub = |id: &str| {
        text(
            json!({ "type": "subscribe", "id": id, "payload": { "query": "subscription($p: ID!) { projectEvents(projectId: $p) { seq } }", "variables": { "p": project } } }),
        )
    };
    vec![
        // The body and its media type.
        raw(
            "malformed JSON",
            "application/json",
            b"{\"query\": ".to_vec(),
            400,
        ),
        raw(
            "invalid UTF-8",
            "application/json",
            vec![0xff, 0xfe, 0x22, 0x00],
            400,
        ),
        Case {
            code: Some("BAD_USER_INPUT"),
            ..raw(
                "a 10 MiB body",
                "application/json",
                vec![b' '; 10 * 1024 * 1024],
                413,
            )
        },
        raw(
            "text/plain",
            "text/plain",
            b"{\"query\":\"{ me { id } }\"}".to_vec(),
            415,
        ),
        raw(
            "no content type",
            "",
            b"{\"query\":\"{ me { id } }\"}".to_vec(),
            415,
        ),
        raw(
            "a form",
            "application/x-www-form-urlencoded",
            b"query=%7B+me+%7B+id+%7D+%7D".to_vec(),
            415,
        ),
        raw(
            "multipart",
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
            415,
        ),
        raw("XML", "application/xml", b"<query/>".to_vec(), 415),
        post(
            "a JSON string",
            json!("mutation { createProject }"),
            400,
            "BAD_USER_INPUT",
        ),
        post("a JSON number", json!(42), 400, "BAD_USER_INPUT"),
        post("JSON null", Value::Null, 400, "BAD_USER_INPUT"),
        post(
            "a batch while batching is off",
            json!([create(project, json!({ "title": "b" }))]),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "query not a string",
            json!({ "query": 5 }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "query null",
            json!({ "query": null }),
            400,
            "BAD_USER_INPUT",
        ),
        post("an empty object", json!({}), 400, "BAD_USER_INPUT"),
        post(
            "variables an array",
            json!({ "query": CREATE, "variables": [1] }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "variables a string",
            json!({ "query": CREATE, "variables": "{}" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "operationName not a string",
            json!({ "query": CREATE, "operationName": 7 }),
            400,
            "BAD_USER_INPUT",
        ),
        // The document.
        post(
            "an empty query",
            json!({ "query": "" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a syntax error",
            json!({ "query": "mutation { createTask(" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "nesting past the depth limit",
            json!({ "query": deep }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an alias bomb",
            json!({ "query": format!("{{ {aliases} }}") }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a fragment bomb",
            json!({ "query": fragment_bomb }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a fragment cycle",
            json!({ "query": "query { me { ...A } } fragment A on User { ...B } fragment B on User { ...A }" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a fragment on an unknown type",
            json!({ "query": "query { me { ...A } } fragment A on Nope { id }" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an unknown field",
            json!({ "query": "mutation { dropAllTables }" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an unknown operation name",
            json!({ "query": CREATE, "operationName": "Nope" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "two operations and no name",
            json!({ "query": "query A { me { id } } query B { me { id } }" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a duplicate operation name",
            json!({ "query": "query A { me { id } } query A { me { name } }", "operationName": "A" }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a subscription over HTTP",
            json!({ "query": format!("subscription {{ projectEvents(projectId: \"{project}\") {{ seq }} }}") }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a directive that does not exist",
            json!({ "query": "{ me @nope { id } }" }),
            400,
            "BAD_USER_INPUT",
        ),
        // Variables.
        post(
            "a variable of the wrong type",
            json!({ "query": CREATE, "variables": { "in": { "projectId": project, "title": 5 } } }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a missing required variable",
            json!({ "query": CREATE }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a missing required input field",
            json!({ "query": CREATE, "variables": { "in": { "projectId": project } } }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an unknown input field",
            json!({ "query": CREATE, "variables": { "in": { "projectId": project, "title": "t", "owner": "root" } } }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an unknown enum value",
            create(project, json!({ "title": "t", "status": "DONEZO" })),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a float for an Int",
            create(project, json!({ "title": "t", "priority": 1.5 })),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "an Int past 32 bits",
            create(project, json!({ "title": "t", "priority": 1_i64 << 40 })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a huge list where a string goes",
            create(project, json!({ "title": huge_list })),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a malformed DateTime",
            create(project, json!({ "title": "t", "dueAt": "yesterday" })),
            200,
            "BAD_USER_INPUT",
        ),
        // Values the resolvers refuse.
        post(
            "an empty title",
            create(project, json!({ "title": "" })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a blank title",
            create(project, json!({ "title": " \t\n" })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a 100 KB title",
            create(project, json!({ "title": "x".repeat(100_000) })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a priority out of range",
            create(project, json!({ "title": "t", "priority": -99 })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a string where a Float goes",
            create(project, json!({ "title": "t", "position": "1e999" })),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a malformed project id",
            create("not-a-uuid", json!({ "title": "t" })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a 10,000-character id",
            create(&long_id, json!({ "title": "t" })),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "someone else's project id",
            create(
                "00000000-0000-4000-8000-000000000000",
                json!({ "title": "t" }),
            ),
            200,
            "NOT_FOUND",
        ),
        post(
            "an update with a future baseVersion",
            json!({ "query": "mutation($id: ID!) { updateTask(id: $id, baseVersion: 999, patch: {title: \"x\"}) { __typename } }", "variables": { "id": task_id } }),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a page past the list limit",
            json!({ "query": "query($p: ID!) { project(id: $p) { tasks(first: 100000) { edges { node { id } } } } }", "variables": { "p": project } }),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a negative page size",
            json!({ "query": "query($p: ID!) { project(id: $p) { tasks(first: -1) { edges { node { id } } } } }", "variables": { "p": project } }),
            200,
            "BAD_USER_INPUT",
        ),
        post(
            "a malformed cursor",
            json!({ "query": "query($p: ID!) { project(id: $p) { tasks(after: \"' OR 1=1 --\") { edges { node { id } } } } }", "variables": { "p": project } }),
            200,
            "BAD_USER_INPUT",
        ),
        // Persisted queries.
        post(
            "a persisted query with the wrong hash",
            json!({ "query": "{ me { id } }", "extensions": { "persistedQuery": { "version": 1, "sha256Hash": "0".repeat(64) } } }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a persisted query of another version",
            json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": "ab" } } }),
            400,
            "BAD_USER_INPUT",
        ),
        // GET.
        Case {
            name: "a mutation over GET",
            send: Send::Get(format!(
                "query={}",
                urlencode("mutation { createProject(input: {name: \"g\"}) { id } }")
            )),
            expect: 405,
            code: Some("BAD_USER_INPUT"),
        },
        Case {
            name: "a malformed query string",
            send: Send::Get("query=%ZZ%".into()),
            expect: 400,
            code: Some("BAD_USER_INPUT"),
        },
        Case {
            name: "GET variables that are not JSON",
            send: Send::Get("query=%7Bme%7Bid%7D%7D&variables=%7Bnope".into()),
            expect: 400,
            code: Some("BAD_USER_INPUT"),
        },
        // Tokens.
        with_token(
            "an expired token",
            sign(
                Algorithm::HS256,
                &json!({ "sub": "alice", "exp": now() - 30 }),
            ),
            project,
        ),
        with_token(
            "a token not yet valid",
            sign(
                Algorithm::HS256,
                &json!({ "sub": "alice", "exp": now() + 600, "nbf": now() + 300 }),
            ),
            project,
        ),
        with_token(
            "a token without exp",
            sign(Algorithm::HS256, &json!({ "sub": "alice" })),
            project,
        ),
        with_token(
            "a token without sub",
            sign(Algorithm::HS256, &json!({ "exp": now() + 600 })),
            project,
        ),
        with_token(
            "a token signed with another key",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &valid,
                &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-0123"),
            )
            .expect("sign"),
            project,
        ),
        with_token(
            "alg none",
            unsigned(&json!({ "alg": "none", "typ": "JWT" }), &valid),
            project,
        ),
        with_token(
            "alg switched to RS256",
            {
                let hs = sign(Algorithm::HS256, &valid);
                let rest = hs.split_once('.').expect("jwt").1.to_owned();
                format!(
                    "{}.{rest}",
                    URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#)
                )
            },
            project,
        ),
        with_token("alg HS512", sign(Algorithm::HS512, &valid), project),
        with_token("garbage", "garbage".into(), project),
        with_token("three garbage parts", "a.b.c".into(), project),
        with_token(
            "a payload that is not JSON",
            format!(
                "{}.{}.sig",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
                URL_SAFE_NO_PAD.encode("not json")
            ),
            project,
        ),
        // graphql-ws frames.
        ws("subscribe before connection_init", vec![sub("1")], 4401),
        ws(
            "a duplicate subscription id",
            vec![init(), sub("1"), sub("1")],
            4409,
        ),
        ws(
            "an unknown message type",
            vec![init(), text(json!({ "type": "launch_missiles" }))],
            4400,
        ),
        ws(
            "a binary frame",
            vec![init(), Message::Binary(vec![1, 2, 3].into())],
            4400,
        ),
        ws(
            "a frame that is not JSON",
            vec![Message::Text("{not json".into())],
            4400,
        ),
        ws("a second connection_init", vec![init(), init()], 4429),
        ws(
            "connection_init with a bad token",
            vec![text(
                json!({ "type": "connection_init", "payload": { "authorization": "Bearer garbage" } }),
            )],
            4403,
        ),
        ws(
            "subscribe without a query",
            vec![
                init(),
                text(json!({ "type": "subscribe", "id": "1", "payload": {} })),
            ],
            4400,
        ),
        ws(
            "subscribe without an id",
            vec![
                init(),
                text(json!({ "type": "subscribe", "payload": { "query": "{ me { id } }" } })),
            ],
            4400,
        ),
    ]
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
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
        let health = app
            .client
            .get(format!("http://{}/healthz", app.addr))
            .send()
            .await
            .expect("still up");
        assert_eq!(health.status(), 200, "up after {}", case.name);
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

/// Near-GraphQL: documents made of the language's own tokens, so that the generator reaches
/// the parser's, validator's and resolvers' corners rather than failing at the first byte.
fn document() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let token = prop::sample::select(vec![
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ":",
        "...",
        "@skip(if: true)",
        "$v",
        "query",
        "mutation",
        "subscription",
        "fragment F on User",
        "on",
        "me",
        "id",
        "name",
        "projects",
        "tasks",
        "first: 3",
        "first: -1",
        "createTask",
        "input: {title: \"t\"}",
        "projectId: \"x\"",
        "updateTask",
        "deleteTask(id: \"1\")",
        "events",
        "\"",
        "1",
        "null",
        "__typename",
        "__schema { types { name } }",
        "a: me",
        "F",
        "...F",
        "#",
        "\\u0000",
        ",",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A POST body: a request object whose parts are each sometimes wrong, or any JSON at all.
fn body() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let request = (
        prop_oneof![document().prop_map(Value::from), json_value()],
        prop::option::of(json_value()),
        prop::option::of(prop_oneof![".{0,10}".prop_map(Value::from), json_value()]),
        prop::option::of(json_value()),
    )
        .prop_map(|(query, variables, name, extensions)| {
            let mut body = json!({ "query": query });
            if let Some(v) = variables {
                body["variables"] = v;
            }
            if let Some(n) = name {
                body["operationName"] = n;
            }
            if let Some(e) = extensions {
                body["extensions"] = e;
            }
            body
        });
    prop_oneof![4 => request, 1 => json_value()]
}

#[test]
fn generated_requests_get_coded_answers_and_never_an_internal_error() {
    use proptest::test_runner::{Config, TestRunner};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(spawn_app());
    let alice = app.token("alice");
    runtime.block_on(app.create_project(&alice, "P"));
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&body(), |body| {
        let (status, answer) = runtime.block_on(async {
            let response = app
                .client
                .post(app.graphql_url())
                .header("accept", GRAPHQL_RESPONSE)
                .bearer_auth(&alice)
                .json(&body)
                .send()
                .await
                .expect("the server answers");
            let status = response.status().as_u16();
            (status, response.text().await.expect("a body"))
        });
        proptest::prop_assert!(
            [200, 400].contains(&status),
            "{status} for {body}: {answer}"
        );
        let answer: Value = serde_json::from_str(&answer).expect("a JSON answer");
        for error in answer["errors"].as_array().into_iter().flatten() {
            let code = error["extensions"]["code"].as_str();
            proptest::prop_assert!(code.is_some(), "an uncoded error for {body}: {answer}");
            proptest::prop_assert!(code != Some("INTERNAL"), "for {body}: {answer}");
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(async {
        let health = app
            .client
            .get(format!("http://{}/healthz", app.addr))
            .send()
            .await
            .expect("still up");
        assert_eq!(health.status(), 200);
    });
}

/// A graphql-ws message: a known type with generated fields, or any JSON.
fn frame() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let kind = prop::sample::select(vec![
        "connection_init",
        "subscribe",
        "complete",
        "ping",
        "pong",
        "start",
        "stop",
        "connection_terminate",
        "next",
        "error",
    ]);
    let message = (
        kind,
        prop::option::of(prop_oneof![".{0,6}".prop_map(Value::from), json_value()]),
        prop::option::of(prop_oneof![
            document().prop_map(|q| json!({ "query": q })),
            json_value()
        ]),
    )
        .prop_map(|(kind, id, payload)| {
            let mut message = json!({ "type": kind });
            if let Some(id) = id {
                message["id"] = id;
            }
            if let Some(payload) = payload {
                message["payload"] = payload;
            }
            message
        });
    prop_oneof![4 => message, 1 => json_value()]
}

#[test]
fn generated_graphql_ws_frames_get_answers_or_protocol_close_codes() {
    use proptest::test_runner::{Config, TestRunner};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(spawn_app());
    let alice = app.token("alice");
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(frame(), 1..6);
    let result = runner.run(&strategy, |frames| {
        let outcome = runtime.block_on(async {
            let mut client = WsClient::connect(app.addr, "graphql-transport-ws").await;
            client
                .init(json!({ "authorization": format!("Bearer {alice}") }))
                .await;
            for frame in &frames {
                client.send_raw(text(frame.clone())).await;
            }
            // Whatever comes within a short while: answers, or a close.
            let mut close = None;
            let _ = tokio::time::timeout(std::time::Duration::from_millis(150), async {
                loop {
                    match client.next_or_close().await {
                        Ok(_) => {}
                        Err(code) => {
                            close = Some(code);
                            break;
                        }
                    }
                }
            })
            .await;
            close
        });
        if let Some(code) = outcome {
            let allowed = [
                None,
                Some(1000),
                Some(4400),
                Some(4401),
                Some(4409),
                Some(4429),
            ];
            proptest::prop_assert!(allowed.contains(&code), "{code:?} after {frames:?}");
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(async {
        let health = app
            .client
            .get(format!("http://{}/healthz", app.addr))
            .send()
            .await
            .expect("still up");
        assert_eq!(health.status(), 200);
    });
}
