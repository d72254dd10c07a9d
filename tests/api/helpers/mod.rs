//! Spawning the app, minting tokens, and talking GraphQL to it (HTTP here, graphql-ws in
//! `ws`, private Redis servers in `redis`).

mod proxy;
mod receiver;
mod redis;
mod sse;
mod template;
mod ws;

pub use proxy::TcpProxy;
pub use receiver::{Received, Receiver, Reply};
pub use redis::{RedisCluster, RedisServer, require_redis};
pub use sse::SseStream;
pub use ws::WsClient;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tasknest::auth::{Claims, JwtKeys};
use tasknest::{AppState, Application, Config};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The secret every test app signs with.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub database_url: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub keys: JwtKeys,
    /// What makes this test's user ids its own: tests share one Redis, where rate limits
    /// and presence are keyed by user.
    pub users: String,
    _db: Option<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A database made for one test, removed afterwards.
pub enum TestDb {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, name: String },
}

/// `TEST_DATABASE_URL` when it names PostgreSQL.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// For tests that only make sense on PostgreSQL: its URL, or `None` after printing a loud
/// SKIPPED line. Under `CI=true` a missing PostgreSQL fails the test instead, except in a
/// pass that explicitly chose SQLite (`TEST_DATABASE_URL=sqlite`), which CI follows with a
/// PostgreSQL pass.
pub fn require_postgres(test: &str) -> Option<String> {
    if let Some(url) = postgres_url() {
        return Some(url);
    }
    let sqlite_pass = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| u.starts_with("sqlite"));
    if std::env::var("CI").is_ok_and(|v| v == "true") && !sqlite_pass {
        panic!("{test} needs PostgreSQL: set TEST_DATABASE_URL=postgres://… (CI=true)");
    }
    eprintln!("SKIPPED: {test} needs PostgreSQL; set TEST_DATABASE_URL=postgres://…");
    None
}

/// The Node project in `tests/clients`, or `None` after a loud SKIPPED line when its
/// packages are not installed (under `CI=true` that fails the test instead).
pub fn require_client_project(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    if dir.join("node_modules").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs `npm ci --prefix tests/clients` (CI=true)");
    }
    eprintln!("SKIPPED: {test} needs `npm ci --prefix tests/clients` and Node.js");
    None
}

/// Runs `node <script>` in the client project `dir` with `env`, asserts that it succeeded
/// (showing its output otherwise), and returns its last stdout line as JSON.
pub async fn run_node(dir: &std::path::Path, script: &str, env: &[(&str, String)]) -> Value {
    let mut command = std::process::Command::new("node");
    command.arg(script).current_dir(dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::task::spawn_blocking(move || command.output().expect("node runs"))
        .await
        .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| panic!("{script} printed no JSON: {stdout}"))
}

impl TestDb {
    /// A fresh, migrated database on the configured backend, copied from the run's
    /// template (migrating every test's database from nothing would cost far more).
    pub async fn create() -> (Self, String) {
        match postgres_url() {
            Some(admin_url) => {
                let name = format!("tasknest_test_{}", Uuid::new_v4().simple());
                let template = template::postgres(&admin_url);
                let admin = sea_orm::Database::connect(&admin_url)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                use sea_orm::ConnectionTrait;
                admin
                    .execute_unprepared(&format!(
                        "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                    ))
                    .await
                    .expect("create test database");
                admin.close().await.ok();
                let url = template::database_url(&admin_url, &name);
                (Self::Postgres { admin_url, name }, url)
            }
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join("tasknest.db");
                std::fs::copy(template::sqlite(), &file).expect("copy the template database");
                let url = format!("sqlite://{}", file.display());
                (Self::Sqlite(dir), url)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async; a short-lived runtime on its own thread does the I/O.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    use sea_orm::ConnectionTrait;
                    if let Ok(admin) = sea_orm::Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
            })
            .join();
        }
    }
}

/// Starts the app on a fresh database and port 0.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app on a fresh database, with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let (db, url) = TestDb::create().await;
    start(url, Some(db), None, configure).await
}

/// Starts the app on `db`, reached at `url` (a proxy in front of it, say).
pub async fn spawn_app_on(db: TestDb, url: String, configure: impl FnOnce(&mut Config)) -> TestApp {
    start(url, Some(db), None, configure).await
}

