//! `--webhooks`: what webhook delivery costs. The same 1,000 mutations (at `--rate`) run
//! twice on the same servers: first with no webhooks, then with 10 webhooks (each a
//! receiver in this process) on the project. Prints mutation latency both times (delivery
//! must not add to it), deliveries per second per instance (from each server's metrics),
//! the time from sending a mutation to its delivery at a receiver, and then capacity: every
//! webhook replays the 1,000 events at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use serde_json::{Value, json};

use crate::Args;
use crate::server::{gql, graphql_urls, owner_token, project_with_task, spawn_servers};
use crate::stats::{ms, percentile};

const ENDPOINTS: usize = 10;
const EVENTS: usize = 1000;
const RENAME: &str =
    "mutation($id: ID!, $t: String!) { updateTask(id: $id, patch: {title: $t}) { __typename } }";

/// When each receiver got each title (nanoseconds since the run's clock).
type Arrivals = Arc<Mutex<HashMap<String, Vec<u64>>>>;

pub async fn run(args: &Args, bin: &PathBuf, database_url: &str) -> anyhow::Result<()> {
    let redis = (args.servers > 1).then_some(args.redis_url.as_str());
    let env = [("TASKNEST_WEBHOOK_ALLOW_PRIVATE", "true")];
    let servers = spawn_servers(bin, database_url, redis, &env, args.servers).await?;
    let http = reqwest::Client::new();
    let owner = owner_token()?;
    let urls = graphql_urls(&servers);
    let (project, task, _) = project_with_task(&http, &urls[0], &owner, "webhooks").await?;
    println!(
        "servers={} endpoints={ENDPOINTS} events={EVENTS} rate={}/s database={}",
        servers.len(),
        args.rate,
        if database_url.starts_with("sqlite") {
            "sqlite"
        } else {
            "postgres"
        },
    );

    let clock = Instant::now();
    let (without, _) = mutations(&http, &urls, &owner, &task, args.rate, "plain", clock).await?;

    let arrivals: Arrivals = Arc::default();
    let mut hooks = Vec::new();
    let mut first_seq = 0;
    for _ in 0..ENDPOINTS {
        let url = receiver(arrivals.clone(), clock).await?;
        let created = gql(
            &http,
            &urls[0],
            &owner,
            "mutation($in: CreateWebhookInput!) { createWebhook(input: $in) { webhook { id lastDeliveredSeq } } }",
            json!({ "in": { "projectId": project, "url": url, "eventKinds": ["TASK_UPDATED"] } }),
        )
        .await?;
        let webhook = &created["createWebhook"]["webhook"];
        hooks.push(webhook["id"].as_str().context("webhook id")?.to_owned());
        first_seq = webhook["lastDeliveredSeq"].as_i64().context("seq")? + 1;
    }
    let before = delivered_by(&http, &servers).await;
    let started = Instant::now();
    let (with, sent) = mutations(&http, &urls, &owner, &task, args.rate, "hooked", clock).await?;
    wait_for(&arrivals, ENDPOINTS * EVENTS, "the deliveries").await?;
    let elapsed = started.elapsed();
    let after = delivered_by(&http, &servers).await;
    let mut lags = Vec::new();
    for (title, times) in arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
    {
        if let Some(sent_at) = sent.get(title) {
            lags.extend(times.iter().map(|t| t.saturating_sub(*sent_at)));
        }
    }
    lags.sort_unstable();

    // Capacity: every webhook replays the 1,000 events at once, as fast as it can.
    let replay_started = Instant::now();
    for hook in &hooks {
        gql(
            &http,
            &urls[0],
            &owner,
            "mutation($w: ID!, $s: Int!) { replayWebhook(webhookId: $w, fromSeq: $s) { id } }",
            json!({ "w": hook, "s": first_seq }),
        )
        .await?;
    }
    wait_for(&arrivals, 2 * ENDPOINTS * EVENTS, "the replay").await?;
    let replay = replay_started.elapsed();
    let replayed = delivered_by(&http, &servers).await;

    let report = |name: &str, mut samples: Vec<u64>| {
        samples.sort_unstable();
        println!(
            "mutation answer {name}: p50 {} p99 {} max {}",
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 99.0)),
            ms(samples.last().copied().unwrap_or_default()),
        );
        percentile(&samples, 99.0)
    };
    let p99_without = report("without webhooks", without);
    let p99_with = report(&format!("with {ENDPOINTS} webhooks"), with);
    println!(
        "mutation p99 with / without webhooks: {:.2}",
        p99_with as f64 / p99_without.max(1) as f64
    );
    println!(
        "mutation sent to delivery received: p50 {} p99 {}",
        ms(percentile(&lags, 50.0)),
        ms(percentile(&lags, 99.0)),
    );
    println!(
        "{} deliveries in {:.1?} ({:.0}/s overall, paced by the mutation rate)",
        ENDPOINTS * EVENTS,
        elapsed,
        (ENDPOINTS * EVENTS) as f64 / elapsed.as_secs_f64()
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        println!(
            "server {i}: {} deliveries, {:.0}/s",
            a - b,
            (a - b) as f64 / elapsed.as_secs_f64()
        );
    }
    println!(
        "replay of {} deliveries (10 webhooks, 1,000 events each) in {replay:.1?}: {:.0}/s",
        ENDPOINTS * EVENTS,
        (ENDPOINTS * EVENTS) as f64 / replay.as_secs_f64()
    );
    for (i, (a, r)) in after.iter().zip(&replayed).enumerate() {
        println!(
            "server {i}: {} replayed, {:.0}/s",
            r - a,
            (r - a) as f64 / replay.as_secs_f64()
        );
    }
    Ok(())
}

