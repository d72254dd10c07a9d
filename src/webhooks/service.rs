//! Managing a project's webhooks (OWNERs; API tokens need `ADMIN`). Every change is recorded in the project's log (`WEBHOOK_*`
//! events: who, when, through what), in the same transaction as the change.

use std::collections::BTreeSet;

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Webhooks, address, signing};
use crate::auth::{ApiScope, Viewer};
use crate::entities::events::EventKind;
use crate::entities::project_members::Role;
use crate::entities::{projects, webhooks};
use crate::error::AppError;
use crate::events::log::{NewEvent, SeqLock};
use crate::events::txn::{EventLog, LogTxn};
use crate::projects::access;

/// Most webhooks one project may have.
pub const MAX_PER_PROJECT: u64 = 20;
/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A webhook with its project's head, for `lag`.
#[derive(Debug, Clone)]
pub struct WebhookView {
    pub webhook: webhooks::Model,
    /// The project's last seq.
    pub head: i64,
}

/// What `createWebhook` asks for.
pub struct NewWebhook {
    pub project_id: Uuid,
    pub url: String,
    pub event_kinds: Vec<EventKind>,
    pub description: Option<String>,
}

/// What `updateWebhook` may change (absent: unchanged).
#[derive(Default)]
pub struct WebhookChanges {
    pub url: Option<String>,
    pub event_kinds: Option<Vec<EventKind>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Creates a webhook that receives the project's events from now on; returns it with its
/// signing secret, shown this once.
pub async fn create(
    log: &EventLog,
    hooks: &Webhooks,
    viewer: &Viewer,
    input: NewWebhook,
) -> Result<(WebhookView, String), AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let url = checked_url(hooks, &input.url).await?;
    let kinds = checked_kinds("input.eventKinds", input.event_kinds)?;
    let description = checked_description(input.description)?;

    let (txn, lock) = lock_as_owner(log, viewer, input.project_id).await?;
    let existing = webhooks::Entity::find()
        .filter(webhooks::Column::ProjectId.eq(input.project_id))
        .count(&*txn)
        .await?;
    if existing >= MAX_PER_PROJECT {
        return Err(AppError::bad_input(
            "input.projectId",
            format!("a project may have at most {MAX_PER_PROJECT} webhooks"),
        ));
    }
    let now = Utc::now();
    let secret = signing::generate();
    let id = Uuid::new_v4();
    let head = lock.project().last_seq;
    let webhook = webhooks::ActiveModel {
        id: Set(id),
        project_id: Set(input.project_id),
        url: Set(url.to_string()),
        event_kinds: Set(join_kinds(&kinds)),
        description: Set(description),
        secret: Set(secret.clone()),
        previous_secret: Set(None),
        previous_secret_until: Set(None),
        enabled: Set(true),
        disabled_reason: Set(None),
        created_by: Set(viewer.user_id.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        // Its own WEBHOOK_CREATED event is the last one it does not receive.
        cursor: Set(head),
        generation: Set(0),
        attempt: Set(0),
        failing_since: Set(None),
        next_attempt_at: Set(None),
        lease_owner: Set(None),
        lease_until: Set(None),
    }
    .insert(&*txn)
    .await?;
    let mut changes = Map::new();
    changes.insert("webhookId".into(), json!(id));
    changes.insert("urlHost".into(), json!(url.host_str()));
    changes.insert("eventKinds".into(), json!(kinds));
    record(txn, lock, viewer, EventKind::WebhookCreated, changes).await?;
    Ok((WebhookView { webhook, head }, secret))
}

/// The project's webhooks, oldest first.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    viewer: &Viewer,
    project_id: Uuid,
) -> Result<Vec<WebhookView>, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let (project, _) = access::require(db, project_id, viewer, Role::Owner).await?;
    Ok(webhooks::Entity::find()
        .filter(webhooks::Column::ProjectId.eq(project_id))
        .order_by_asc(webhooks::Column::CreatedAt)
        .order_by_asc(webhooks::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|webhook| WebhookView {
            webhook,
            head: project.last_seq,
        })
        .collect())
}

/// Changes a webhook's URL, kinds, description or `enabled`. Enabling a disabled webhook
/// clears its failure state: delivery resumes at its cursor at once.
pub async fn update(
    log: &EventLog,
    hooks: &Webhooks,
    viewer: &Viewer,
    id: Uuid,
    changes: WebhookChanges,
) -> Result<WebhookView, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let url = match &changes.url {
        Some(url) => Some(checked_url(hooks, url).await?),
        None => None,
    };
    let kinds = changes
        .event_kinds
        .map(|k| checked_kinds("input.eventKinds", k))
        .transpose()?;
    let description_given = changes.description.is_some();
    let description = changes
        .description
        .map(|d| checked_description(Some(d)))
        .transpose()?
        .flatten();

    let current = find(log.db(), id).await?;
    let (txn, lock) = lock_as_owner(log, viewer, current.project_id).await?;
    let current = find(&*txn, id).await?;
    let mut diff = Map::new();
    diff.insert("webhookId".into(), json!(id));
    let mut row = current.clone().into_active_model();
    if let Some(url) = url.filter(|u| u.as_str() != current.url) {
        diff.insert("urlHost".into(), json!(url.host_str()));
        row.url = Set(url.to_string());
    }
    if let Some(kinds) = kinds.filter(|k| join_kinds(k) != current.event_kinds) {
        row.event_kinds = Set(join_kinds(&kinds));
        diff.insert("eventKinds".into(), json!(kinds));
    }
    if description_given && description != current.description {
        diff.insert("description".into(), json!(description));
        row.description = Set(description);
    }
    if let Some(enabled) = changes.enabled.filter(|e| *e != current.enabled) {
        diff.insert("enabled".into(), json!(enabled));
        row.enabled = Set(enabled);
        row.disabled_reason = Set((!enabled).then(|| "disabled by an owner".to_owned()));
        if enabled {
            row.attempt = Set(0);
            row.failing_since = Set(None);
            row.next_attempt_at = Set(None);
        }
    }
    if diff.len() == 1 {
        txn.rollback().await?;
        let head = current_head(log.db(), current.project_id).await?;
        return Ok(WebhookView {
            webhook: current,
            head,
        });
    }
    row.updated_at = Set(Utc::now());
    let webhook = row.update(&*txn).await?;
    let head = lock.project().last_seq;
    record(txn, lock, viewer, EventKind::WebhookUpdated, diff).await?;
    hooks.changed();
    Ok(WebhookView { webhook, head })
}