/// Starts another instance on `other`'s database (several instances, one database).
pub async fn spawn_app_sharing(other: &TestApp, configure: impl FnOnce(&mut Config)) -> TestApp {
    start(
        other.database_url.clone(),
        None,
        Some(other.users.clone()),
        configure,
    )
    .await
}

async fn start(
    url: String,
    db: Option<TestDb>,
    users: Option<String>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    init_test_tracing();
    let mut config = Config::for_tests(url.clone(), SECRET).expect("the defaults parse");
    config.gap_check_interval = Duration::from_millis(200);
    // Tests drive far more writes than a person would; the limiter has its own tests.
    config.rate_burst = 1_000_000;
    config.rate_per_second = 1_000_000.0;
    configure(&mut config);
    let app = Application::build(config).await.expect("app builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let stopped = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        database_url: url,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client"),
        state,
        keys: JwtKeys::new(SECRET.as_bytes()),
        users: users.unwrap_or_else(|| Uuid::new_v4().simple().to_string()[..8].to_owned()),
        _db: db,
        shutdown: Some(tx),
        stopped: Some(stopped),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn init_test_tracing() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sqlx=warn")
            .with_test_writer()
            .try_init();
    }
}

impl TestApp {
    /// Stops the server as SIGTERM would, and waits until it has.
    pub async fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
    }

    /// Panics unless `/healthz` answers 200 (`after` says what the server just went through).
    pub async fn assert_up(&self, after: &str) {
        let health = self
            .client
            .get(format!("http://{}/healthz", self.addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("down after {after}: {e}"));
        assert_eq!(health.status(), 200, "up after {after}");
    }

    /// `/readyz`: its status and JSON body.
    pub async fn readiness(&self) -> (u16, Value) {
        let response = self
            .client
            .get(format!("http://{}/readyz", self.addr))
            .send()
            .await
            .expect("/readyz answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// A graphql-ws (`graphql-transport-ws`) connection, initialised with `token`.
    pub async fn ws(&self, token: &str) -> WsClient {
        let client = WsClient::connect(self.addr, "graphql-transport-ws").await;
        initialised(client, token).await
    }

    /// Like [`ws`](Self::ws), over a socket whose receive window stays a few KiB (a client
    /// that stops reading soon backs the server's writes up).
    pub async fn ws_with_small_window(&self, token: &str) -> WsClient {
        let client = WsClient::connect_with_small_window(self.addr, "graphql-transport-ws").await;
        initialised(client, token).await
    }

    /// Starts `query` as an event stream (POST, `Accept: text/event-stream`), optionally
    /// resuming after `last_event_id`.
    pub async fn sse(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
        last_event_id: Option<i64>,
    ) -> SseStream {
        let mut request = self
            .client
            .post(self.graphql_url())
            .header("accept", "text/event-stream")
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        SseStream::new(request.send().await.expect("request sent"))
    }

    /// `http://addr/graphql`.
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// This test's user called `name`: its id (`name-<this test's suffix>`).
    pub fn user(&self, name: &str) -> String {
        format!("{name}-{}", self.users)
    }

    /// The name of this test's user `id` (its id without the suffix).
    pub fn name_of(&self, id: &str) -> String {
        id.strip_suffix(&format!("-{}", self.users))
            .unwrap_or(id)
            .to_owned()
    }

    /// A valid token for this test's user `name`, displayed as the name with a capital
    /// letter.
    pub fn token(&self, name: &str) -> String {
        let mut display = name.to_owned();
        if let Some(first) = display.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        self.keys
            .mint(&self.user(name), &display, None, Duration::from_secs(3600))
            .expect("mint")
    }

    /// A token with custom claims, signed with the test secret.
    pub fn token_with(&self, claims: &Claims) -> String {
        self.keys.sign(claims).expect("sign")
    }

    /// Posts a GraphQL request; returns the whole JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(self.graphql_url())
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        response.json().await.expect("JSON response")
    }

    /// Like [`gql`](Self::gql), but panics on errors and returns `data`.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.gql(Some(token), query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}"
        );
        response["data"].clone()
    }

    /// Creates a project as `token`; returns its id.
    pub async fn create_project(&self, token: &str, name: &str) -> String {
        let data = self
            .ok(
                token,
                "mutation($name: String!) { createProject(input: {name: $name}) { id } }",
                json!({ "name": name }),
            )
            .await;
        data["createProject"]["id"].as_str().expect("id").to_owned()
    }

    /// Adds this test's user `user` (a name) to a project with `role`, as `token` (an owner).
    pub async fn add_member(&self, token: &str, project: &str, user: &str, role: &str) {
        self.ok(
            token,
            "mutation($p: ID!, $u: ID!, $r: Role!) { addMember(projectId: $p, userId: $u, role: $r) { role } }",
            json!({ "p": project, "u": self.user(user), "r": role }),
        )
        .await;
    }

    /// Creates a task; returns it with id, title, version, status.
    pub async fn create_task(&self, token: &str, project: &str, title: &str) -> Value {
        let data = self
            .ok(
                token,
                "mutation($in: CreateTaskInput!) { createTask(input: $in) { id title version status position priority description } }",
                json!({ "in": { "projectId": project, "title": title } }),
            )
            .await;
        data["createTask"].clone()
    }

    /// A project's events after `after` (up to 1,000).
    pub async fn events(&self, token: &str, project: &str, after: i64) -> Value {
        let data = self
            .ok(
                token,
                "query($p: ID!, $a: Int) { events(projectId: $p, after: $a, limit: 1000) { lastSeq hasMore events { seq kind taskId changes clientMutationId actor { id name } task { id title status version } } } }",
                json!({ "p": project, "a": after }),
            )
            .await;
        data["events"].clone()
    }
}

