//! One claimed webhook's delivery: its events in order, one attempt at a time, with the
//! lease kept and every write fenced on it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::deliver::{BATCH, LEASE_MARGIN, message_id};
use super::send::{self, Message, Outcome};
use super::service::kinds_of;
use super::{Webhooks, payload};
use crate::entities::{events, projects, webhook_deliveries, webhook_redeliveries, webhooks};
use crate::events::log;

/// Delivers one claimed webhook until it has nothing to send for a while, must wait for a
/// retry, or lost its lease. It reads the webhook row and a batch of events at a time and,
/// per delivered event, writes only the delivery record and the cursor; it renews the lease
/// only when less than an attempt's worth of it is left.
pub(super) struct Worker {
    hooks: Arc<Webhooks>,
    db: DatabaseConnection,
    id: Uuid,
    shutdown: CancellationToken,
    /// Until when this worker's lease surely lasts (its own clock, set when renewed).
    lease_until: tokio::time::Instant,
    /// The webhook row as last read, and when.
    cached: Option<(webhooks::Model, tokio::time::Instant)>,
    /// The project's head as last seen (for the lag metric).
    head: i64,
    /// Moves when the service changed a webhook on this instance.
    changes: tokio::sync::watch::Receiver<u64>,
}

/// What the worker does after a batch.
enum Next {
    Continue,
    /// Nothing to send now: wait a little for more before letting the webhook go.
    Idle,
    Stop,
}

impl Worker {
    /// A worker for the webhook `id`, just claimed by this instance.
    pub(super) fn new(
        hooks: Arc<Webhooks>,
        db: DatabaseConnection,
        id: Uuid,
        shutdown: CancellationToken,
    ) -> Self {
        let changes = hooks.changes.subscribe();
        Self {
            hooks,
            db,
            id,
            shutdown,
            // Just claimed: due for renewal, so the first check renews.
            lease_until: tokio::time::Instant::now(),
            cached: None,
            head: 0,
            changes,
        }
    }

