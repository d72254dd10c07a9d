//! `tasknest-bench`: starts TaskNest servers as child processes (so it can read their CPU and
//! memory from /proc), connects graphql-ws subscribers spread over them, sends mutations at a
//! set rate, and prints latency from sending a mutation to receiving its event (one clock,
//! this process), the fan-out spread, deliveries per second, server CPU per delivery and
//! server memory per connection. `--idle` only holds connections and reports memory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use tasknest::auth::JwtKeys;

mod raw;

const SECRET: &str = "benchmark-secret-benchmark-secret-0123456789";

#[derive(Debug, Parser)]
#[command(about = "Subscription latency and memory benchmark for TaskNest")]
struct Args {
    /// TaskNest instances to start (they share the database and Redis).
    #[arg(long, default_value_t = 2)]
    servers: usize,
    /// graphql-ws connections, each holding one `projectEvents` subscription.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Mutations per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How long mutations are sent.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Database the servers share: a fresh database is created in this PostgreSQL cluster
    /// (or an SQLite file when the URL starts with sqlite).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Redis the servers share (needed for more than one server).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Only open the connections and report memory; send no mutations.
    #[arg(long)]
    idle: bool,
    /// The server binary (default: `tasknest` next to this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("tasknest"),
    };
    let (database_url, cleanup) = fresh_database(&args.database_url).await?;
    let result = run(&args, &bin, &database_url).await;
    if let Some(cleanup) = cleanup {
        cleanup.await;
    }
    result
}

