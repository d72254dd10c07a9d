//! Task rules: reading tasks and pages, and the types of writes. The writes themselves
//! (create, update, delete) are in `write/`.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::cursor;
use crate::auth::Viewer;
use crate::entities::project_members::Role;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::projects::access;

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
    pub(super) fn deleted(
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
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum UpdateOutcome {
    Updated { task: tasks::Model, merged: bool },
    Conflict(Conflict),
}

/// The result of `deleteTask`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum DeleteOutcome {
    Deleted(Uuid),
    Conflict(Box<Conflict>),
}

/// One live task the viewer can see.
pub async fn get(
    db: &DatabaseConnection,
    viewer: &Viewer,
    id: Uuid,
) -> Result<tasks::Model, AppError> {
    let task = tasks::Entity::find_by_id(id)
        .filter(tasks::Column::DeletedAt.is_null())
        .one(db)
        .await?
        .ok_or(AppError::NotFound("task"))?;
    // Not a member reads as "no such task"; anything else (an outage) stays what it is.
    match access::require(db, task.project_id, viewer, Role::Viewer).await {
        Ok(_) => Ok(task),
        Err(AppError::NotFound(_)) => Err(AppError::NotFound("task")),
        Err(other) => Err(other),
    }
}

/// A page of a project's live tasks, by (position, id). The caller has checked access.
pub async fn page(
    db: &DatabaseConnection,
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
    let mut rows = query.all(db).await?;
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
    db: &DatabaseConnection,
    project_id: Uuid,
    status: Option<TaskStatus>,
) -> Result<u64, AppError> {
    Ok(live_tasks(project_id, status).count(db).await?)
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

pub use super::write::{create, delete, update};
