//! A webhook's delivery log, redelivery and replay (OWNERs; API tokens need `ADMIN`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::{Map, json};
use uuid::Uuid;

use super::Webhooks;
use super::service::{WebhookView, find, lock_as_owner, record};
use crate::auth::{ApiScope, Viewer};
use crate::entities::events::EventKind;
use crate::entities::project_members::Role;
use crate::entities::{events, webhook_deliveries, webhook_redeliveries};
use crate::error::AppError;
use crate::events::txn::EventLog;
use crate::projects::access;

/// Most deliveries one page lists.
const MAX_PAGE: i32 = 200;
/// A page of the delivery log, newest first.
pub struct DeliveryPage {
    pub deliveries: Vec<webhook_deliveries::Model>,
    pub has_more: bool,
    pub end_cursor: Option<String>,
}

/// The webhook's delivery attempts, newest first; `after` is a previous page's `endCursor`.
pub async fn deliveries<C: ConnectionTrait>(
    db: &C,
    viewer: &Viewer,
    webhook_id: Uuid,
    first: i32,
    after: Option<&str>,
) -> Result<DeliveryPage, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let webhook = find(db, webhook_id).await?;
    access::require(db, webhook.project_id, viewer, Role::Owner).await?;
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(AppError::bad_input(
            "first",
            format!("first must be between 1 and {MAX_PAGE}"),
        ));
    }
    let mut query = webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::WebhookId.eq(webhook_id))
        .order_by_desc(webhook_deliveries::Column::Id)
        .limit(first as u64 + 1);
    if let Some(after) = after {
        let before = decode_cursor(after)
            .ok_or_else(|| AppError::bad_input("after", "after is not a cursor of this list"))?;
        query = query.filter(webhook_deliveries::Column::Id.lt(before));
    }
    let mut deliveries = query.all(db).await?;
    let has_more = deliveries.len() > first as usize;
    deliveries.truncate(first as usize);
    let end_cursor = deliveries.last().map(|d| encode_cursor(d.id));
    Ok(DeliveryPage {
        deliveries,
        has_more,
        end_cursor,
    })
}

/// Queues one event to be sent again (as a new message, with a new `webhook-id`), before
/// the webhook goes on with its cursor.
pub async fn redeliver(
    db: &sea_orm::DatabaseConnection,
    hooks: &Webhooks,
    viewer: &Viewer,
    webhook_id: Uuid,
    seq: i64,
) -> Result<bool, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let webhook = find(db, webhook_id).await?;
    let (project, _) = access::require(db, webhook.project_id, viewer, Role::Owner).await?;
    if seq < 1 || seq > project.last_seq {
        return Err(AppError::bad_input(
            "seq",
            format!(
                "seq must be between 1 and the project's last seq ({})",
                project.last_seq
            ),
        ));
    }
    let held = events::Entity::find()
        .filter(events::Column::ProjectId.eq(webhook.project_id))
        .filter(events::Column::Seq.eq(seq))
        .count(db)
        .await?;
    if held == 0 {
        return Err(AppError::CursorExpired(seq - 1));
    }
    webhook_redeliveries::ActiveModel {
        webhook_id: Set(webhook_id),
        seq: Set(seq),
        requested_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await?;
    hooks.changed();
    Ok(true)
}

/// Moves the cursor back so that delivery starts again at `from_seq` (inclusive), as new
/// messages; `CURSOR_EXPIRED` when the log no longer holds that event.
pub async fn replay(
    log: &EventLog,
    hooks: &Webhooks,
    viewer: &Viewer,
    webhook_id: Uuid,
    from_seq: i64,
) -> Result<WebhookView, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let current = find(log.db(), webhook_id).await?;
    let (txn, lock) = lock_as_owner(log, viewer, current.project_id).await?;
    let current = find(&*txn, webhook_id).await?;
    // The lock already counts the WEBHOOK_UPDATED event this replay writes.
    let head = lock.project().last_seq;
    if from_seq < 1 || from_seq > head {
        return Err(AppError::bad_input(
            "fromSeq",
            format!(
                "fromSeq must be between 1 and the project's last seq ({})",
                head - 1
            ),
        ));
    }
    let first = crate::events::log::range(&*txn, current.project_id, from_seq - 1, 1).await?;
    if first.first().is_none_or(|e| e.seq != from_seq) {
        return Err(AppError::CursorExpired(from_seq - 1));
    }
    let mut row = current.clone().into_active_model();
    row.cursor = Set(from_seq - 1);
    row.generation = Set(current.generation + 1);
    row.attempt = Set(0);
    row.failing_since = Set(None);
    row.next_attempt_at = Set(None);
    row.updated_at = Set(Utc::now());
    let webhook = row.update(&*txn).await?;
    let mut diff = Map::new();
    diff.insert("webhookId".into(), json!(webhook_id));
    diff.insert("replayFromSeq".into(), json!(from_seq));
    record(txn, lock, viewer, EventKind::WebhookUpdated, diff).await?;
    hooks.changed();
    Ok(WebhookView { webhook, head })
}

fn encode_cursor(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("delivery:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("delivery:")?
        .parse()
        .ok()
}