async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<()> {
    let redis = (args.servers > 1 || !args.idle).then_some(args.redis_url.as_str());
    let mut servers = Vec::new();
    for _ in 0..args.servers {
        servers.push(spawn_server(bin, database_url, redis)?);
        // One at a time: the first migrates.
        wait_healthy(servers.last().context("server")?.port).await?;
    }
    let http = reqwest::Client::new();
    let keys = JwtKeys::new(SECRET.as_bytes());
    let owner = keys.mint(
        "bench-owner",
        "Bench Owner",
        None,
        Duration::from_secs(3600),
    )?;
    let base = format!("http://127.0.0.1:{}/graphql", servers[0].port);
    let project = gql(
        &http,
        &base,
        &owner,
        "mutation { createProject(input: {name: \"bench\"}) { id } }",
        json!({}),
    )
    .await?["createProject"]["id"]
        .as_str()
        .context("project id")?
        .to_owned();
    let task = gql(
        &http,
        &base,
        &owner,
        "mutation($p: ID!) { createTask(input: {projectId: $p, title: \"bench\"}) { id } }",
        json!({ "p": project }),
    )
    .await?["createTask"]["id"]
        .as_str()
        .context("task id")?
        .to_owned();

    let rss_before: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    let per_server = args.subscribers.div_ceil(servers.len());
    println!(
        "servers={} subscribers={} ({} per server) rate={}/s duration={:?} database={} redis={}",
        servers.len(),
        args.subscribers,
        per_server,
        args.rate,
        args.duration,
        if database_url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
        redis.unwrap_or("none"),
    );

    // Connect everyone, spread round-robin, at most 200 handshakes at a time.
    let expected_events = if args.idle {
        0
    } else {
        (args.rate * args.duration.as_secs_f64()).round() as usize
    };
    let clock = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new(
        (0..expected_events + 1)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let first_seen: Arc<Vec<AtomicU64>> = Arc::new(
        (0..expected_events + 1)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
    );
    let last_seen: Arc<Vec<AtomicU64>> = Arc::new(
        (0..expected_events + 1)
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let warmed = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let connect_started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(200));
    let mut readers = Vec::new();
    let mut all_samples = Vec::new();
    let token = keys.mint(
        "bench-owner",
        "Bench Owner",
        None,
        Duration::from_secs(3600),
    )?;
    for i in 0..args.subscribers {
        let port = servers[i % servers.len()].port;
        let permit = semaphore.clone().acquire_owned().await?;
        let socket = connect(port, &token, &project)
            .await
            .with_context(|| format!("subscriber {i}"))?;
        drop(permit);
        let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(expected_events)));
        all_samples.push(samples.clone());
        let ctx = Reader {
            samples,
            sent: sent.clone(),
            first_seen: first_seen.clone(),
            last_seen: last_seen.clone(),
            warmed: warmed.clone(),
            delivered: delivered.clone(),
            clock,
            expected: expected_events,
        };
        readers.push(tokio::spawn(ctx.run(socket)));
    }
    println!(
        "connected {} subscribers in {:.1?}",
        args.subscribers,
        connect_started.elapsed()
    );

    // Warm-up: one event that every subscriber must see before timing starts.
    gql(
        &http,
        &base,
        &owner,
        UPDATE,
        json!({ "id": task, "p": -1.0, "c": "w" }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while warmed.load(Ordering::Relaxed) < args.subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} subscribers live after 60 s",
                warmed.load(Ordering::Relaxed),
                args.subscribers
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    for (i, (before, after)) in rss_before.iter().zip(&rss_after).enumerate() {
        let connections =
            args.subscribers / servers.len() + usize::from(i < args.subscribers % servers.len());
        println!(
            "server {i}: RSS {:.1} MiB before connections, {:.1} MiB with {connections} subscribed connections: {:.1} KiB per connection",
            *before as f64 / 1024.0,
            *after as f64 / 1024.0,
            (after.saturating_sub(*before)) as f64 / connections.max(1) as f64
        );
    }
    if args.idle {
        return Ok(());
    }

    // Measure: open-loop mutations at the set rate.
    let cpu_before: Vec<u64> = servers.iter().map(|s| cpu_ticks(s.pid())).collect();
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut in_flight = Vec::new();
    for n in 1..=expected_events {
        ticker.tick().await;
        let url = format!(
            "http://127.0.0.1:{}/graphql",
            servers[n % servers.len()].port
        );
        let (http, owner, task, sent, errors) = (
            http.clone(),
            owner.clone(),
            task.clone(),
            sent.clone(),
            errors.clone(),
        );
        in_flight.push(tokio::spawn(async move {
            sent[n].store(clock.elapsed().as_nanos() as u64, Ordering::Relaxed);
            let vars = json!({ "id": task, "p": n as f64, "c": format!("m{n}") });
            if gql(&http, &url, &owner, UPDATE, vars).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in in_flight {
        let _ = handle.await;
    }
    let want = expected_events * args.subscribers;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu_after: Vec<u64> = servers.iter().map(|s| cpu_ticks(s.pid())).collect();
    for reader in readers {
        reader.abort();
    }
    // Latency per delivery: receive time (kept as the per-event spread) minus send time.
    let got = delivered.load(Ordering::Relaxed);
    let mut spreads = Vec::new();
    for n in 1..=expected_events {
        let first = first_seen[n].load(Ordering::Relaxed);
        let last = last_seen[n].load(Ordering::Relaxed);
        if first != u64::MAX {
            spreads.push(last.saturating_sub(first));
        }
    }
    let mut all: Vec<u64> = Vec::with_capacity(want);
    for samples in &all_samples {
        if let Ok(samples) = samples.lock() {
            all.extend_from_slice(&samples);
        }
    }
    all.sort_unstable();
    spreads.sort_unstable();
    let cpu_ticks_used: u64 = cpu_before.iter().zip(&cpu_after).map(|(b, a)| a - b).sum();
    println!(
        "mutations sent={} failed={} deliveries={}/{} in {:.1?}",
        expected_events,
        errors.load(Ordering::Relaxed),
        got,
        want,
        elapsed
    );
    println!(
        "latency mutation→event (all deliveries): p50={} p95={} p99={} max={}",
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 95.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default())
    );
    println!(
        "fan-out spread (first→last subscriber per event): p50={} p99={} max={}",
        ms(percentile(&spreads, 50.0)),
        ms(percentile(&spreads, 99.0)),
        ms(spreads.last().copied().unwrap_or_default())
    );
    println!(
        "delivered events/s: {:.0}",
        got as f64 / elapsed.as_secs_f64()
    );
    println!(
        "server CPU: {:.2} s total, {:.1} µs per delivery",
        cpu_ticks_used as f64 / 100.0,
        cpu_ticks_used as f64 * 10_000.0 / got.max(1) as f64
    );
    Ok(())
}

const UPDATE: &str = "mutation($id: ID!, $p: Float!, $c: String) { updateTask(id: $id, patch: {position: $p}, clientMutationId: $c) { __typename } }";
const SUBSCRIPTION: &str =
    "subscription($p: ID!) { projectEvents(projectId: $p) { seq clientMutationId } }";

type Socket = raw::RawSocket;

async fn connect(port: u16, token: &str, project: &str) -> anyhow::Result<Socket> {
    raw::RawSocket::open(port, token, SUBSCRIPTION, json!({ "p": project })).await
}

struct Reader {
    samples: Arc<std::sync::Mutex<Vec<u64>>>,
    sent: Arc<Vec<AtomicU64>>,
    first_seen: Arc<Vec<AtomicU64>>,
    last_seen: Arc<Vec<AtomicU64>>,
    warmed: Arc<AtomicUsize>,
    delivered: Arc<AtomicUsize>,
    clock: Instant,
    expected: usize,
}

impl Reader {
    async fn run(self, mut socket: Socket) {
        while let Ok(text) = socket.next_text().await {
            let now = self.clock.elapsed().as_nanos() as u64;
            // A cheap scan instead of a JSON parse: the bench shares the CPU with the servers.
            let Some(at) = text.find("\"clientMutationId\":\"") else {
                continue;
            };
            let rest = &text[at + 20..];
            if rest.starts_with('w') {
                self.warmed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(n) = rest
                .strip_prefix('m')
                .and_then(|r| r.split('"').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if n > self.expected {
                continue;
            }
            self.first_seen[n].fetch_min(now, Ordering::Relaxed);
            self.last_seen[n].fetch_max(now, Ordering::Relaxed);
            if let Ok(mut samples) = self.samples.lock() {
                samples.push(now.saturating_sub(self.sent[n].load(Ordering::Relaxed)));
            }
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn gql(
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

fn spawn_server(bin: &PathBuf, database_url: &str, redis: Option<&str>) -> anyhow::Result<Server> {
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
        .env_remove("REDIS_URL")
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

type Cleanup = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// A fresh database for the run, and how to remove it.
async fn fresh_database(url: &str) -> anyhow::Result<(String, Option<Cleanup>)> {
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
fn cpu_ticks(pid: u32) -> u64 {
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
    get(11) + get(12)
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}
