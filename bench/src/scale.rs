//! The scale-out benchmark (`--projects N`): N projects, each with its subscribers on one
//! instance (project p on instance p mod servers), mutations to random projects through
//! random instances. At the end each instance's bus counter (`tasknest_bus_events_received`)
//! is set beside what its own rooms needed from the others, and beside what one shared
//! channel would have brought it (every event another instance committed).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::cluster::Cluster;
use crate::server::{gql, graphql_urls, owner_token, project_with_task, spawn_servers};
use crate::{Args, raw};

const UPDATE: &str =
    "mutation($id: ID!, $p: Float!) { updateTask(id: $id, patch: {position: $p}) { __typename } }";
const SUBSCRIPTION: &str = "subscription($p: ID!) { projectEvents(projectId: $p) { seq } }";

pub async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<()> {
    let instances = args.servers;
    let project_count = args.projects.unwrap_or(100).max(1);
    let cluster = match args.redis_cluster {
        true => Some(Cluster::start().await?),
        false => None,
    };
    let (redis_url, env) = match &cluster {
        Some(cluster) => (cluster.url(), vec![("REDIS_CLUSTER", "true")]),
        None => (args.redis_url.clone(), Vec::new()),
    };
    let servers = spawn_servers(bin, database_url, Some(&redis_url), &env, instances).await?;
    let urls = graphql_urls(&servers);
    let http = reqwest::Client::new();
    let owner = owner_token()?;
    let mut projects = Vec::new();
    for p in 0..project_count {
        let (project, task, _) =
            project_with_task(&http, &urls[0], &owner, &format!("p{p}")).await?;
        projects.push((project, task));
    }
    let per_project = (args.subscribers / project_count).max(1);
    println!(
        "redis={} instances={instances} projects={} subscribers={} ({per_project} per project, each project's on one instance) rate={}/s duration={:?}",
        if cluster.is_some() {
            "cluster of 3 masters"
        } else {
            "single"
        },
        project_count,
        per_project * project_count,
        args.rate,
        args.duration
    );
    let delivered = Arc::new(AtomicUsize::new(0));
    let per_project_delivered: Arc<Vec<AtomicUsize>> =
        Arc::new((0..project_count).map(|_| AtomicUsize::new(0)).collect());
    let mut readers = Vec::new();
    let first_seen: Arc<Vec<std::sync::Mutex<Vec<i64>>>> = Arc::new(
        (0..project_count)
            .map(|_| std::sync::Mutex::default())
            .collect(),
    );
    for (p, (project, _)) in projects.iter().enumerate() {
        let port = servers[p % instances].port;
        for k in 0..per_project {
            let first_seen = first_seen.clone();
            let mut socket =
                raw::RawSocket::open(port, &owner, SUBSCRIPTION, json!({ "p": project })).await?;
            let delivered = delivered.clone();
            let per_project_delivered = per_project_delivered.clone();
            readers.push(tokio::spawn(async move {
                while let Ok(text) = socket.next_text().await {
                    if text.contains("\"seq\"") {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        per_project_delivered[p].fetch_add(1, Ordering::Relaxed);
                        if k == 0
                            && let Some(seq) = text
                                .split("\"seq\":")
                                .nth(1)
                                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                                .and_then(|n| n.parse().ok())
                            && let Ok(mut seen) = first_seen[p].lock()
                        {
                            seen.push(seq);
                        }
                    }
                }
            }));
        }
    }
    // Let every room open and follow its channel before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = bus_counters(&http, &servers).await?;

    // Negative positions: a new task has a positive one, and restating it is no change
    // (no event).
    // Mutation n goes to a pseudo-random project through a pseudo-random instance (a fixed
    // LCG, so runs compare): every project is written through every instance.
    let total = (args.rate * args.duration.as_secs_f64()).round() as usize;
    let mut needed = vec![0u64; instances];
    let mut committed_elsewhere = vec![0u64; instances];
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut lcg: u64 = 42;
    let mut written = vec![0usize; project_count];
    let started = Instant::now();
    let mut in_flight = Vec::new();
    for n in 0..total {
        ticker.tick().await;
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let p = ((lcg >> 33) as usize) % project_count;
        let through = ((lcg >> 17) as usize) % instances;
        written[p] += 1;
        let home = p % instances;
        for (i, count) in committed_elsewhere.iter_mut().enumerate() {
            if i != through {
                *count += 1;
            }
        }
        if home != through {
            needed[home] += 1;
        }
        let (http, url, owner, task) = (
            http.clone(),
            urls[through].clone(),
            owner.clone(),
            projects[p].1.clone(),
        );
        in_flight.push(tokio::spawn(async move {
            gql(
                &http,
                &url,
                &owner,
                UPDATE,
                json!({ "id": task, "p": -((n + 1) as f64) }),
            )
            .await
        }));
    }
    let mut failed = 0;
    for handle in in_flight {
        if !matches!(handle.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let want = total * per_project;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let after = bus_counters(&http, &servers).await?;
    for reader in readers {
        reader.abort();
    }
    println!(
        "mutations={total} failed={failed} deliveries={}/{want} in {elapsed:.1?}",
        delivered.load(Ordering::Relaxed)
    );
    for (p, count) in per_project_delivered.iter().enumerate() {
        let got = count.load(Ordering::Relaxed);
        if got != written[p] * per_project {
            println!(
                "project {p} (instance {}): {got} of {} deliveries",
                p % instances,
                written[p] * per_project
            );
            if let Ok(seen) = first_seen[p].lock() {
                let gaps: Vec<i64> = seen
                    .windows(2)
                    .filter(|w| w[1] != w[0] + 1)
                    .map(|w| w[0] + 1)
                    .collect();
                println!(
                    "  first subscriber saw seq {:?}..{:?}, missing after gaps at {gaps:?}",
                    seen.first(),
                    seen.last()
                );
            }
        }
    }
    println!(
        "instance | projects with subscribers | events its rooms needed from others | bus events received | one shared channel would bring"
    );
    for i in 0..instances {
        let rooms = (0..project_count).filter(|p| p % instances == i).count();
        println!(
            "{i} | {rooms} | {} | {} | {}",
            needed[i],
            after[i].saturating_sub(before[i]),
            committed_elsewhere[i]
        );
    }
    if let Some(cluster) = &cluster {
        println!(
            "cluster node | SPUBLISH (project events) | PUBLISH (presence, conflicts, tokens)"
        );
        for (port, (sharded, classic)) in cluster.ports.iter().zip(cluster.publishes()?) {
            println!("{port} | {sharded} | {classic}");
        }
    }
    Ok(())
}

/// Each server's `tasknest_bus_events_received_total`.
async fn bus_counters(
    http: &reqwest::Client,
    servers: &[crate::server::Server],
) -> anyhow::Result<Vec<u64>> {
    let mut counters = Vec::new();
    for server in servers {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", server.port))
            .send()
            .await?
            .text()
            .await?;
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("tasknest_bus_events_received_total "))
            .context("no tasknest_bus_events_received_total in /metrics")?
            .trim()
            .parse::<f64>()?;
        counters.push(value as u64);
    }
    Ok(counters)
}
