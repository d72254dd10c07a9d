//! Task writes: create, update (last-write-wins or merged against a base version) and
//! delete. Each takes the project's log lock first, so every check below it sees the state
//! its write will replace, and a retry with the same `clientMutationId` finds the first
//! answer's receipt.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect, Set,
};
use serde_json::Map;
use uuid::Uuid;

use super::conflicts::ConflictNotices;
use super::merge;
use super::service::{Conflict, ConflictReason, DeleteOutcome, NewTask, UpdateOutcome};
use crate::auth::Viewer;
use crate::entities::events::EventKind;
use crate::entities::project_members::Role;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::events::log::{self, NewEvent, SeqLock};
use crate::events::txn::{EventLog, LogTxn};
use crate::idempotency;
use crate::projects::access;

use super::patch::Patch;

/// An answer that may be a conflict.
trait Outcome {
    fn conflict(&self) -> Option<&Conflict>;
}

impl Outcome for UpdateOutcome {
    fn conflict(&self) -> Option<&Conflict> {
        match self {
            Self::Conflict(conflict) => Some(conflict),
            Self::Updated { .. } => None,
        }
    }
}

impl Outcome for DeleteOutcome {
    fn conflict(&self) -> Option<&Conflict> {
        match self {
            Self::Conflict(conflict) => Some(conflict),
            Self::Deleted(_) => None,
        }
    }
}

/// How a write's answer came about, for the receipt that makes retries safe.
enum Answer<T> {
    /// A retry: the first answer, from its receipt.
    Replayed(T),
    /// A change, committed with its receipt.
    Committed(T),
    /// Nothing changed (a conflict or a no-op); the receipt is still to be written.
    Unchanged(T),
}

/// Creates a task (EDITOR). Defaults: status TODO, empty description, priority 0, placed
/// after the project's last task.
pub async fn create(
    log: &EventLog,
    viewer: &Viewer,
    input: NewTask,
) -> Result<tasks::Model, AppError> {
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

    let txn = log.begin().await?;
    let lock = lock_for_write(&txn, input.project_id, viewer, "project").await?;
    let operation = format!("createTask:{}", input.project_id);
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
    let mut event = NewEvent::new(EventKind::TaskCreated, &viewer.user_id).with_task(&task);
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
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let operation = format!("updateTask:{id}");
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
    let mut event = NewEvent::new(EventKind::TaskUpdated, &viewer.user_id).with_task(&task);
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
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let operation = format!("deleteTask:{id}");
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
    let mut event = NewEvent::new(EventKind::TaskDeleted, &viewer.user_id);
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

/// The first answer to this mutation, when it is a retry.
async fn replayed<T: serde::de::DeserializeOwned>(
    txn: &DatabaseTransaction,
    viewer: &Viewer,
    client_mutation_id: Option<&str>,
    operation: &str,
) -> Result<Option<T>, AppError> {
    match client_mutation_id {
        Some(cmid) => idempotency::lookup(txn, &viewer.user_id, cmid, operation).await,
        None => Ok(None),
    }
}

/// Writes the receipt of an answer that changed nothing (the lock's transaction was rolled
/// back, since committing it would spend a seq without an event).
/// Also pushes a conflict to the writer's `conflicts` subscriptions (not again on a retry).
async fn settle<T: serde::Serialize + Outcome>(
    log: &EventLog,
    conflicts: &ConflictNotices,
    viewer: &Viewer,
    client_mutation_id: Option<&str>,
    operation: &str,
    answer: Answer<T>,
) -> Result<T, AppError> {
    match answer {
        Answer::Replayed(outcome) | Answer::Committed(outcome) => Ok(outcome),
        Answer::Unchanged(outcome) => {
            if let Some(conflict) = outcome.conflict() {
                conflicts.publish(conflict.project_id, &viewer.user_id, conflict);
            }
            if let Some(cmid) = client_mutation_id {
                idempotency::record(log.db(), &viewer.user_id, cmid, operation, &outcome).await?;
            }
            Ok(outcome)
        }
    }
}

/// A write to an existing task in progress: the transaction, the project's log lock, and
/// the task (possibly a tombstone) as it is under that lock.
struct TaskWrite {
    txn: LogTxn,
    lock: SeqLock,
    current: tasks::Model,
    project_id: Uuid,
}

/// Locks the task's project for writing (EDITOR) and reads the task under the lock.
async fn begin_task_write(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
) -> Result<TaskWrite, AppError> {
    let project_id = project_of(log.db(), id).await?;
    let txn = log.begin().await?;
    let lock = lock_for_write(&txn, project_id, viewer, "task").await?;
    let current = task_in(&txn, id).await?;
    Ok(TaskWrite {
        txn,
        lock,
        current,
        project_id,
    })
}

/// The project of a task (live or tombstone), or `NOT_FOUND` for an id that never existed.
async fn project_of(db: &sea_orm::DatabaseConnection, task_id: Uuid) -> Result<Uuid, AppError> {
    tasks::Entity::find_by_id(task_id)
        .select_only()
        .column(tasks::Column::ProjectId)
        .into_tuple::<Uuid>()
        .one(db)
        .await?
        .ok_or(AppError::NotFound("task"))
}

async fn task_in(txn: &DatabaseTransaction, id: Uuid) -> Result<tasks::Model, AppError> {
    tasks::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("task"))
}

/// Takes the project's log lock and checks the viewer may edit tasks. Non-members and
/// deleted projects read as `NOT_FOUND` for `what`.
async fn lock_for_write(
    txn: &LogTxn,
    project_id: Uuid,
    viewer: &Viewer,
    what: &'static str,
) -> Result<SeqLock, AppError> {
    let lock = txn
        .lock_project(project_id)
        .await?
        .ok_or(AppError::NotFound(what))?;
    let role = access::role_of(txn, project_id, &viewer.user_id)
        .await?
        .ok_or(AppError::NotFound(what))?;
    access::ensure_role(role, Role::Editor)?;
    Ok(lock)
}

fn check_base_version(base_version: Option<i32>, current: i32) -> Result<(), AppError> {
    match base_version {
        Some(base) if base < 1 || base > current => Err(AppError::bad_input(
            "baseVersion",
            format!("baseVersion must be between 1 and the task's version ({current})"),
        )),
        _ => Ok(()),
    }
}

/// Assignees must be members of the project.
async fn ensure_assignable<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    user_id: &str,
    field: &str,
) -> Result<(), AppError> {
    match access::role_of(db, project_id, user_id).await? {
        Some(_) => Ok(()),
        None => Err(AppError::bad_input(
            field,
            format!("{field} must be a member of the project"),
        )),
    }
}

async fn next_position<C: ConnectionTrait>(db: &C, project_id: Uuid) -> Result<f64, AppError> {
    let max: Option<Option<f64>> = tasks::Entity::find()
        .select_only()
        .column_as(Expr::col(tasks::Column::Position).max(), "max_position")
        .filter(tasks::Column::ProjectId.eq(project_id))
        .filter(tasks::Column::DeletedAt.is_null())
        .into_tuple()
        .one(db)
        .await?;
    Ok(max.flatten().map_or(1.0, |m| m.floor() + 1.0))
}

/// Writes every column of `next` (the row is locked, so nothing changed it since it was read).
async fn save(txn: &DatabaseTransaction, next: &tasks::Model) -> Result<tasks::Model, AppError> {
    let row = tasks::ActiveModel::from(next.clone()).reset_all();
    Ok(row.update(txn).await?)
}
