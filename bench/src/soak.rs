//! The soak: many users, each holding a live `projectEvents` subscription and making a mix
//! of queries and mutations with think time, for a long while. Reports errors (which must be
//! 0, counting every event a subscriber missed or saw twice), throughput, latency
//! percentiles per kind of operation, and server memory once warm and at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tasknest::auth::JwtKeys;

use crate::server::{Server, gql, graphql_urls, rss_kib, spawn_servers};
use crate::stats::summary;
use crate::{Args, SECRET, raw};

const SUBSCRIPTION: &str =
    "subscription($p: ID!, $a: Int) { projectEvents(projectId: $p, after: $a) { seq } }";
const TASKS: &str = "query($p: ID!) { project(id: $p) { name tasks(first: 20) { edges { node { id title status assignee { name } } } } } }";
const TASK: &str = "query($id: ID!) { task(id: $id) { id title version updatedBy { name } } }";
const EVENTS: &str =
    "query($p: ID!) { events(projectId: $p, limit: 20) { lastSeq events { seq kind } } }";
const PRESENCE: &str = "query($p: ID!) { presence(projectId: $p) { user { id } } }";
const RENAME: &str =
    "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { __typename } }";
const CREATE: &str =
    "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) { id } }";

/// Users per project.
const PER_PROJECT: usize = 20;

/// One simulated user.
struct User {
    token: String,
    project: String,
    task: String,
    url: String,
}

/// What the users measured.
#[derive(Default)]
struct Tally {
    queries: std::sync::Mutex<Vec<u64>>,
    mutations: std::sync::Mutex<Vec<u64>>,
    errors: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(what);
        }
    }
}

