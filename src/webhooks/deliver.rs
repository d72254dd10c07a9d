//! The deliverer: finds webhooks with work, claims each with a lease, and sends its events in
//! order, one attempt at a time (see the module docs of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::worker::Worker;
use super::{DELIVERY_LOG_DAYS, Webhooks};
use crate::entities::{projects, webhook_deliveries, webhook_redeliveries, webhooks};

/// How often old delivery records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Events read from the log at a time.
pub(super) const BATCH: u64 = 100;
/// Lease left beyond one attempt's timeout before the worker renews it (clock skew between
/// instances, the renewal's own round trip).
pub(super) const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// After a wake-up by a commit, how long the deliverer gathers more before looking: a burst
/// of commits costs one look, not one each.
const COALESCE: Duration = Duration::from_millis(10);

impl Webhooks {
    /// Runs the deliverer until `shutdown`, on a thread of its own with a lower scheduling
    /// priority: delivery uses the CPU that serving requests leaves, so that a burst of
    /// deliveries cannot slow mutations down. `connect` opens its database handle there.
    pub fn start<F, Fut>(self: &Arc<Self>, connect: F, shutdown: CancellationToken)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<DatabaseConnection>>,
    {
        if self.settings.concurrency == 0 {
            tracing::info!(
                "webhook delivery is off on this instance (TASKNEST_WEBHOOK_CONCURRENCY=0)"
            );
            return;
        }
        let hooks = self.clone();
        let spawned = std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                lower_priority();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot start the webhook deliverer");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match connect().await {
                        Ok(db) => hooks.run(db, shutdown).await,
                        Err(err) => {
                            tracing::error!(error = %err, "the webhook deliverer cannot reach the database")
                        }
                    }
                });
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the webhook deliverer thread");
        }
    }

    async fn run(self: Arc<Self>, db: DatabaseConnection, shutdown: CancellationToken) {
        let mut commits = self.commits.subscribe();
        let mut pruned_at = tokio::time::Instant::now() - PRUNE_EVERY;
        loop {
            if let Err(err) = self.claim_work(&db, &shutdown).await {
                tracing::warn!(error = %err, "cannot look for webhook work");
            }
            if pruned_at.elapsed() >= PRUNE_EVERY {
                pruned_at = tokio::time::Instant::now();
                if let Err(err) = prune(&db).await {
                    tracing::warn!(error = %err, "cannot prune the webhook delivery log");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Let the workers release their leases (another instance takes over at
                    // once) before this runtime, and they with it, is dropped.
                    let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
                    let _ = tokio::time::timeout(
                        self.settings.timeout + LEASE_MARGIN,
                        self.slots.acquire_many(all),
                    )
                    .await;
                    return;
                }
                _ = commits.changed() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Claims every webhook that has work and no live lease, and starts a worker for each.
    async fn claim_work(
        self: &Arc<Self>,
        db: &DatabaseConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), DbErr> {
        let now = Utc::now();
        let behind: Vec<Uuid> = webhooks::Entity::find()
            .select_only()
            .column(webhooks::Column::Id)
            .inner_join(projects::Entity)
            .filter(webhooks::Column::Enabled.eq(true))
            .filter(lease_free(now))
            .filter(
                webhooks::Column::NextAttemptAt
                    .is_null()
                    .or(webhooks::Column::NextAttemptAt.lte(now)),
            )
            .filter(
                Expr::col((webhooks::Entity, webhooks::Column::Cursor))
                    .lt(Expr::col((projects::Entity, projects::Column::LastSeq))),
            )
            .into_tuple()
            .all(db)
            .await?;
        let hooked: Vec<Uuid> = webhooks::Entity::find()
            .select_only()
            .column(webhooks::Column::ProjectId)
            .filter(webhooks::Column::Enabled.eq(true))
            .distinct()
            .into_tuple()
            .all(db)
            .await?;
        *self.hooked.write().unwrap_or_else(|e| e.into_inner()) = hooked.into_iter().collect();
        let asked: Vec<Uuid> = webhook_redeliveries::Entity::find()
            .select_only()
            .column(webhook_redeliveries::Column::WebhookId)
            .distinct()
            .into_tuple()
            .all(db)
            .await?;
        let mut candidates = behind;
        candidates.extend(asked);
        candidates.sort();
        candidates.dedup();
        for id in candidates {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            if self.claim(db, id).await? {
                let worker = Worker::new(self.clone(), db.clone(), id, shutdown.clone());
                tokio::spawn(async move {
                    worker.run().await;
                    drop(slot);
                });
            }
        }
        Ok(())
    }

    /// Takes the lease on `id` if it is free (or already ours).
    async fn claim(&self, db: &DatabaseConnection, id: Uuid) -> Result<bool, DbErr> {
        let now = Utc::now();
        let claimed = webhooks::Entity::update_many()
            .col_expr(
                webhooks::Column::LeaseOwner,
                Expr::value(Some(self.instance)),
            )
            .col_expr(
                webhooks::Column::LeaseUntil,
                Expr::value(Some(self.lease_end())),
            )
            .filter(webhooks::Column::Id.eq(id))
            .filter(webhooks::Column::Enabled.eq(true))
            .filter(lease_free(now))
            .exec(db)
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// When a lease taken or renewed now ends.
    pub(super) fn lease_end(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.settings.lease).unwrap_or_default()
    }
}

fn lease_free(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(webhooks::Column::LeaseUntil.is_null())
        .add(webhooks::Column::LeaseUntil.lt(now))
}

/// The `webhook-id` of `seq` for `webhook`: the same for every retry of that event; a
/// replay (a new generation) makes new ids, since the receiver asked to get them again.
pub fn message_id(webhook: &webhooks::Model, seq: i64) -> String {
    let id = webhook.id.simple();
    match webhook.generation {
        0 => format!("msg_{id}_{seq}"),
        generation => format!("msg_{id}_{seq}_r{generation}"),
    }
}

/// Lowers this thread's scheduling priority (on Linux a thread has its own nice value).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(err) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), DELIVERY_NICE)
    {
        tracing::debug!(error = %err, "cannot lower the webhook thread's priority");
    }
}

/// The nice value of the delivery thread (0 is normal, 19 the lowest).
#[cfg(target_os = "linux")]
const DELIVERY_NICE: i32 = 10;

/// Deletes delivery records older than the delivery log keeps.
async fn prune(db: &DatabaseConnection) -> Result<(), DbErr> {
    let cutoff = Utc::now() - chrono::Duration::days(DELIVERY_LOG_DAYS);
    webhook_deliveries::Entity::delete_many()
        .filter(webhook_deliveries::Column::At.lt(cutoff))
        .exec(db)
        .await?;
    Ok(())
}