/// Gives the webhook a new secret; the old one keeps signing beside it for `overlap`.
pub async fn rotate_secret(
    log: &EventLog,
    hooks: &Webhooks,
    viewer: &Viewer,
    id: Uuid,
    overlap: chrono::Duration,
) -> Result<(WebhookView, String), AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let current = find(log.db(), id).await?;
    let (txn, lock) = lock_as_owner(log, viewer, current.project_id).await?;
    let current = find(&*txn, id).await?;
    let secret = signing::generate();
    let now = Utc::now();
    let mut row = current.clone().into_active_model();
    row.previous_secret = Set(Some(current.secret.clone()));
    row.previous_secret_until = Set(Some(now + overlap));
    row.secret = Set(secret.clone());
    row.updated_at = Set(now);
    let webhook = row.update(&*txn).await?;
    let head = lock.project().last_seq;
    let mut diff = Map::new();
    diff.insert("webhookId".into(), json!(id));
    diff.insert("secretRotated".into(), json!(true));
    record(txn, lock, viewer, EventKind::WebhookUpdated, diff).await?;
    hooks.changed();
    Ok((WebhookView { webhook, head }, secret))
}

/// Deletes a webhook and its delivery log.
pub async fn delete(
    log: &EventLog,
    hooks: &Webhooks,
    viewer: &Viewer,
    id: Uuid,
) -> Result<bool, AppError> {
    viewer.require_scope(ApiScope::Admin)?;
    let current = find(log.db(), id).await?;
    let (txn, lock) = lock_as_owner(log, viewer, current.project_id).await?;
    webhooks::Entity::delete_by_id(id).exec(&*txn).await?;
    let mut diff = Map::new();
    diff.insert("webhookId".into(), json!(id));
    record(txn, lock, viewer, EventKind::WebhookDeleted, diff).await?;
    hooks.changed();
    Ok(true)
}

/// The kinds a webhook wants.
pub fn kinds_of(webhook: &webhooks::Model) -> Vec<EventKind> {
    webhook
        .event_kinds
        .split(',')
        .filter_map(|k| serde_json::from_value(Value::String(k.to_owned())).ok())
        .collect()
}

fn join_kinds(kinds: &[EventKind]) -> String {
    kinds
        .iter()
        .filter_map(|k| serde_json::to_value(k).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(",")
}

async fn checked_url(hooks: &Webhooks, raw: &str) -> Result<url::Url, AppError> {
    let allow = hooks.settings.allow_private;
    let url =
        address::parse(raw, allow).map_err(|e| AppError::bad_input("input.url", e.to_string()))?;
    address::check_resolved(&url, allow)
        .await
        .map_err(|e| AppError::bad_input("input.url", e.to_string()))?;
    Ok(url)
}

fn checked_kinds(field: &str, kinds: Vec<EventKind>) -> Result<Vec<EventKind>, AppError> {
    let mut seen = BTreeSet::new();
    let kinds: Vec<EventKind> = kinds
        .into_iter()
        .filter(|k| seen.insert(join_kinds(&[*k])))
        .collect();
    if kinds.is_empty() {
        return Err(AppError::bad_input(
            field,
            format!("{field} must name at least one event kind"),
        ));
    }
    Ok(kinds)
}

fn checked_description(description: Option<String>) -> Result<Option<String>, AppError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(AppError::bad_input(
            "input.description",
            format!("input.description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(d) if d.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// The webhook, or `NOT_FOUND`.
pub(super) async fn find<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<webhooks::Model, AppError> {
    webhooks::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("webhook"))
}

async fn current_head<C: ConnectionTrait>(db: &C, project_id: Uuid) -> Result<i64, AppError> {
    Ok(projects::Entity::find_by_id(project_id)
        .one(db)
        .await?
        .map_or(0, |p| p.last_seq))
}

/// Begins a log transaction holding the project's lock, when the viewer owns the project.
pub(super) async fn lock_as_owner(
    log: &EventLog,
    viewer: &Viewer,
    project_id: Uuid,
) -> Result<(LogTxn, SeqLock), AppError> {
    if !viewer.reaches(project_id) {
        return Err(AppError::NotFound("project"));
    }
    let txn = log.begin().await?;
    let lock = txn
        .lock_project(project_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    let role = access::role_of(&*txn, project_id, &viewer.user_id)
        .await?
        .ok_or(AppError::NotFound("project"))?;
    access::ensure_role(role, Role::Owner)?;
    Ok((txn, lock))
}

/// Appends the change's event and commits.
pub(super) async fn record(
    txn: LogTxn,
    lock: SeqLock,
    viewer: &Viewer,
    kind: EventKind,
    changes: Map<String, Value>,
) -> Result<(), AppError> {
    let mut event = NewEvent::new(kind, viewer.actor());
    event.changes = Some(changes);
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(())
}
