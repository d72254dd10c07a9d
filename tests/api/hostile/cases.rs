//! The table of hostile requests: what each sends and what it must get back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::auth::{now, sign, unsigned};
use crate::helpers::*;

pub const CREATE: &str = "mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }";
pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// How a case reaches the server.
pub enum Send {
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
pub struct Case {
    pub name: &'static str,
    pub send: Send,
    /// HTTP status, or the WebSocket close code.
    pub expect: u16,
    /// The first error's `extensions.code` (HTTP cases).
    pub code: Option<&'static str>,
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

pub fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn create(project: &str, input: Value) -> Value {
    let mut input = input;
    input["projectId"] = json!(project);
    json!({ "query": CREATE, "variables": { "in": input } })
}

pub fn cases(app: &TestApp, project: &str, task_id: &str) -> Vec<Case> {
    let valid = json!({ "sub": app.user("alice"), "name": "Alice", "exp": now() + 600 });
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
            "40 aliases: cheap, but over the alias limit",
            json!({ "query": format!("{{ {} }}", (0..40).map(|i| format!("a{i}: me {{ id }}")).collect::<Vec<_>>().join(" ")) }),
            400,
            "BAD_USER_INPUT",
        ),
        post(
            "a directive bomb",
            json!({ "query": format!("{{ me {} {{ id }} }}", "@include(if: true) ".repeat(50)) }),
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
