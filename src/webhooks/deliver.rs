//! The deliverer: finds webhooks with work, claims each with a lease, and sends its events in
//! order, one attempt at a time (see the module docs of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::send::{self, Message, Outcome};
use super::service::kinds_of;
use super::{DELIVERY_LOG_DAYS, Webhooks, payload};
use crate::entities::{events, projects, webhook_deliveries, webhook_redeliveries, webhooks};
use crate::events::log;

/// How often old delivery records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Events read from the log at a time.
const BATCH: u64 = 100;

impl Webhooks {
    /// Runs the deliverer until `shutdown`.
    pub fn start(self: &Arc<Self>, db: DatabaseConnection, shutdown: CancellationToken) {
        if self.settings.concurrency == 0 {
            tracing::info!(
                "webhook delivery is off on this instance (TASKNEST_WEBHOOK_CONCURRENCY=0)"
            );
            return;
        }
        tokio::spawn(self.clone().run(db, shutdown));
    }

    async fn run(self: Arc<Self>, db: DatabaseConnection, shutdown: CancellationToken) {
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
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
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
                let worker = Worker {
                    hooks: self.clone(),
                    db: db.clone(),
                    id,
                    shutdown: shutdown.clone(),
                };
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

    fn lease_end(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.settings.lease).unwrap_or_default()
    }
}

fn lease_free(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(webhooks::Column::LeaseUntil.is_null())
        .add(webhooks::Column::LeaseUntil.lt(now))
}

/// Delivers one claimed webhook until it has nothing to send, must wait, or lost its lease.
struct Worker {
    hooks: Arc<Webhooks>,
    db: DatabaseConnection,
    id: Uuid,
    shutdown: CancellationToken,
}

/// What the worker does after a step.
enum Next {
    Continue,
    Stop,
}

