//! The servers under test: child processes on a fresh database, read from /proc.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::SECRET;

/// A TaskNest child process.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts a GraphQL request; its `data`, or an error when it has errors.
pub async fn gql(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let response: Value = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?;
    if let Some(errors) = response.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    Ok(response["data"].clone())
}

/// Starts one server on a free port with the bench's settings and `env` on top.
fn spawn_server_with(
    bin: &PathBuf,
    database_url: &str,
    redis: Option<&str>,
    env: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(bin);
    command
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", SECRET)
        .env("TASKNEST_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        // One bench user sends every mutation: lift the per-user limit.
        .env("TASKNEST_RATE_PER_SECOND", "1000000")
        .env("TASKNEST_RATE_BURST", "1000000")
        // … and the per-user socket limit: every bench subscriber is the same user.
        .env("TASKNEST_MAX_CONNECTIONS_PER_USER", "100000")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(redis) = redis {
        command.env("REDIS_URL", redis);
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Server { child, port })
}

async fn wait_healthy(port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..200 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server on port {port} did not become healthy")
}

pub type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A fresh database for the run, and how to remove it.
pub async fn fresh_database(url: &str) -> anyhow::Result<(String, Option<Cleanup>)> {
    use sea_orm::ConnectionTrait;
    if url.starts_with("sqlite") {
        let path = std::env::temp_dir().join(format!(
            "tasknest-bench-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        return Ok((format!("sqlite://{}", path.display()), None));
    }
    let name = format!("tasknest_bench_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(url).await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let mut fresh = url::Url::parse(url)?;
    fresh.set_path(&name);
    let cleanup: Cleanup = Box::pin(async move {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    });
    Ok((fresh.to_string(), Some(cleanup)))
}

/// utime + stime of a process, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let (user, kernel) = cpu_split(pid);
    user + kernel
}

/// CPU time used so far by process `pid`, in clock ticks (1/100 s): (user, kernel).
pub fn cpu_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    (get(11), get(12))
}

/// The (user, kernel) ticks used between two [`cpu_split`] readings.
pub fn cpu_used(before: (u64, u64), after: (u64, u64)) -> (u64, u64) {
    (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    )
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

/// Starts `count` servers one at a time (the first migrates), each answering before the
/// next starts.
pub async fn spawn_servers(
    bin: &PathBuf,
    database_url: &str,
    redis: Option<&str>,
    env: &[(&str, &str)],
    count: usize,
) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        let server = spawn_server_with(bin, database_url, redis, env)?;
        wait_healthy(server.port).await?;
        servers.push(server);
    }
    Ok(servers)
}

/// Each server's `/graphql` URL.
pub fn graphql_urls(servers: &[Server]) -> Vec<String> {
    servers
        .iter()
        .map(|s| format!("http://127.0.0.1:{}/graphql", s.port))
        .collect()
}

/// A new project named `name` with one task: (project id, task id, task version).
pub async fn project_with_task(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
) -> anyhow::Result<(String, String, i64)> {
    let project = gql(
        http,
        url,
        token,
        "mutation($n: String!) { createProject(input: {name: $n}) { id } }",
        json!({ "n": name }),
    )
    .await?["createProject"]["id"]
        .as_str()
        .context("project id")?
        .to_owned();
    let task = gql(
        http,
        url,
        token,
        "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"t\"}) { id version } }",
        json!({ "p": project }),
    )
    .await?;
    let id = task["createTask"]["id"]
        .as_str()
        .context("task id")?
        .to_owned();
    let version = task["createTask"]["version"]
        .as_i64()
        .context("task version")?;
    Ok((project, id, version))
}

/// A session token for the bench's project owner, valid for an hour.
pub fn owner_token() -> anyhow::Result<String> {
    tasknest::auth::JwtKeys::new(SECRET.as_bytes()).mint(
        "bench-owner",
        "Bench Owner",
        None,
        Duration::from_secs(3600),
    )
}
