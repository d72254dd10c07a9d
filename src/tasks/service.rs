//! Task rules: reading pages, creating, updating (last-write-wins or merged against a base
//! version) and deleting. Writes take the project's log lock first, so every check below it
//! sees the state its write will replace.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::cursor;
use super::merge;
use super::patch::Patch;
use crate::auth::Viewer;
use crate::entities::events::EventKind;
use crate::entities::project_members::Role;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::events::log::{self, NewEvent, SeqLock};
use crate::projects::access;
use crate::state::AppState;

/// Largest page of `Project.tasks`.
pub const MAX_PAGE: i32 = 500;

/// A page of tasks in board order.
#[derive(Debug)]
pub struct TaskPage {
    pub tasks: Vec<tasks::Model>,
    pub has_next_page: bool,
    pub project_id: Uuid,
    pub status: Option<TaskStatus>,
}

/// A new task, before validation.
#[derive(Debug)]
pub struct NewTask {
    pub project_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
    pub position: Option<f64>,
    pub priority: Option<i32>,
    pub due_at: Option<DateTime<Utc>>,
    pub assignee_id: Option<String>,
    pub client_mutation_id: Option<String>,
}

/// Why a write was not applied.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum, serde::Serialize, serde::Deserialize,
)]
pub enum ConflictReason {
    /// The task changed since `baseVersion` in a field this write also changes.
    StaleVersion,
    /// The task was deleted.
    TaskDeleted,
}

/// A write that lost: what the client needs to roll its optimistic change back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    pub task_id: Uuid,
    pub project_id: Uuid,
    pub reason: ConflictReason,
    pub server_task: Option<tasks::Model>,
    pub your_patch: Map<String, Value>,
    pub conflicting_fields: Vec<String>,
    pub client_mutation_id: Option<String>,
}

impl Conflict {
    /// A write to a deleted task.
    fn deleted(
        task_id: Uuid,
        project_id: Uuid,
        your_patch: Map<String, Value>,
        client_mutation_id: Option<String>,
    ) -> Self {
        Self {
            task_id,
            project_id,
            reason: ConflictReason::TaskDeleted,
            server_task: None,
            your_patch,
            conflicting_fields: Vec::new(),
            client_mutation_id,
        }
    }
}

/// The result of `updateTask`.
#[derive(Debug)]
pub enum UpdateOutcome {
    Updated { task: tasks::Model, merged: bool },
    Conflict(Conflict),
}

/// The result of `deleteTask`.
#[derive(Debug)]
pub enum DeleteOutcome {
    Deleted(Uuid),
    Conflict(Box<Conflict>),
}

/// One live task the viewer can see.
pub async fn get(state: &AppState, viewer: &Viewer, id: Uuid) -> Result<tasks::Model, AppError> {
    let task = tasks::Entity::find_by_id(id)
        .filter(tasks::Column::DeletedAt.is_null())
        .one(&state.db)
        .await?
        .ok_or(AppError::NotFound("task"))?;
    access::require(&state.db, task.project_id, &viewer.user_id, Role::Viewer)
        .await
        .map_err(|_| AppError::NotFound("task"))?;
    Ok(task)
}

/// A page of a project's live tasks, by (position, id). The caller has checked access.
pub async fn page(
    state: &AppState,
    project_id: Uuid,
    status: Option<TaskStatus>,
    first: i32,
    after: Option<&str>,
) -> Result<TaskPage, AppError> {
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(AppError::bad_input(
            "first",
            format!("first must be between 0 and {MAX_PAGE}"),
        ));
    }
    let mut query = live_tasks(project_id, status)
        .order_by_asc(tasks::Column::Position)
        .order_by_asc(tasks::Column::Id)
        .limit(first as u64 + 1);
    if let Some(after) = after {
        let (position, id) = cursor::decode(after)
            .ok_or_else(|| AppError::bad_input("after", "after is not a valid cursor"))?;
        query = query.filter(
            Condition::any()
                .add(tasks::Column::Position.gt(position))
                .add(
                    Condition::all()
                        .add(tasks::Column::Position.eq(position))
                        .add(tasks::Column::Id.gt(id)),
                ),
        );
    }
    let mut rows = query.all(&state.db).await?;
    let has_next_page = rows.len() > first as usize;
    rows.truncate(first as usize);
    Ok(TaskPage {
        tasks: rows,
        has_next_page,
        project_id,
        status,
    })
}

/// How many live tasks a project has (with `status`, when given).
pub async fn count(
    state: &AppState,
    project_id: Uuid,
    status: Option<TaskStatus>,
) -> Result<u64, AppError> {
    Ok(live_tasks(project_id, status).count(&state.db).await?)
}

fn live_tasks(project_id: Uuid, status: Option<TaskStatus>) -> sea_orm::Select<tasks::Entity> {
    let mut query = tasks::Entity::find()
        .filter(tasks::Column::ProjectId.eq(project_id))
        .filter(tasks::Column::DeletedAt.is_null());
    if let Some(status) = status {
        query = query.filter(tasks::Column::Status.eq(status));
    }
    query
}

