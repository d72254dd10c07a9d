//! TaskNest: a real-time GraphQL API for team task boards.
//!
//! [`Application::build`] wires everything from a [`Config`]; `main` and the integration
//! tests both start the service through it, so tests run exactly what the binary serves.

pub mod auth;
pub mod config;
pub mod db;
pub mod entities;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod metrics;
pub mod presence;
pub mod projects;
pub mod ratelimit;
pub mod realtime;
pub mod redis_link;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod users;
pub mod validate;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::Config;
pub use state::AppState;

use crate::auth::{ApiTokens, UserDirectory, Verifier};
use crate::events::txn::{Announce, EventLog};
use crate::metrics::Metrics;
use crate::presence::{
    FallbackStore, MemoryStore, Presence, PresenceSettings, PresenceStore, RedisStore,
};
use crate::ratelimit::{Limits, RateLimiter};
use crate::realtime::redis_bus::RedisBus;
use crate::realtime::{Bus, Channels, Hub, LocalBus, Realtime};
use crate::redis_link::{RedisLink, RedisTarget};
use crate::state::DbStats;
use crate::tasks::conflicts::{self, ConflictNotices};
use crate::webhooks::{WebhookSettings, Webhooks};
use tokio_util::sync::CancellationToken;

/// Connections of the webhook deliverer's own pool (PostgreSQL).
const WEBHOOK_POOL: u32 = 4;

/// How long a stopping server waits for its WebSockets to finish their closing handshake.
const WS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A migrated database, a bound listener and the router, ready to serve.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
}

impl Application {
    /// Migrates the database, connects, and binds `config.addr` (port 0 picks a free port).
    /// `jwt_secret` must already be set (see [`Config::jwt_secret`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let secret = config
            .jwt_secret
            .clone()
            .context("JWT_SECRET must be resolved before the application is built")?;
        db::migrate(&config).await?;
        let db_stats = Arc::new(DbStats::default());
        let metrics = Arc::new(Metrics::default());
        let db = db::connect(
            &config,
            config.database_max_connections,
            Some((db_stats.clone(), metrics.clone())),
        )
        .await?;
        let shutdown = CancellationToken::new();
        // This instance's id: its presence leases, and the bus skips its own messages by it.
        let instance = uuid::Uuid::new_v4();
        let presence_settings = PresenceSettings {
            timeout: config.presence_timeout,
            coalesce: config.presence_coalesce,
        };
        let redis_target =
            RedisTarget::from_config(config.redis_url.as_deref(), config.redis_cluster)?;
        // One shared link (multiplexed) for everything but the bus's subscriptions.
        let redis = redis_target.as_ref().map(RedisLink::open).transpose()?;
        if let Some(link) = &redis {
            link.warm().await;
        }
        let (bus, store): (Arc<dyn Bus>, Arc<dyn PresenceStore>) = match (&redis_target, &redis) {
            (Some(target), Some(link)) => (
                RedisBus::new(target.clone(), link.clone(), instance),
                Arc::new(FallbackStore::new(RedisStore::new(
                    link.clone(),
                    instance,
                    config.presence_timeout,
                ))),
            ),
            _ => (Arc::new(LocalBus), Arc::new(MemoryStore::default())),
        };
        let hub = Hub::new(db.clone(), bus.clone(), shutdown.clone(), metrics.clone());
        let presence = Presence::start(store, bus.clone(), presence_settings, shutdown.clone());
        let conflicts = ConflictNotices::new(bus.clone());
        let api_tokens = ApiTokens::new(bus.clone());
        // Each channel's owner receives what the other instances publish on it.
        let mut channels = Channels::default();
        channels.register_family(realtime::EVENTS, hub.clone());
        channels.register(conflicts::CHANNEL, conflicts.clone());
        channels.register_family(presence::CHANNELS, presence.clone());
        channels.register(auth::tokens::CHANNEL, api_tokens.clone());
        bus.clone().listen(channels, shutdown.clone());

        tokio::spawn(hub.clone().run_checks(config.gap_check_interval));
        tokio::spawn(events::retention::run(
            db.clone(),
            config.event_retention,
            shutdown.clone(),
        ));
        let limits = Limits {
            burst: config.rate_burst,
            per_second: config.rate_per_second,
        };
        let rate_limiter = Arc::new(RateLimiter::new(
            limits,
            redis.clone(),
            metrics.rate_limit_duration.clone(),
        ));
        let verifier = Arc::new(Verifier::from_config(&config, secret.as_bytes())?);
        verifier.start(shutdown.clone());
        let realtime = Realtime {
            hub,
            bus,
            metrics: metrics.clone(),
            runtime: realtime::runtime::start(
                config.fanout_threads.map(usize::from),
                shutdown.clone(),
                WS_DRAIN + std::time::Duration::from_secs(1),
            )
            .context("cannot start the fan-out runtime")?,
        };
        let webhooks = Webhooks::new(
            WebhookSettings::from_config(&config),
            instance,
            metrics.clone(),
        )?;
        // Delivery has a database handle of its own: on PostgreSQL a small pool (opened on
        // the deliverer's thread), so that it can never hold the connections mutations wait
        // for; its statements count in the metrics but not in the per-request statistics
        // that tests pin.
        let shared_db = (!config.is_postgres()).then(|| db.clone());
        let (pool_config, counted) = (config.clone(), metrics.clone());
        webhooks.start(
            move || async move {
                let mut db = match shared_db {
                    Some(db) => db,
                    None => db::connect(&pool_config, WEBHOOK_POOL, None).await?,
                };
                db.set_metric_callback(move |info| counted.statement_ran(info.elapsed));
                Ok(db)
            },
            shutdown.clone(),
        );
        // Committed events go to the rooms and the bus, and wake this instance's deliverer.
        let announce: Vec<Arc<dyn Announce>> = vec![Arc::new(realtime.clone()), webhooks.clone()];
        let state = AppState {
            config: Arc::new(config.clone()),
            events: EventLog::new(db.clone(), Arc::new(announce), db_stats.clone()),
            db,
            verifier,
            api_tokens,
            users: Arc::new(UserDirectory::default()),
            realtime,
            conflicts,
            presence,
            shutdown,
            metrics,
            rate_limiter,
            redis,
            db_stats,
            webhooks,
        };
        let schema = graphql::build_schema(state.clone());
        let router = http::router(state.clone(), schema)?;
        let open_files = http::raise_open_files_limit();
        tracing::debug!(?open_files, "open-file limit");
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {} (TASKNEST_ADDR)", config.addr))?;
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The shared state (tests read counters from it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves: then stops accepting, closes WebSockets with 1001
    /// so clients reconnect elsewhere, and finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let token = self.state.shutdown.clone();
        // No Nagle: a subscription's next message must not wait for the client's delayed ACK
        // of the previous one (up to 40 ms on Linux), which is what tail latency was made of.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::warn!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        let result = axum::serve(listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                token.cancel();
            })
            .await;
        self.state.shutdown.cancel();
        // Upgraded WebSockets are not connections axum waits for: give each the moment it
        // needs to send its 1001 Close (and read the client's), or the process would exit
        // under them and clients would see a reset instead of "reconnect elsewhere".
        let deadline = tokio::time::Instant::now() + WS_DRAIN;
        while self.state.metrics.ws_connections.get() > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        result
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
