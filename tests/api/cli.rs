//! The binary: configuration errors, `token`, `schema`, and migrations racing on PostgreSQL.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

fn tasknest() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasknest"));
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_SECRET",
        "TASKNEST_ADDR",
        "TASKNEST_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    for (var, value) in [
        ("TASKNEST_ADDR", "localhost"),
        ("DATABASE_URL", "mysql://db/x"),
        ("JWT_SECRET", "short"),
        ("REDIS_URL", "http://nope"),
        ("TASKNEST_LOG_FORMAT", "xml"),
    ] {
        let output = tasknest().env(var, value).output().expect("binary runs");
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        let flag = match var {
            "TASKNEST_LOG_FORMAT" => "log-format",
            _ => var,
        };
        assert!(lines[0].contains(flag), "{var}: {stderr}");
    }
}

#[tokio::test]
async fn a_minted_token_is_accepted_by_a_server_with_the_same_secret() {
    let output = tasknest()
        .args(["token", "--sub", "zoe", "--name", "Zoe", "--ttl", "1h"])
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).expect("utf8");
    let app = spawn_app().await;
    let data = app.ok(token.trim(), "{ me { id name } }", json!({})).await;
    assert_eq!(data["me"], json!({ "id": "zoe", "name": "Zoe" }));
}

#[test]
fn the_schema_command_prints_the_generated_sdl() {
    let output = tasknest().arg("schema").output().expect("binary runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).expect("utf8").trim(),
        tasknest::graphql::sdl().trim()
    );
}

#[tokio::test]
async fn instances_migrating_at_once_on_postgres_do_not_race() {
    let Some(_) = require_postgres("instances_migrating_at_once_on_postgres_do_not_race") else {
        return;
    };
    let (_db, url) = TestDb::create().await;
    let children: Vec<_> = (0..4)
        .map(|_| {
            tasknest()
                .arg("migrate")
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                .spawn()
                .expect("spawn")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait");
        assert!(status.success(), "a concurrent migrate failed");
    }
}

#[tokio::test]
async fn a_server_started_with_a_low_open_file_limit_still_holds_more_connections() {
    // This process holds the clients' ends.
    tasknest::http::raise_open_files_limit();
    let app = spawn_app().await;
    let server = ChildInstance::start_with_file_limit(&app.database_url, 256).await;
    // Each waits for a request, so the server keeps its socket open; at 256 files it could
    // accept only about 240 and then every accept, the next request's too, fails (EMFILE).
    let mut idle = Vec::new();
    for n in 0..400 {
        let connect = tokio::net::TcpStream::connect(server.addr);
        let socket = tokio::time::timeout(Duration::from_secs(10), connect).await;
        let socket = socket.unwrap_or_else(|_| panic!("connection {n} was not accepted"));
        idle.push(socket.expect("connect"));
    }
    let health = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!("http://{}/healthz", server.addr)),
    )
    .await
    .expect("answered with 400 connections open");
    assert_eq!(health.expect("request").status(), 200);
}