/// Creates a task (EDITOR). Defaults: status TODO, empty description, priority 0, placed
/// after the project's last task.
pub async fn create(
    state: &AppState,
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

    let txn = state.db.begin().await?;
    let lock = lock_for_write(&txn, input.project_id, viewer, "project").await?;
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
    let mut event = NewEvent::new(EventKind::TaskCreated, &viewer.user_id).with_task(&task);
    event.client_mutation_id = client_mutation_id;
    let committed = log::append(&txn, lock, event).await?;
    txn.commit().await?;
    state.realtime.committed(committed);
    Ok(task)
}

/// Applies a patch (EDITOR). Without `base_version` the last write wins; with an older one
/// the patch is merged when the fields it changes did not change since. A conflict is also
/// pushed to the writer's `conflicts` subscriptions.
pub async fn update(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    patch: Patch,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<UpdateOutcome, AppError> {
    let outcome = apply_update(state, viewer, id, patch, base_version, client_mutation_id).await?;
    if let UpdateOutcome::Conflict(conflict) = &outcome {
        state
            .realtime
            .conflict(conflict.project_id, &viewer.user_id, conflict);
    }
    Ok(outcome)
}

async fn apply_update(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    patch: Patch,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<UpdateOutcome, AppError> {
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let TaskWrite {
        txn,
        lock,
        current,
        project_id,
    } = begin_task_write(state, viewer, id).await?;
    if current.deleted_at.is_some() {
        return Ok(UpdateOutcome::Conflict(Conflict::deleted(
            id,
            project_id,
            patch.to_json(),
            client_mutation_id,
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
            return Ok(UpdateOutcome::Conflict(Conflict {
                task_id: id,
                project_id,
                reason: ConflictReason::StaleVersion,
                server_task: Some(current),
                your_patch: patch.to_json(),
                conflicting_fields: conflicting,
                client_mutation_id,
            }));
        }
    }
    if changes.is_empty() {
        // A patch that restates the task changes nothing: no version, no event.
        return Ok(UpdateOutcome::Updated {
            task: current,
            merged,
        });
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
    let mut event = NewEvent::new(EventKind::TaskUpdated, &viewer.user_id).with_task(&task);
    event.changes = Some(changes);
    event.client_mutation_id = client_mutation_id;
    let committed = log::append(&txn, lock, event).await?;
    txn.commit().await?;
    state.realtime.committed(committed);
    Ok(UpdateOutcome::Updated { task, merged })
}

/// Deletes a task (EDITOR), leaving a tombstone. A stale `base_version` is a conflict:
/// someone changed the task after the deleter last saw it.
pub async fn delete(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<DeleteOutcome, AppError> {
    let outcome = apply_delete(state, viewer, id, base_version, client_mutation_id).await?;
    if let DeleteOutcome::Conflict(conflict) = &outcome {
        state
            .realtime
            .conflict(conflict.project_id, &viewer.user_id, conflict);
    }
    Ok(outcome)
}

async fn apply_delete(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    base_version: Option<i32>,
    client_mutation_id: Option<String>,
) -> Result<DeleteOutcome, AppError> {
    let client_mutation_id =
        crate::validate::client_mutation_id("clientMutationId", client_mutation_id)?;
    let TaskWrite {
        txn,
        lock,
        current,
        project_id,
    } = begin_task_write(state, viewer, id).await?;
    if current.deleted_at.is_some() {
        return Ok(DeleteOutcome::Conflict(Box::new(Conflict::deleted(
            id,
            project_id,
            Map::new(),
            client_mutation_id,
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
        return Ok(DeleteOutcome::Conflict(Box::new(Conflict {
            task_id: id,
            project_id,
            reason: ConflictReason::StaleVersion,
            server_task: Some(current),
            your_patch: Map::new(),
            conflicting_fields,
            client_mutation_id,
        })));
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
    event.client_mutation_id = client_mutation_id;
    let committed = log::append(&txn, lock, event).await?;
    txn.commit().await?;
    state.realtime.committed(committed);
    Ok(DeleteOutcome::Deleted(id))
}

/// A write to an existing task in progress: the transaction, the project's log lock, and
/// the task (possibly a tombstone) as it is under that lock.
struct TaskWrite {
    txn: DatabaseTransaction,
    lock: SeqLock,
    current: tasks::Model,
    project_id: Uuid,
}

/// Locks the task's project for writing (EDITOR) and reads the task under the lock.
async fn begin_task_write(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
) -> Result<TaskWrite, AppError> {
    let project_id = project_of(state, id).await?;
    let txn = state.db.begin().await?;
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
async fn project_of(state: &AppState, task_id: Uuid) -> Result<Uuid, AppError> {
    tasks::Entity::find_by_id(task_id)
        .select_only()
        .column(tasks::Column::ProjectId)
        .into_tuple::<Uuid>()
        .one(&state.db)
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
    txn: &DatabaseTransaction,
    project_id: Uuid,
    viewer: &Viewer,
    what: &'static str,
) -> Result<SeqLock, AppError> {
    let lock = log::lock_project(txn, project_id)
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
