//! Generated input (proptest) against the running server: request bodies and graphql-ws
//! frames built from GraphQL's own tokens and arbitrary JSON must always get a coded answer
//! or a protocol close code, never an `INTERNAL` error, and the server stays up.

use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::hostile::text;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// A runner for `cases` cases that does not write regression files into the tree.
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// `base` with each present field set.
fn with_fields<const N: usize>(mut base: Value, fields: [(&str, Option<Value>); N]) -> Value {
    for (key, value) in fields {
        if let Some(value) = value {
            base[key] = value;
        }
    }
    base
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
            with_fields(
                json!({ "query": query }),
                [
                    ("variables", variables),
                    ("operationName", name),
                    ("extensions", extensions),
                ],
            )
        });
    prop_oneof![4 => request, 1 => json_value()]
}

#[test]
fn generated_requests_get_coded_answers_and_never_an_internal_error() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(spawn_app());
    let alice = app.token("alice");
    runtime.block_on(app.create_project(&alice, "P"));
    let mut runner = runner(400);
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
    runtime.block_on(app.assert_up("the generated cases"));
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
            with_fields(json!({ "type": kind }), [("id", id), ("payload", payload)])
        });
    prop_oneof![4 => message, 1 => json_value()]
}

#[test]
fn generated_graphql_ws_frames_get_answers_or_protocol_close_codes() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app = runtime.block_on(spawn_app());
    let alice = app.token("alice");
    let mut runner = runner(150);
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
    runtime.block_on(app.assert_up("the generated cases"));
}