impl Worker {
    async fn run(self) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.step().await {
                Ok(Next::Continue) => {}
                Ok(Next::Stop) => break,
                Err(err) => {
                    tracing::warn!(error = %err, webhook = %self.id, "webhook delivery step failed");
                    break;
                }
            }
        }
        if let Err(err) = self.release().await {
            tracing::warn!(error = %err, webhook = %self.id, "cannot release a webhook lease");
        }
    }

    /// Renews the lease and sends the next thing: an asked-for redelivery, else the event
    /// after the cursor.
    async fn step(&self) -> Result<Next, DbErr> {
        if !self.renew().await? {
            return Ok(Next::Stop);
        }
        let found = webhooks::Entity::find_by_id(self.id)
            .find_also_related(projects::Entity)
            .one(&self.db)
            .await?;
        let Some((webhook, Some(project))) = found else {
            return Ok(Next::Stop);
        };
        if !webhook.enabled {
            return Ok(Next::Stop);
        }
        let redelivery = webhook_redeliveries::Entity::find()
            .filter(webhook_redeliveries::Column::WebhookId.eq(self.id))
            .order_by_asc(webhook_redeliveries::Column::Id)
            .one(&self.db)
            .await?;
        if let Some(redelivery) = redelivery {
            self.redeliver(&webhook, redelivery).await?;
            return Ok(Next::Continue);
        }
        if webhook.next_attempt_at.is_some_and(|at| at > Utc::now()) {
            return Ok(Next::Stop);
        }
        let batch = log::range(&self.db, webhook.project_id, webhook.cursor, BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(Next::Stop);
        };
        let wanted = kinds_of(&webhook);
        let Some(event) = batch.iter().find(|e| wanted.contains(&e.kind)) else {
            // Nothing in this batch is wanted: move past it without sending.
            return Ok(if self.advance(last.seq, false).await? {
                Next::Continue
            } else {
                Next::Stop
            });
        };
        let id = message_id(&webhook, event.seq);
        let attempt = webhook.attempt + 1;
        let outcome = self.send(&webhook, event, &id, attempt).await;
        match outcome {
            (Outcome::Delivered { .. }, record) => {
                self.hooks
                    .metrics
                    .webhook_lag
                    .get_or_create(&crate::metrics::WebhookLabels {
                        webhook: webhook.id.to_string(),
                    })
                    .set(project.last_seq - event.seq);
                self.log(record, None).await?;
                Ok(if self.advance(event.seq, true).await? {
                    Next::Continue
                } else {
                    Next::Stop
                })
            }
            (Outcome::Gone, record) => {
                self.log(record, None).await?;
                self.disable("the endpoint answered 410 Gone").await?;
                Ok(Next::Stop)
            }
            (Outcome::Failed { error, .. }, record) => {
                let now = Utc::now();
                let since = webhook.failing_since.unwrap_or(now);
                let give_up = chrono::Duration::from_std(self.hooks.settings.give_up_after)
                    .unwrap_or_default();
                if now - since >= give_up {
                    self.log(record, None).await?;
                    self.disable(&format!(
                        "failing since {} (last error: {error})",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .await?;
                } else {
                    let next = now
                        + chrono::Duration::from_std(self.hooks.settings.backoff(attempt))
                            .unwrap_or_default();
                    self.log(record, Some(next)).await?;
                    self.fenced()
                        .col_expr(webhooks::Column::Attempt, Expr::value(attempt))
                        .col_expr(webhooks::Column::FailingSince, Expr::value(Some(since)))
                        .col_expr(webhooks::Column::NextAttemptAt, Expr::value(Some(next)))
                        .exec(&self.db)
                        .await?;
                }
                Ok(Next::Stop)
            }
        }
    }

    /// One attempt at `event`, with its span and metrics; returns the outcome and the
    /// delivery record to write.
    async fn send(
        &self,
        webhook: &webhooks::Model,
        event: &events::Model,
        id: &str,
        attempt: i32,
    ) -> (Outcome, webhook_deliveries::ActiveModel) {
        let span = tracing::info_span!(
            "webhook.deliver",
            webhook = %webhook.id,
            project = %webhook.project_id,
            seq = event.seq,
            attempt,
            status = tracing::field::Empty,
        );
        let body = payload::body(event);
        let now = Utc::now();
        let mut secrets = vec![webhook.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&webhook.previous_secret, webhook.previous_secret_until)
            && until > now
        {
            secrets.push(previous);
        }
        let message = Message {
            url: &webhook.url,
            id,
            body: &body,
            secrets: &secrets,
        };
        let settings = &self.hooks.settings;
        let (outcome, took) = send::attempt(
            &self.hooks.client,
            settings.allow_private,
            settings.timeout,
            &message,
        )
        .instrument(span.clone())
        .await;
        if let Some(status) = outcome.status() {
            span.record("status", status);
        }
        self.hooks
            .metrics
            .webhook_deliveries
            .get_or_create(&crate::metrics::OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        self.hooks
            .metrics
            .webhook_attempt_duration
            .observe(took.as_secs_f64());
        let error = match &outcome {
            Outcome::Failed { error, .. } => Some(error.clone()),
            _ => None,
        };
        let record = webhook_deliveries::ActiveModel {
            webhook_id: Set(webhook.id),
            seq: Set(event.seq),
            attempt: Set(attempt),
            message_id: Set(id.to_owned()),
            status_code: Set(outcome.status().map(i32::from)),
            duration_ms: Set(Some(i32::try_from(took.as_millis()).unwrap_or(i32::MAX))),
            error: Set(error),
            at: Set(now),
            next_attempt_at: Set(None),
            ..Default::default()
        };
        (outcome, record)
    }

    /// Sends an asked-for event again, once, as a new message, and takes it off the queue.
    async fn redeliver(
        &self,
        webhook: &webhooks::Model,
        redelivery: webhook_redeliveries::Model,
    ) -> Result<(), DbErr> {
        let event = events::Entity::find()
            .filter(events::Column::ProjectId.eq(webhook.project_id))
            .filter(events::Column::Seq.eq(redelivery.seq))
            .one(&self.db)
            .await?;
        if let Some(event) = event {
            let id = format!("{}_x{}", message_id(webhook, event.seq), redelivery.id);
            let (_, record) = self.send(webhook, &event, &id, 1).await;
            self.log(record, None).await?;
        }
        webhook_redeliveries::Entity::delete_by_id(redelivery.id)
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn log(
        &self,
        mut record: webhook_deliveries::ActiveModel,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), DbErr> {
        record.next_attempt_at = Set(next);
        webhook_deliveries::Entity::insert(record)
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// An update of this webhook that applies only while this instance holds the lease.
    fn fenced(&self) -> sea_orm::UpdateMany<webhooks::Entity> {
        webhooks::Entity::update_many()
            .filter(webhooks::Column::Id.eq(self.id))
            .filter(webhooks::Column::LeaseOwner.eq(self.hooks.instance))
    }

    /// Moves the cursor to `seq` (and, after a delivery, clears the failure state); false
    /// when the lease was lost meanwhile.
    async fn advance(&self, seq: i64, delivered: bool) -> Result<bool, DbErr> {
        let mut update = self
            .fenced()
            .col_expr(webhooks::Column::Cursor, Expr::value(seq))
            .filter(webhooks::Column::Cursor.lt(seq));
        if delivered {
            update = update
                .col_expr(webhooks::Column::Attempt, Expr::value(0))
                .col_expr(
                    webhooks::Column::FailingSince,
                    Expr::value(None::<DateTime<Utc>>),
                )
                .col_expr(
                    webhooks::Column::NextAttemptAt,
                    Expr::value(None::<DateTime<Utc>>),
                );
        }
        Ok(update.exec(&self.db).await?.rows_affected == 1)
    }

    async fn disable(&self, reason: &str) -> Result<(), DbErr> {
        tracing::warn!(webhook = %self.id, reason, "webhook disabled");
        self.fenced()
            .col_expr(webhooks::Column::Enabled, Expr::value(false))
            .col_expr(webhooks::Column::DisabledReason, Expr::value(Some(reason)))
            .col_expr(
                webhooks::Column::NextAttemptAt,
                Expr::value(None::<DateTime<Utc>>),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn renew(&self) -> Result<bool, DbErr> {
        let renewed = self
            .fenced()
            .col_expr(
                webhooks::Column::LeaseUntil,
                Expr::value(Some(self.hooks.lease_end())),
            )
            .exec(&self.db)
            .await?;
        Ok(renewed.rows_affected == 1)
    }

    async fn release(&self) -> Result<(), DbErr> {
        self.fenced()
            .col_expr(webhooks::Column::LeaseOwner, Expr::value(None::<Uuid>))
            .col_expr(
                webhooks::Column::LeaseUntil,
                Expr::value(None::<DateTime<Utc>>),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }
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

/// Deletes delivery records older than the delivery log keeps.
async fn prune(db: &DatabaseConnection) -> Result<(), DbErr> {
    let cutoff = Utc::now() - chrono::Duration::days(DELIVERY_LOG_DAYS);
    webhook_deliveries::Entity::delete_many()
        .filter(webhook_deliveries::Column::At.lt(cutoff))
        .exec(db)
        .await?;
    Ok(())
}
