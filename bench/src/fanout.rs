//! The fan-out benchmark: subscribers spread over the servers, mutations at a set rate,
//! latency from sending a mutation to receiving its event.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::readers::{Readers, Subscriber};
use crate::server::{
    cpu_split, cpu_used, gql, graphql_urls, owner_token, project_with_task, rss_kib, spawn_servers,
};
use crate::stats::{ms, percentile, summary};
use crate::{Args, Transport, phases, raw, raw_sse};

/// What one fan-out run measured (latencies in ns, sorted; empty for `--idle`).
#[derive(Default)]
pub struct Outcome {
    /// Mutation sent → event received, every delivery.
    pub deliveries: Vec<u64>,
    /// Mutation sent → its first subscriber received it, per event.
    pub first_deliveries: Vec<u64>,
    /// Mutation sent → its HTTP answer.
    pub answers: Vec<u64>,
    /// Server CPU per delivery, µs.
    pub cpu_per_delivery_us: f64,
    /// The part of it spent in the kernel (system time), µs.
    pub kernel_per_delivery_us: f64,
    /// The bench's own CPU per delivery (the subscribers reading), µs.
    pub clients_per_delivery_us: f64,
}

pub async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<Outcome> {
    let redis = (args.servers > 1 || !args.idle).then_some(args.redis_url.as_str());
    let servers = spawn_servers(bin, database_url, redis, &[], args.servers).await?;
    let http = reqwest::Client::new();
    let owner = owner_token()?;
    let base = graphql_urls(&servers).swap_remove(0);
    let (project, task, _) = project_with_task(&http, &base, &owner, "bench").await?;

    let rss_before: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    let per_server = args.subscribers.div_ceil(servers.len());
    println!(
        "servers={} subscribers={} ({} per server, {:?}) rate={}/s duration={:?} database={} redis={}",
        servers.len(),
        args.subscribers,
        per_server,
        args.transport,
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
    let connect_started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(200));
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let token = owner.clone();
    for i in 0..args.subscribers {
        let port = servers[i % servers.len()].port;
        let permit = semaphore.clone().acquire_owned().await?;
        let subscriber = connect(args.transport, port, &token, &project)
            .await
            .with_context(|| format!("subscriber {i}"))?;
        drop(permit);
        subscribers.push(subscriber);
    }
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let readers = Readers::start(subscribers, threads, clock, expected_events)?;
    println!(
        "connected {} subscribers in {:.1?}",
        args.subscribers,
        connect_started.elapsed()
    );

    // Warm-up: events until every subscriber has seen one before timing starts. A live
    // subscription starts "from now", and the last ones may not be registered yet when the
    // first warm-up event commits, so the warm-up repeats every half second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_warm_up = Instant::now();
    let mut warm_ups = 0.0;
    while readers.warmed() < args.subscribers {
        if Instant::now() >= next_warm_up {
            // A new position and clientMutationId each time: restating the current position
            // is no change, and a repeated clientMutationId is a retry; neither is an event.
            warm_ups += 1.0;
            gql(
                &http,
                &base,
                &owner,
                UPDATE,
                json!({ "id": task, "p": -warm_ups, "c": format!("w{warm_ups}") }),
            )
            .await?;
            next_warm_up = Instant::now() + Duration::from_millis(500);
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} subscribers live after 60 s",
                readers.warmed(),
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
        readers.finish()?;
        return Ok(Outcome::default());
    }

    // Measure: open-loop mutations at the set rate.
    let phases_before = phases::snapshot(&http, &servers).await;
    let cpu_before: Vec<(u64, u64)> = servers.iter().map(|s| cpu_split(s.pid())).collect();
    let clients_before = cpu_split(std::process::id());
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
            let asked = Instant::now();
            if gql(&http, &url, &owner, UPDATE, vars).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            // How long the writer waited for its answer, whatever the fan-out is doing.
            asked.elapsed().as_nanos() as u64
        }));
    }
    let mut answers = Vec::with_capacity(in_flight.len());
    for handle in in_flight {
        if let Ok(answered) = handle.await {
            answers.push(answered);
        }
    }
    answers.sort_unstable();
    let want = expected_events * args.subscribers;
    let deadline = Instant::now() + Duration::from_secs(30);
    while readers.delivered() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu_after: Vec<(u64, u64)> = servers.iter().map(|s| cpu_split(s.pid())).collect();
    let clients_after = cpu_split(std::process::id());
    let phases_after = phases::snapshot(&http, &servers).await;
    let samples = readers.finish()?;
    // Latency per delivery: read time minus send time; per event, its first and last read.
    let got = samples.len();
    let mut first_seen = vec![u64::MAX; expected_events + 1];
    let mut last_seen = vec![0; expected_events + 1];
    let mut all: Vec<u64> = Vec::with_capacity(got);
    for sample in &samples {
        let n = sample.event as usize;
        first_seen[n] = first_seen[n].min(sample.at);
        last_seen[n] = last_seen[n].max(sample.at);
        all.push(sample.at.saturating_sub(sent[n].load(Ordering::Relaxed)));
    }
    let mut spreads = Vec::new();
    let mut firsts = Vec::new();
    for n in 1..=expected_events {
        if first_seen[n] != u64::MAX {
            spreads.push(last_seen[n] - first_seen[n]);
            firsts.push(first_seen[n].saturating_sub(sent[n].load(Ordering::Relaxed)));
        }
    }
    firsts.sort_unstable();
    all.sort_unstable();
    spreads.sort_unstable();
    let (user_ticks, kernel_ticks) = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(before, after)| cpu_used(*before, *after))
        .fold((0, 0), |sum, used| (sum.0 + used.0, sum.1 + used.1));
    let cpu_ticks_used = user_ticks + kernel_ticks;
    println!(
        "mutations sent={} failed={} deliveries={}/{} in {:.1?}",
        expected_events,
        errors.load(Ordering::Relaxed),
        got,
        want,
        elapsed
    );
    println!("latency mutation→event (all deliveries): {}", summary(&all));
    println!(
        "first delivery per event (mutation→first subscriber): {}",
        summary(&firsts)
    );
    println!("mutation answer (HTTP round trip): {}", summary(&answers));
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
    let cpu_per_delivery_us = cpu_ticks_used as f64 * 10_000.0 / got.max(1) as f64;
    let kernel_per_delivery_us = kernel_ticks as f64 * 10_000.0 / got.max(1) as f64;
    // The bench's own CPU (its subscribers reading, plus the writer's few requests): the
    // clients share the cores with the servers.
    let (clients_user, clients_kernel) = cpu_used(clients_before, clients_after);
    let clients_ticks = clients_user + clients_kernel;
    let clients_per_delivery_us = clients_ticks as f64 * 10_000.0 / got.max(1) as f64;
    println!(
        "server CPU: {:.2} s total, {cpu_per_delivery_us:.1} µs per delivery ({:.1} user + {kernel_per_delivery_us:.1} kernel)",
        cpu_ticks_used as f64 / 100.0,
        cpu_per_delivery_us - kernel_per_delivery_us,
    );
    println!("clients (this bench) CPU: {clients_per_delivery_us:.1} µs per delivery");
    phases::print(&phases_before, &phases_after);
    Ok(Outcome {
        deliveries: all,
        first_deliveries: firsts,
        answers,
        cpu_per_delivery_us,
        kernel_per_delivery_us,
        clients_per_delivery_us,
    })
}

const UPDATE: &str = "mutation($id: ID!, $p: Float!, $c: String) { updateTask(id: $id, patch: {position: $p}, clientMutationId: $c) { __typename } }";
const SUBSCRIPTION: &str =
    "subscription($p: ID!) { projectEvents(projectId: $p) { seq clientMutationId } }";

/// Connects one subscriber and subscribes it to the project's events.
async fn connect(
    transport: Transport,
    port: u16,
    token: &str,
    project: &str,
) -> anyhow::Result<Subscriber> {
    let variables = json!({ "p": project });
    match transport {
        Transport::Ws => raw::RawSocket::open(port, token, SUBSCRIPTION, variables)
            .await?
            .into_subscriber(),
        Transport::Sse => raw_sse::RawSse::open(port, token, SUBSCRIPTION, variables)
            .await?
            .into_subscriber(),
    }
}