    /// Delivers until there is nothing to do for a while, then lets the webhook go.
    pub(super) async fn run(mut self) {
        let mut commits = self.hooks.commits.subscribe();
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.batch().await {
                Ok(Next::Continue) => idle_since = None,
                Ok(Next::Stop) => break,
                Ok(Next::Idle) => {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.hooks.settings.linger() {
                        break;
                    }
                    tokio::select! {
                        () = self.shutdown.cancelled() => break,
                        _ = commits.changed() => {}
                        () = tokio::time::sleep(self.hooks.settings.poll_interval) => {}
                    }
                }
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

    /// Sends what is due: asked-for redeliveries, then the events after the cursor, in
    /// order, until one fails or the batch ends.
    async fn batch(&mut self) -> Result<Next, DbErr> {
        if !self.keep_lease().await? {
            return Ok(Next::Stop);
        }
        // The row (and the redelivery queue) is read again when a change was made on this
        // instance, or after a poll interval for changes made elsewhere; between, each
        // delivery costs one read of the log and two writes.
        let stale = self
            .cached
            .as_ref()
            .is_none_or(|(_, at)| at.elapsed() >= self.hooks.settings.poll_interval);
        if stale || self.changes.has_changed().unwrap_or(true) {
            self.changes.mark_unchanged();
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
            self.head = project.last_seq;
            self.cached = Some((webhook, tokio::time::Instant::now()));
            let redeliveries = webhook_redeliveries::Entity::find()
                .filter(webhook_redeliveries::Column::WebhookId.eq(self.id))
                .order_by_asc(webhook_redeliveries::Column::Id)
                .limit(BATCH)
                .all(&self.db)
                .await?;
            if !redeliveries.is_empty() {
                let webhook = self.webhook().clone();
                for redelivery in redeliveries {
                    if !self.keep_lease().await? {
                        return Ok(Next::Stop);
                    }
                    self.redeliver(&webhook, redelivery).await?;
                }
                // Look at the queue again before going on.
                self.cached = None;
                return Ok(Next::Continue);
            }
        }
        let webhook = self.webhook().clone();
        if webhook.next_attempt_at.is_some_and(|at| at > Utc::now()) {
            return Ok(Next::Stop);
        }
        let batch = log::range(&self.db, webhook.project_id, webhook.cursor, BATCH).await?;
        // A change to the webhook (a rotated secret, new kinds) is announced after its
        // commit; an event read here may have been committed after that change, so if one
        // was announced meanwhile the row is read again before anything is sent with it.
        if self.changes.has_changed().unwrap_or(false) {
            return Ok(Next::Continue);
        }
        let Some(last) = batch.last() else {
            return Ok(Next::Idle);
        };
        self.head = Ord::max(self.head, last.seq);
        let wanted = kinds_of(&webhook);
        let mut failures = webhook.attempt;
        let mut cursor = webhook.cursor;
        for event in batch.iter().filter(|e| wanted.contains(&e.kind)) {
            if !self.keep_lease().await? {
                return Ok(Next::Stop);
            }
            let id = message_id(&webhook, event.seq);
            let attempt = failures + 1;
            match self.send(&webhook, event, &id, attempt).await {
                (Outcome::Delivered { .. }, record) => {
                    self.log(record, None).await?;
                    if !self.advance(&webhook, event.seq, failures > 0).await? {
                        return Ok(Next::Stop);
                    }
                    cursor = event.seq;
                    failures = 0;
                    self.moved_to(cursor);
                    self.hooks
                        .metrics
                        .webhook_lag
                        .get_or_create(&crate::metrics::WebhookLabels {
                            webhook: webhook.id.to_string(),
                        })
                        .set(Ord::max(self.head - event.seq, 0));
                }
                (Outcome::Gone, record) => {
                    self.log(record, None).await?;
                    self.disable("the endpoint answered 410 Gone").await?;
                    return Ok(Next::Stop);
                }
                (Outcome::Failed { error, .. }, record) => {
                    let since = if failures > 0 {
                        webhook.failing_since
                    } else {
                        None
                    };
                    self.failed(record, attempt, since, &error).await?;
                    return Ok(Next::Stop);
                }
            }
        }
        // Unwanted events at the end of the batch are passed over without sending.
        if last.seq > cursor {
            if !self.advance(&webhook, last.seq, false).await? {
                return Ok(Next::Stop);
            }
            self.moved_to(last.seq);
        }
        Ok(Next::Continue)
    }

    /// The cached row (loaded by [`Self::batch`] before any use).
    fn webhook(&self) -> &webhooks::Model {
        &self.cached.as_ref().expect("loaded before use").0
    }

    /// Mirrors a successful cursor move in the cached row.
    fn moved_to(&mut self, seq: i64) {
        if let Some((webhook, _)) = &mut self.cached {
            webhook.cursor = seq;
            webhook.attempt = 0;
            webhook.failing_since = None;
            webhook.next_attempt_at = None;
        }
    }

    /// Records a failed attempt, then schedules the next one, or disables the webhook when
    /// it has been failing for longer than the give-up time.
    async fn failed(
        &self,
        record: webhook_deliveries::ActiveModel,
        attempt: i32,
        failing_since: Option<DateTime<Utc>>,
        error: &str,
    ) -> Result<(), DbErr> {
        let now = Utc::now();
        let since = failing_since.unwrap_or(now);
        let give_up =
            chrono::Duration::from_std(self.hooks.settings.give_up_after).unwrap_or_default();
        if now - since >= give_up {
            self.log(record, None).await?;
            let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            return self
                .disable(&format!("failing since {since} (last error: {error})"))
                .await;
        }
        let next = now
            + chrono::Duration::from_std(self.hooks.settings.backoff(attempt)).unwrap_or_default();
        self.log(record, Some(next)).await?;
        self.fenced()
            .col_expr(webhooks::Column::Attempt, Expr::value(attempt))
            .col_expr(webhooks::Column::FailingSince, Expr::value(Some(since)))
            .col_expr(webhooks::Column::NextAttemptAt, Expr::value(Some(next)))
            .exec(&self.db)
            .await?;
        Ok(())
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

    /// Moves the cursor to `seq` (and clears the failure state when `recovered`); false
    /// when the lease was lost, the webhook was disabled, or a replay moved the cursor
    /// meanwhile (the generation changed): the worker then stops, and the next claim starts
    /// from the row as it is.
    async fn advance(
        &self,
        webhook: &webhooks::Model,
        seq: i64,
        recovered: bool,
    ) -> Result<bool, DbErr> {
        let mut update = self
            .fenced()
            .col_expr(webhooks::Column::Cursor, Expr::value(seq))
            .filter(webhooks::Column::Cursor.lt(seq))
            .filter(webhooks::Column::Generation.eq(webhook.generation))
            .filter(webhooks::Column::Enabled.eq(true));
        if recovered {
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

    /// Makes sure the lease lasts at least one more attempt, renewing it when it might not;
    /// false when it was lost (another instance took over).
    async fn keep_lease(&mut self) -> Result<bool, DbErr> {
        let needed = self.hooks.settings.timeout + LEASE_MARGIN;
        if self.lease_until > tokio::time::Instant::now() + needed {
            return Ok(true);
        }
        let renewed_at = tokio::time::Instant::now();
        let renewed = self
            .fenced()
            .col_expr(
                webhooks::Column::LeaseUntil,
                Expr::value(Some(self.hooks.lease_end())),
            )
            .exec(&self.db)
            .await?;
        self.lease_until = renewed_at + self.hooks.settings.lease;
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
