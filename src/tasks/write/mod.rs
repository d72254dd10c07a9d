//! Task writes: create, update (last-write-wins or merged against a base version) and
//! delete. Each takes the project's log lock first, so every check below it sees the state
//! its write will replace, and a retry with the same `clientMutationId` finds the first
//! answer's receipt.
//!
//! On PostgreSQL the common case of each is first tried in one round trip (`one_trip`);
//! what it leaves to the general path is done here.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, Set};
use serde_json::Map;
use uuid::Uuid;

use super::conflicts::ConflictNotices;
use super::merge;
use super::patch::Patch;
use super::service::{Conflict, ConflictReason, DeleteOutcome, NewTask, UpdateOutcome};
use crate::auth::{ApiScope, Viewer};
use crate::entities::events::EventKind;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::events::log::{self, NewEvent};
use crate::events::txn::EventLog;
use crate::idempotency;

mod one_trip;
mod steps;

use steps::{
    Answer, TaskWrite, begin_task_write, check_base_version, ensure_assignable, lock_for_write,
    next_position, replayed, save, settle,
};

/// Creates a task (EDITOR). Defaults: status TODO, empty description, priority 0, placed
/// after the project's last task.
pub async fn create(
    log: &EventLog,
    viewer: &Viewer,
    input: NewTask,
) -> Result<tasks::Model, AppError> {
    viewer.require_scope(ApiScope::Write)?;
    let title = crate::validate::title("input.title", &input.title)?;
    let description =
        crate::validate::description("input.description", input.description.unwrap_or_default())?;
    let priority = crate::validate::priority("input.priority", input.priority)?;
    let position = input
        .position
        .map(|p| crate::validate::position("input.position", p))
        .transpose()?;
    let client_mutation_id =
        crate::validate::client_mutation_id("input.clientMutationId", input.client_mutation_id)?;

    let operation = format!("createTask:{}", input.project_id);
    if one_trip::available(log) {
        let creation = one_trip::Creation {
            project_id: input.project_id,
            title: &title,
            description: &description,
            status: input.status.unwrap_or(TaskStatus::Todo),
            position,
            priority,
            due_at: input.due_at,
            assignee_id: input.assignee_id.as_deref(),
        };
        let cmid = client_mutation_id.as_deref();
        if let Some(task) = one_trip::create(log, viewer, creation, cmid, &operation).await? {
            return Ok(task);
        }
    }
    let txn = log.begin().await?;
    let lock = lock_for_write(&txn, input.project_id, viewer, "project").await?;
    if let Some(first) = replayed(&txn, viewer, client_mutation_id.as_deref(), &operation).await? {
        return Ok(first);
    }
    if let Some(assignee) = &input.assignee_id {
        ensure_assignable(&txn, input.project_id, assignee, "input.assigneeId").await?;
    }
    let position = match position {
        Some(p) => p,
        None => next_position(&txn, input.project_id).await?,
    };
    let now = Utc::now();
    let task = tasks::ActiveModel {
        id: Set(Uuid::new_v4()),
        project_id: Set(input.project_id),
        title: Set(title),
        description: Set(description),
        status: Set(input.status.unwrap_or(TaskStatus::Todo)),
        position: Set(position),
        priority: Set(priority),
        due_at: Set(input.due_at),
        assignee_id: Set(input.assignee_id),
        version: Set(1),
        created_by: Set(viewer.user_id.clone()),
        updated_by: Set(viewer.user_id.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    }
    .insert(&txn)
    .await?;
    if let Some(cmid) = &client_mutation_id {
        idempotency::record(&txn, &viewer.user_id, cmid, &operation, &task).await?;
    }
    let mut event = NewEvent::new(EventKind::TaskCreated, viewer.actor()).with_task(&task);
    event.client_mutation_id = client_mutation_id;
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(task)
}

/// Applies a patch (EDITOR). Without `base_version` the last write wins; with an older one
/// the patch is merged when the fields it changes did not change since. A conflict is also
/// pushed to the writer's `conflicts` subscriptions.
pub async fn update(
    log: &EventLog,
    conflicts: &ConflictNotices,
    viewer: &Viewer,
    id: Uuid,
    patch: Patch,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<UpdateOutcome, AppError> {
    viewer.require_scope(ApiScope::Write)?;
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let operation = format!("updateTask:{id}");
    if one_trip::available(log) {
        let cmid = client_mutation_id.as_deref();
        let fast = one_trip::update(log, viewer, id, &patch, base_version, cmid, &operation);
        if let Some(outcome) = fast.await? {
            return Ok(outcome);
        }
    }
    let answer = apply_update(
        log,
        viewer,
        id,
        patch,
        base_version,
        client_mutation_id.clone(),
        &operation,
    )
    .await?;
    settle(
        log,
        conflicts,
        viewer,
        client_mutation_id.as_deref(),
        &operation,
        answer,
    )
    .await
}

async fn apply_update(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
    patch: Patch,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
    operation: &str,
) -> Result<Answer<UpdateOutcome>, AppError> {
    let TaskWrite {
        txn,
        lock,
        current,
        project_id,
    } = begin_task_write(log, viewer, id).await?;
    if let Some(first) = replayed(&txn, viewer, client_mutation_id.as_deref(), operation).await? {
        return Ok(Answer::Replayed(first));
    }
    if current.deleted_at.is_some() {
        return Ok(Answer::Unchanged(UpdateOutcome::Conflict(
            Conflict::deleted(id, project_id, patch.to_json(), client_mutation_id),
        )));
    }
    check_base_version(base_version, current.version)?;
    let changes = patch.changes_against(&current);
    let merged = base_version.is_some_and(|base| base < current.version);
    if merged && !changes.is_empty() {
        let base = base_version.unwrap_or(current.version);
        let history = log::task_history(&txn, project_id, id).await?;
        let changed = merge::changed_since(&history, base, current.version);
        let conflicting = merge::conflicting_fields(changes.keys(), changed.as_ref());
        if !conflicting.is_empty() {
            return Ok(Answer::Unchanged(UpdateOutcome::Conflict(Conflict {
                task_id: id,
                project_id,
                reason: ConflictReason::StaleVersion,
                server_task: Some(current),
                your_patch: patch.to_json(),
                conflicting_fields: conflicting,
                client_mutation_id,
            })));
        }
    }
    if changes.is_empty() {
        // A patch that restates the task changes nothing: no version, no event.
        return Ok(Answer::Unchanged(UpdateOutcome::Updated {
            task: current,
            merged,
        }));
    }
    if let Some(Some(assignee)) = &patch.assignee_id {
        ensure_assignable(&txn, project_id, assignee, "patch.assigneeId").await?;
    }

    let mut next = current.clone();
    patch.apply(&mut next);
    next.version = current.version + 1;
    next.updated_by = viewer.user_id.clone();
    next.updated_at = Utc::now();
    let task = save(&txn, &next).await?;
    let outcome = UpdateOutcome::Updated {
        task: task.clone(),
        merged,
    };
    if let Some(cmid) = &client_mutation_id {
        idempotency::record(&txn, &viewer.user_id, cmid, operation, &outcome).await?;
    }
    let mut event = NewEvent::new(EventKind::TaskUpdated, viewer.actor()).with_task(&task);
    event.changes = Some(changes);
    event.client_mutation_id = client_mutation_id;
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(Answer::Committed(outcome))
}

/// Deletes a task (EDITOR), leaving a tombstone. A stale `base_version` is a conflict:
/// someone changed the task after the deleter last saw it.
pub async fn delete(
    log: &EventLog,
    conflicts: &ConflictNotices,
    viewer: &Viewer,
    id: Uuid,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<DeleteOutcome, AppError> {
    viewer.require_scope(ApiScope::Write)?;
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let operation = format!("deleteTask:{id}");
    if one_trip::available(log) {
        let cmid = client_mutation_id.as_deref();
        let fast = one_trip::delete(log, viewer, id, base_version, cmid, &operation);
        if let Some(outcome) = fast.await? {
            return Ok(outcome);
        }
    }
    let answer = apply_delete(
        log,
        viewer,
        id,
        base_version,
        client_mutation_id.clone(),
        &operation,
    )
    .await?;
    settle(
        log,
        conflicts,
        viewer,
        client_mutation_id.as_deref(),
        &operation,
        answer,
    )
    .await
}

async fn apply_delete(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
    operation: &str,
) -> Result<Answer<DeleteOutcome>, AppError> {
    let TaskWrite {
        txn,
        lock,
        current,
        project_id,
    } = begin_task_write(log, viewer, id).await?;
    if let Some(first) = replayed(&txn, viewer, client_mutation_id.as_deref(), operation).await? {
        return Ok(Answer::Replayed(first));
    }
    if current.deleted_at.is_some() {
        return Ok(Answer::Unchanged(DeleteOutcome::Conflict(Box::new(
            Conflict::deleted(id, project_id, Map::new(), client_mutation_id),
        ))));
    }
    check_base_version(base_version, current.version)?;
    if let Some(base) = base_version.filter(|b| *b < current.version) {
        let history = log::task_history(&txn, project_id, id).await?;
        let changed = merge::changed_since(&history, base, current.version);
        let conflicting_fields = match changed {
            Some(fields) => fields.into_iter().collect(),
            None => super::patch::FIELDS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        };
        return Ok(Answer::Unchanged(DeleteOutcome::Conflict(Box::new(
            Conflict {
                task_id: id,
                project_id,
                reason: ConflictReason::StaleVersion,
                server_task: Some(current),
                your_patch: Map::new(),
                conflicting_fields,
                client_mutation_id,
            },
        ))));
    }
    let now = Utc::now();
    let mut next = current.clone();
    next.version = current.version + 1;
    next.updated_by = viewer.user_id.clone();
    next.updated_at = now;
    next.deleted_at = Some(now);
    let task = save(&txn, &next).await?;
    let mut event = NewEvent::new(EventKind::TaskDeleted, viewer.actor());
    event.task_id = Some(id);
    // The tombstone is kept in the payload (for the merge's version history) but the
    // GraphQL event shows `task: null` for deletions.
    event.task = Some(task);
    let outcome = DeleteOutcome::Deleted(id);
    if let Some(cmid) = &client_mutation_id {
        idempotency::record(&txn, &viewer.user_id, cmid, operation, &outcome).await?;
    }
    event.client_mutation_id = client_mutation_id;
    txn.append(lock, event).await?;
    txn.commit().await?;
    Ok(Answer::Committed(outcome))
}