/// The first error's `extensions.code`, if any.
pub fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// The first error's `extensions.field`, if any.
pub fn error_field(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["field"].as_str()
}

/// The seqs of an event page.
pub fn seqs(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect()
}

/// A TaskNest server in its own process, so that a test can kill it without goodbyes.
pub struct ChildInstance {
    pub addr: SocketAddr,
    child: Option<std::process::Child>,
}

impl ChildInstance {
    /// Starts the binary on `database_url` and `redis_url`, and waits until it is healthy.
    pub async fn start(database_url: &str, redis_url: &str) -> Self {
        Self::start_with(database_url, redis_url, &[]).await
    }

    /// Like [`start`](Self::start), with more environment settings.
    pub async fn start_with(database_url: &str, redis_url: &str, env: &[(&str, &str)]) -> Self {
        let binary = std::process::Command::new(env!("CARGO_BIN_EXE_tasknest"));
        Self::start_command(binary, database_url, Some(redis_url), env).await
    }

    /// A single instance (no Redis) started from a shell whose soft open-file limit is
    /// `open_files`, as a login shell's 1,024 is.
    pub async fn start_with_file_limit(database_url: &str, open_files: u32) -> Self {
        let mut shell = std::process::Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -Sn {open_files} && exec \"$0\""),
            env!("CARGO_BIN_EXE_tasknest"),
        ]);
        Self::start_command(shell, database_url, None, &[]).await
    }

    async fn start_command(
        mut command: std::process::Command,
        database_url: &str,
        redis_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        match redis_url {
            Some(redis_url) => command.env("REDIS_URL", redis_url),
            None => command.env_remove("REDIS_URL"),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = command
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", SECRET)
            .env("TASKNEST_ADDR", format!("127.0.0.1:{port}"))
            .env("TASKNEST_PRESENCE_TIMEOUT", "1500ms")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("tasknest binary starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let instance = Self {
            addr,
            child: Some(child),
        };
        for _ in 0..200 {
            if reqwest::get(format!("http://{addr}/healthz")).await.is_ok() {
                return instance;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the child instance did not start");
    }

    /// Sends SIGTERM, as an orchestrator stopping the instance does.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "SIGTERM delivered");
        }
    }

    /// Waits (without blocking the runtime) until the process has exited; its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("a running child");
        for _ in 0..300 {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the child instance did not exit within 15 s");
    }

    /// SIGKILL: no graceful shutdown, no presence goodbyes.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildInstance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `client` after a `connection_init` with `token` that was acknowledged.
async fn initialised(mut client: WsClient, token: &str) -> WsClient {
    let ack = client
        .init(json!({ "authorization": format!("Bearer {token}") }))
        .await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    client
}
