//! Webhooks, delivered from the event log: the log is the outbox, so a committed change
//! cannot miss its webhook, and delivery never sits on a mutation's path.
//!
//! Each webhook keeps its own cursor (the last seq delivered). Exactly one instance at a
//! time delivers a given webhook: it holds a lease on the webhook's row (a conditional
//! `UPDATE`, portable to SQLite and PostgreSQL), renews it before every attempt, and every
//! write it makes is fenced on still holding it. Events go out in `seq` order, one at a time;
//! a failure is retried on the schedule while the following events wait. An instance that
//! dies mid-delivery leaves a lease that runs out, and another instance sends the same
//! message again with the same `webhook-id`.

pub mod address;
mod deliver;
mod graphql;
pub mod history;
pub mod payload;
mod send;
pub mod service;
pub mod signing;
mod worker;

pub use graphql::{WebhookMutation, WebhookQuery};
pub use send::Outcome;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

use crate::config::Config;
use crate::entities::events;
use crate::events::txn::Announce;
use crate::metrics::Metrics;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
/// How long the delivery log is kept.
pub const DELIVERY_LOG_DAYS: i64 = 7;

/// How webhooks are delivered (from the configuration).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Allow loopback and private addresses (development and tests).
    pub allow_private: bool,
    /// One attempt's limit.
    pub timeout: Duration,
    /// Delays between attempts; the last repeats.
    pub retry_schedule: Vec<Duration>,
    /// A webhook failing this long is disabled.
    pub give_up_after: Duration,
    /// How long a deliverer's claim lasts without renewal (longer than `timeout`).
    pub lease: Duration,
    /// How often each instance looks for webhooks with work (its own commits wake it at once).
    pub poll_interval: Duration,
    /// Most webhooks delivered at once by this instance; 0: none.
    pub concurrency: usize,
}

impl WebhookSettings {
    /// The settings in `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            allow_private: config.webhook_allow_private,
            timeout: config.webhook_timeout,
            retry_schedule: config.webhook_retry_schedule.clone(),
            give_up_after: config.webhook_give_up_after,
            lease: config.webhook_lease,
            poll_interval: config.webhook_poll_interval,
            concurrency: config.webhook_concurrency as usize,
        }
    }

    /// The delay before attempt `failures + 1`, with ±20 % jitter so that endpoints coming
    /// back are not hit by every webhook at once.
    pub fn backoff(&self, failures: i32) -> Duration {
        let index = usize::try_from(failures.max(1) - 1).unwrap_or(0);
        let base = self
            .retry_schedule
            .get(index)
            .or(self.retry_schedule.last())
            .copied()
            .unwrap_or(Duration::from_secs(5));
        base.mul_f64(rand::random_range(0.8..1.2))
    }

    /// How long a worker with nothing to send keeps its webhook before letting it go: events
    /// that follow soon are sent without a new claim.
    pub fn linger(&self) -> Duration {
        (self.poll_interval * 5).min(self.lease / 2)
    }
}

/// The webhook deliverer of this instance, and what the service needs from it.
pub struct Webhooks {
    pub settings: WebhookSettings,
    client: reqwest::Client,
    instance: Uuid,
    /// Bumped on every local commit (and by the service after changes): the deliverer and
    /// its idle workers look for work when it moves.
    commits: watch::Sender<u64>,
    /// Bumped when the service changed a webhook here: workers read their row again.
    changes: watch::Sender<u64>,
    /// Projects with an enabled webhook, as of the deliverer's last look (commits of these
    /// wake it).
    hooked: std::sync::RwLock<std::collections::HashSet<Uuid>>,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// A deliverer for this instance; [`Webhooks::start`] runs it.
    pub fn new(
        settings: WebhookSettings,
        instance: Uuid,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(
            settings.lease > settings.timeout,
            "TASKNEST_WEBHOOK_LEASE must be longer than TASKNEST_WEBHOOK_TIMEOUT"
        );
        let client = send::client(settings.timeout, settings.allow_private)?;
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        Ok(Arc::new(Self {
            settings,
            client,
            instance,
            commits: watch::Sender::new(0),
            changes: watch::Sender::new(0),
            hooked: Default::default(),
            slots,
            metrics,
        }))
    }

    /// Asks the deliverer to look for work now.
    pub fn wake(&self) {
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Tells the deliverer a webhook was changed (its row, its queue of redeliveries).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        self.wake();
    }
}

/// A committed event of a project with webhooks is work: look now rather than at the next
/// poll. Events of every other project (most of them) cost nothing here.
impl Announce for Webhooks {
    fn committed(&self, row: events::Model) {
        let hooked = self.hooked.read().unwrap_or_else(|e| e.into_inner());
        if hooked.contains(&row.project_id) {
            drop(hooked);
            self.wake();
        }
    }
}
