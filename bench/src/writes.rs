//! The write throughput benchmark (`--writes`): a closed loop of `updateTask` mutations
//! (with `baseVersion` and `clientMutationId`, as the frontends send them) over many
//! projects, `--writers` at a time, spread over the servers. Reports mutations per second
//! and latency percentiles; no subscribers, so this is the write path alone.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::Args;
use crate::server::{cpu_ticks, gql, graphql_urls, owner_token, project_with_task, spawn_servers};
use crate::stats::summary;

const UPDATE: &str = "mutation($id: ID!, $v: Int!, $p: Float!, $c: String!) { updateTask(id: $id, baseVersion: $v, patch: {position: $p}, clientMutationId: $c) { ... on TaskUpdated { task { version } } } }";

pub async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<()> {
    let redis = (args.servers > 1).then_some(args.redis_url.as_str());
    let servers = spawn_servers(bin, database_url, redis, &[], args.servers).await?;
    let urls = graphql_urls(&servers);
    let http = reqwest::Client::new();
    let owner = owner_token()?;
    let project_count = args.projects.unwrap_or(100).max(1);
    let mut tasks = Vec::new();
    for p in 0..project_count {
        let (_, task, version) =
            project_with_task(&http, &urls[0], &owner, &format!("p{p}")).await?;
        tasks.push((task, version));
    }
    let writers = args.writers.max(1);
    println!(
        "servers={} projects={project_count} writers={writers} duration={:?} database={}",
        servers.len(),
        args.duration,
        if database_url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
    );
    let cpu_before: Vec<u64> = servers.iter().map(|s| cpu_ticks(s.pid())).collect();
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut loops = Vec::new();
    for w in 0..writers {
        // Writer w owns the tasks w, w + writers, …: a task has one writer, so its
        // baseVersion is always current (no conflicts), and projects are spread.
        let mine: Vec<(String, i64)> = tasks.iter().skip(w).step_by(writers).cloned().collect();
        if mine.is_empty() {
            continue;
        }
        let (http, owner, url) = (http.clone(), owner.clone(), urls[w % urls.len()].clone());
        loops.push(tokio::spawn(async move {
            let mut mine = mine;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let len = mine.len();
                let (task, version) = &mut mine[n % len];
                n += 1;
                let vars = json!({ "id": task, "v": *version, "p": -(n as f64), "c": format!("w{w}-{n}") });
                let sent = Instant::now();
                match gql(&http, &url, &owner, UPDATE, vars).await {
                    Ok(data) => match data["updateTask"]["task"]["version"].as_i64() {
                        Some(v) => {
                            *version = v;
                            latencies.push(sent.elapsed().as_nanos() as u64);
                        }
                        None => errors += 1,
                    },
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for handle in loops {
        let (latencies, failed) = handle.await?;
        all.extend(latencies);
        errors += failed;
    }
    let elapsed = started.elapsed();
    let cpu_used: u64 = servers
        .iter()
        .zip(&cpu_before)
        .map(|(s, before)| cpu_ticks(s.pid()) - before)
        .sum();
    all.sort_unstable();
    println!(
        "mutations={} errors={errors} in {elapsed:.1?}: {:.0} mutations/s",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    println!("latency: {}", summary(&all));
    println!(
        "server CPU: {:.2} s, {:.0} µs per mutation",
        cpu_used as f64 / 100.0,
        cpu_used as f64 * 10_000.0 / all.len().max(1) as f64
    );
    Ok(())
}
