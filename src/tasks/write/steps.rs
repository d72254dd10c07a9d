//! The steps task writes share: the project lock and access check, the task as it is under
//! the lock, receipts that make retries safe, and settling an answer that changed nothing.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect,
};
use uuid::Uuid;

use crate::auth::Viewer;
use crate::entities::project_members::Role;
use crate::entities::tasks;
use crate::error::AppError;
use crate::events::log::SeqLock;
use crate::events::txn::{EventLog, LogTxn};
use crate::idempotency;
use crate::projects::access;
use crate::tasks::conflicts::ConflictNotices;
use crate::tasks::service::{Conflict, DeleteOutcome, UpdateOutcome};

/// An answer that may be a conflict.
pub(super) trait Outcome {
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
pub(super) enum Answer<T> {
    /// A retry: the first answer, from its receipt.
    Replayed(T),
    /// A change, committed with its receipt.
    Committed(T),
    /// Nothing changed (a conflict or a no-op); the receipt is still to be written.
    Unchanged(T),
}

/// The first answer to this mutation, when it is a retry.
pub(super) async fn replayed<T: serde::de::DeserializeOwned>(
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
pub(super) async fn settle<T: serde::Serialize + Outcome>(
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
pub(super) struct TaskWrite {
    pub(super) txn: LogTxn,
    pub(super) lock: SeqLock,
    pub(super) current: tasks::Model,
    pub(super) project_id: Uuid,
}

/// Locks the task's project for writing (EDITOR) and reads the task under the lock.
pub(super) async fn begin_task_write(
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
pub(super) async fn project_of(
    db: &sea_orm::DatabaseConnection,
    task_id: Uuid,
) -> Result<Uuid, AppError> {
    tasks::Entity::find_by_id(task_id)
        .select_only()
        .column(tasks::Column::ProjectId)
        .into_tuple::<Uuid>()
        .one(db)
        .await?
        .ok_or(AppError::NotFound("task"))
}

pub(super) async fn task_in(txn: &DatabaseTransaction, id: Uuid) -> Result<tasks::Model, AppError> {
    tasks::Entity::find_by_id(id)
        .one(txn)
        .await?
        .ok_or(AppError::NotFound("task"))
}

/// Takes the project's log lock and checks the viewer may edit tasks. Non-members and
/// deleted projects read as `NOT_FOUND` for `what`.
pub(super) async fn lock_for_write(
    txn: &LogTxn,
    project_id: Uuid,
    viewer: &Viewer,
    what: &'static str,
) -> Result<SeqLock, AppError> {
    if !viewer.reaches(project_id) {
        return Err(AppError::NotFound(what));
    }
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

pub(super) fn check_base_version(base_version: Option<i32>, current: i32) -> Result<(), AppError> {
    match base_version {
        Some(base) if base < 1 || base > current => Err(AppError::bad_input(
            "baseVersion",
            format!("baseVersion must be between 1 and the task's version ({current})"),
        )),
        _ => Ok(()),
    }
}

/// Assignees must be members of the project.
pub(super) async fn ensure_assignable<C: ConnectionTrait>(
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

pub(super) async fn next_position<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
) -> Result<f64, AppError> {
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
pub(super) async fn save(
    txn: &DatabaseTransaction,
    next: &tasks::Model,
) -> Result<tasks::Model, AppError> {
    let row = tasks::ActiveModel::from(next.clone()).reset_all();
    Ok(row.update(txn).await?)
}