/// Sends `EVENTS` renames at `rate`, spread over the servers; the answer times and, by
/// title, when each was sent.
async fn mutations(
    http: &reqwest::Client,
    urls: &[String],
    owner: &str,
    task: &str,
    rate: f64,
    label: &str,
    clock: Instant,
) -> anyhow::Result<(Vec<u64>, HashMap<String, u64>)> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut in_flight = Vec::new();
    let mut sent = HashMap::new();
    for n in 0..EVENTS {
        ticker.tick().await;
        let title = format!("{label}-{n}");
        sent.insert(title.clone(), clock.elapsed().as_nanos() as u64);
        let (http, url, owner, task) = (
            http.clone(),
            urls[n % urls.len()].clone(),
            owner.to_owned(),
            task.to_owned(),
        );
        in_flight.push(tokio::spawn(async move {
            let started = Instant::now();
            gql(
                &http,
                &url,
                &owner,
                RENAME,
                json!({ "id": task, "t": title }),
            )
            .await
            .map(|_| started.elapsed().as_nanos() as u64)
        }));
    }
    let mut answers = Vec::with_capacity(EVENTS);
    for call in in_flight {
        answers.push(call.await??);
    }
    Ok((answers, sent))
}

/// A receiver on a free loopback port recording when each title arrives; its URL. Receivers
/// run on a runtime thread of their own at a low priority, so that taking 1,000 requests a
/// second does not delay this process's mutation timings or take the servers' CPU.
async fn receiver(arrivals: Arrivals, clock: Instant) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = clock.elapsed().as_nanos() as u64;
                if let Ok(body) = serde_json::from_slice::<Value>(&body)
                    && let Some(title) = body["task"]["title"].as_str()
                    && let Ok(mut arrivals) = arrivals.lock()
                {
                    arrivals.entry(title.to_owned()).or_default().push(at);
                }
                ""
            }
        }),
    );
    std::thread::spawn(move || {
        // Receivers stand for other machines: they get the CPU the servers leave.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 15);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                let _ = axum::serve(listener, app).await;
            }
        });
    });
    Ok(url)
}

/// Waits until the receivers got `count` requests in all (at most 120 s).
async fn wait_for(arrivals: &Arrivals, count: usize, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let received: usize = arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .values()
            .map(Vec::len)
            .sum();
        if received >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: {received} of {count} deliveries after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each server's delivered count, from its metrics.
async fn delivered_by(http: &reqwest::Client, servers: &[crate::server::Server]) -> Vec<u64> {
    let mut counts = Vec::new();
    for server in servers {
        let text = match http
            .get(format!("http://127.0.0.1:{}/metrics", server.port))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let count = text
            .lines()
            .find(|l| l.starts_with("tasknest_webhook_deliveries_total{outcome=\"delivered\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default();
        counts.push(count as u64);
    }
    counts
}
