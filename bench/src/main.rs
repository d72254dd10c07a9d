//! `tasknest-bench`: starts TaskNest servers as child processes (so it can read their CPU and
//! memory from /proc) and loads them. The default run connects graphql-ws (or, with
//! `--transport sse`, SSE) subscribers spread
//! over them, sends mutations at a set rate, and prints latency from sending a mutation to
//! receiving its event (one clock, this process), the fan-out spread, deliveries per second,
//! server CPU per delivery and server memory per connection. `--idle` only holds connections
//! and reports memory. `--soak` runs many users with mixed queries, mutations and
//! subscriptions and reports errors, throughput, latency and memory over time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

mod against_floor;
mod cluster;
mod fanout;
mod floor;
mod phases;
mod raw;
mod raw_sse;
mod readers;
mod scale;
mod server;
mod soak;
mod stats;
mod webhooks;
mod writes;

use server::fresh_database;

const SECRET: &str = "benchmark-secret-benchmark-secret-0123456789";

/// A subscriber transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// graphql-ws (`graphql-transport-ws`) over a WebSocket.
    Ws,
    /// GraphQL over Server-Sent Events, one stream per subscription.
    Sse,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Subscription latency and memory benchmark for TaskNest")]
pub struct Args {
    /// TaskNest instances to start (they share the database and Redis).
    #[arg(long, visible_alias = "instances", default_value_t = 2)]
    pub servers: usize,
    /// Scale-out instead: this many projects, each with its subscribers on one instance;
    /// reports each instance's bus traffic beside what its rooms needed.
    #[arg(long)]
    pub projects: Option<usize>,
    /// Subscriber connections, each holding one `projectEvents` subscription.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// How subscribers connect: graphql-ws, or GraphQL over SSE (distinct connections).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,
    /// Mutations per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// How long mutations are sent.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Database the servers share: a fresh database is created in this PostgreSQL cluster
    /// (or an SQLite file when the URL starts with sqlite).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Redis the servers share (needed for more than one server).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Scale-out (`--projects`): start a private three-master Redis Cluster on free ports and
    /// run the servers on it (project events on sharded pub/sub) instead of `--redis-url`.
    #[arg(long)]
    pub redis_cluster: bool,
    /// Only open the connections and report memory; send no mutations.
    #[arg(long)]
    pub idle: bool,
    /// Soak instead: `--users` users with mixed queries, mutations and subscriptions.
    #[arg(long)]
    pub soak: bool,
    /// Soak: how many users.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Webhooks instead: 1,000 mutations without and then with 10 webhooks; mutation
    /// latency both times and deliveries per second per instance.
    #[arg(long)]
    pub webhooks: bool,
    /// Write throughput instead: a closed loop of `updateTask` over `--projects` projects
    /// (default 100) by `--writers` concurrent writers.
    #[arg(long)]
    pub writes: bool,
    /// `--writes`: concurrent writers.
    #[arg(long, default_value_t = 32)]
    pub writers: usize,
    /// Only measure the loopback floor (kernel cost of one message) and exit.
    #[arg(long)]
    floor: bool,
    /// Fan-out against the floor, in one run: the kernel's cost per message, then the
    /// fan-out at 2, 100 and `--subscribers` subscribers; prints the ratios the targets
    /// are stated in.
    #[arg(long)]
    pub against_floor: bool,
    /// The server binary (default: `tasknest` next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Threads the fan-out's subscribers are read on (and the bench's runtime has; default:
    /// one per core). With one, every event's deliveries are read one after another, and the
    /// last reader of an event waits for the 999 before it: a cost of the load generator,
    /// not of the server.
    #[arg(long)]
    pub client_threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Thousands of subscribers are thousands of sockets, whatever the shell's soft limit.
    tasknest::http::raise_open_files_limit();
    if args.floor {
        return floor::run(args.subscribers);
    }
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    }
    .enable_all()
    .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = match &args.server_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("tasknest"),
    };
    if args.against_floor {
        // A fresh database per phase, made there.
        return against_floor::run(&args, &bin).await;
    }
    let (database_url, cleanup) = fresh_database(&args.database_url).await?;
    let result = if args.soak {
        soak::run(&args, &bin, &database_url).await
    } else if args.writes {
        writes::run(&args, &bin, &database_url).await
    } else if args.projects.is_some() {
        scale::run(&args, &bin, &database_url).await
    } else if args.webhooks {
        webhooks::run(&args, &bin, &database_url).await
    } else {
        fanout::run(&args, &bin, &database_url).await.map(drop)
    };
    if let Some(cleanup) = cleanup {
        cleanup.await;
    }
    result
}
