//! The clients frontend teams use, for real: `tests/clients/run.mjs` runs Apollo Client
//! (GraphQLWsLink, persisted queries, an optimistic mutation, a reconnect) and urql against
//! a server started here. Needs `npm ci --prefix tests/clients` (`.ci/run` does it).

use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apollo_client_and_urql_run_queries_mutations_subscriptions_and_reconnects() {
    let Some(dir) = require_client_project("the client tests") else {
        return;
    };
    let app = spawn_app_with(|c| {
        if let Ok(url) = std::env::var("TEST_REDIS_URL") {
            c.redis_url = Some(url);
        }
    })
    .await;
    let token = app.token("alice");
    // Expires while the script's subscription runs: the server closes the socket with
    // 4403 and the client must come back with a fresh token.
    let short = app
        .keys
        .mint(&app.user("alice"), "Alice", None, Duration::from_secs(3))
        .expect("mint");
    let addr = app.addr;
    let user_id = app.user("alice");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("run.mjs")
            .current_dir(&dir)
            .env("TASKNEST_HTTP", format!("http://{addr}/graphql"))
            .env("TASKNEST_WS", format!("ws://{addr}/graphql"))
            .env("USER_ID", user_id)
            .env("TOKEN", token)
            .env("SHORT_TOKEN", short)
            .output()
            .expect("node runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client script failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(
        stdout.contains("apollo:") && stdout.contains("urql:"),
        "{stdout}"
    );

    // The persisted queries really went by hash over GET (Apollo and urql both).
    let metrics = app
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let hashed_gets: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("tasknest_http_requests_total{")
                && l.contains("method=\"GET\"")
                && l.contains("path=\"/graphql\"")
                && l.contains("status=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        hashed_gets >= 2.0,
        "persisted queries over GET: {hashed_gets}"
    );
}