/// Runs the soak with `args.users` users for `args.duration`.
pub async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<()> {
    let redis = (args.servers > 1).then_some(args.redis_url.as_str());
    let servers: Vec<Server> = spawn_servers(bin, database_url, redis, &[], args.servers).await?;
    let urls = graphql_urls(&servers);
    let http = reqwest::Client::new();
    let keys = JwtKeys::new(SECRET.as_bytes());
    let hour = Duration::from_secs(3600);
    let owner = keys.mint("soak-owner", "Soak Owner", None, hour)?;
    println!(
        "soak: servers={} users={} duration={:?} redis={}",
        servers.len(),
        args.users,
        args.duration,
        redis.unwrap_or("none")
    );

    // Projects of PER_PROJECT members each; every user owns one task to edit.
    let mut users = Vec::with_capacity(args.users);
    let mut projects = Vec::new();
    for i in 0..args.users {
        if i % PER_PROJECT == 0 {
            let data = gql(
                &http,
                &urls[0],
                &owner,
                "mutation($n: String!) { createProject(input: {name: $n}) { id } }",
                json!({ "n": format!("soak {}", i / PER_PROJECT) }),
            )
            .await?;
            projects.push(
                data["createProject"]["id"]
                    .as_str()
                    .context("id")?
                    .to_owned(),
            );
        }
        let project = projects.last().context("project")?.clone();
        let token = keys.mint(&format!("user{i}"), &format!("User {i}"), None, hour)?;
        gql(&http, &urls[0], &token, "{ me { id } }", json!({})).await?;
        gql(
            &http,
            &urls[0],
            &owner,
            "mutation($p: ID!, $u: ID!) { addMember(projectId: $p, userId: $u, role: EDITOR) { role } }",
            json!({ "p": project, "u": format!("user{i}") }),
        )
        .await?;
        let task = gql(
            &http,
            &urls[0],
            &token,
            CREATE,
            json!({ "p": project, "t": format!("task of user {i}") }),
        )
        .await?["createTask"]["id"]
            .as_str()
            .context("task id")?
            .to_owned();
        users.push(User {
            token,
            project,
            task,
            url: urls[i % urls.len()].clone(),
        });
    }

    // Each user's subscription, from the project's current end of log.
    let tally = Arc::new(Tally::default());
    let mut readers = Vec::new();
    let mut received = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let start = gql(
            &http,
            &user.url,
            &user.token,
            EVENTS,
            json!({ "p": user.project }),
        )
        .await?["events"]["lastSeq"]
            .as_i64()
            .context("lastSeq")?;
        let port = servers[i % servers.len()].port;
        let socket = raw::RawSocket::open(
            port,
            &user.token,
            SUBSCRIPTION,
            json!({ "p": user.project, "a": start }),
        )
        .await?;
        let last = Arc::new(AtomicI64::new(start));
        received.push((user.project.clone(), last.clone()));
        readers.push(tokio::spawn(read_events(socket, last, tally.clone(), i)));
    }

    // Warm-up, then memory; then the measured run.
    let warm_up = (args.duration / 3).max(Duration::from_secs(10));
    let load = |until: Instant, measure: bool| {
        let tally = tally.clone();
        let http = http.clone();
        users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let (http, tally) = (http.clone(), tally.clone());
                let (url, token, project, task) = (
                    user.url.clone(),
                    user.token.clone(),
                    user.project.clone(),
                    user.task.clone(),
                );
                tokio::spawn(async move {
                    let mut k = 0usize;
                    // Spread the users' clocks so they do not all fire together.
                    tokio::time::sleep(Duration::from_millis((i * 37 % 1000) as u64)).await;
                    while Instant::now() < until {
                        k += 1;
                        let (query, vars, is_mutation) = match (i + k) % 10 {
                            0 | 1 => (
                                RENAME,
                                json!({ "id": task, "t": format!("u{i}-{k}") }),
                                true,
                            ),
                            2 if k.is_multiple_of(5) => (
                                CREATE,
                                json!({ "p": project, "t": format!("new {i}-{k}") }),
                                true,
                            ),
                            2 | 3 => (TASK, json!({ "id": task }), false),
                            4 => (EVENTS, json!({ "p": project }), false),
                            5 => (PRESENCE, json!({ "p": project }), false),
                            _ => (TASKS, json!({ "p": project }), false),
                        };
                        let started = Instant::now();
                        let result = gql(&http, &url, &token, query, vars).await;
                        let took = started.elapsed().as_nanos() as u64;
                        match result {
                            Ok(_) if measure => {
                                let samples = if is_mutation {
                                    &tally.mutations
                                } else {
                                    &tally.queries
                                };
                                if let Ok(mut samples) = samples.lock() {
                                    samples.push(took);
                                }
                            }
                            Ok(_) => {}
                            Err(err) => tally.error(format!("user{i}: {err}")),
                        }
                        // Think time: about two operations a second per user.
                        tokio::time::sleep(Duration::from_millis(400 + (k * 53 % 200) as u64))
                            .await;
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    for handle in load(Instant::now() + warm_up, false) {
        handle.await?;
    }
    let rss_warm: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    let started = Instant::now();
    let handles = load(started + args.duration, true);
    // Memory every tenth of the run: a leak climbs steadily, a warm process levels off.
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let tenth = args.duration / 10;
    let sampler = tokio::spawn(async move {
        let mut series = Vec::new();
        for _ in 0..10 {
            tokio::time::sleep(tenth).await;
            let rss = pids.iter().map(|pid| rss_kib(*pid)).sum::<u64>();
            let fds = pids.iter().map(|pid| open_fds(*pid)).sum::<usize>();
            series.push((rss, fds));
        }
        series
    });
    for handle in handles {
        handle.await?;
    }
    let elapsed = started.elapsed();
    let series = sampler.await.unwrap_or_default();

    // Every subscriber must reach its project's last seq (one by one, in order).
    let mut last_seqs = std::collections::HashMap::new();
    for project in &projects {
        let data = gql(&http, &urls[0], &owner, EVENTS, json!({ "p": project })).await?;
        last_seqs.insert(
            project.clone(),
            data["events"]["lastSeq"].as_i64().context("lastSeq")?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let behind = |received: &[(String, Arc<AtomicI64>)]| {
        received
            .iter()
            .filter(|(p, last)| last.load(Ordering::Relaxed) < last_seqs[p])
            .count()
    };
    while behind(&received) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = behind(&received);
    if missing > 0 {
        tally.error(format!("{missing} subscribers did not receive every event"));
    }
    let rss_end: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    for reader in readers {
        reader.abort();
    }

    let mut queries = tally.queries.lock().map(|s| s.clone()).unwrap_or_default();
    let mut mutations = tally
        .mutations
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    queries.sort_unstable();
    mutations.sort_unstable();
    let events: i64 = last_seqs.values().sum();
    let errors = tally.errors.load(Ordering::Relaxed);
    println!(
        "operations: {} queries + {} mutations in {:.1?} = {:.0} ops/s; {} events in {} projects, each delivered to {} subscribers",
        queries.len(),
        mutations.len(),
        elapsed,
        (queries.len() + mutations.len()) as f64 / elapsed.as_secs_f64(),
        events,
        projects.len(),
        PER_PROJECT
    );
    for (label, samples) in [("queries", &queries), ("mutations", &mutations)] {
        println!("latency {label}: {}", summary(samples));
    }
    for (i, (warm, end)) in rss_warm.iter().zip(&rss_end).enumerate() {
        println!(
            "server {i}: RSS {:.1} MiB once warm, {:.1} MiB at the end ({:+.1}%)",
            *warm as f64 / 1024.0,
            *end as f64 / 1024.0,
            (*end as f64 - *warm as f64) * 100.0 / (*warm).max(1) as f64
        );
    }
    println!(
        "servers' RSS (MiB) and open files every {:?} of the run: {}",
        args.duration / 10,
        series
            .iter()
            .map(|(kib, fds)| format!("{:.1}/{fds}", *kib as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    println!("errors: {errors}");
    if errors > 0 {
        let first = tally.first_error.lock().ok().and_then(|f| f.clone());
        bail!("{errors} errors; the first: {}", first.unwrap_or_default());
    }
    Ok(())
}

/// Open file descriptors of a process (sockets included).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Reads a subscriber's events, checking each seq follows the one before.
async fn read_events(
    mut socket: raw::RawSocket,
    last: Arc<AtomicI64>,
    tally: Arc<Tally>,
    user: usize,
) {
    while let Ok(text) = socket.next_text().await {
        let Some(at) = text.find("\"seq\":") else {
            if text.contains("\"error\"") || text.contains("\"complete\"") {
                tally.error(format!("user{user}'s subscription ended: {text}"));
                return;
            }
            continue;
        };
        let seq: Option<i64> = text[at + 6..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok());
        let Some(seq) = seq else { continue };
        let before = last.swap(seq, Ordering::Relaxed);
        if seq != before + 1 {
            tally.error(format!("user{user} got seq {seq} after {before}"));
        }
    }
}
