//! GraphQL for tasks: `Task`, the `TaskConnection` page, the write results, and the task
//! queries and mutations.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, ID, Json, Object, Result, SimpleObject, Union};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::cursor;
use super::input::{CreateTaskInput, TaskPatch};
use super::service::{
    self, Conflict, ConflictReason, DeleteOutcome, NewTask, TaskPage, UpdateOutcome,
};
use crate::auth;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::events::UserSnapshot;
use crate::ids::{parse_user_id, parse_uuid};
use crate::state::AppState;
use crate::users::{User, prefetch_users, resolve_user};

/// A card on a project's board.
#[derive(Clone)]
pub struct Task {
    task: Arc<tasks::Model>,
    /// Users embedded in an event payload, so that event subscribers need no user reads.
    users: Option<Arc<HashMap<String, UserSnapshot>>>,
}

impl Task {
    /// A task whose users are loaded on demand.
    pub fn new(task: tasks::Model) -> Self {
        Self {
            task: Arc::new(task),
            users: None,
        }
    }

    /// A task from an event, with the users the event embeds.
    pub fn with_users(task: tasks::Model, users: Arc<HashMap<String, UserSnapshot>>) -> Self {
        Self {
            task: Arc::new(task),
            users: Some(users),
        }
    }

    async fn user(&self, ctx: &Context<'_>, id: &str) -> Result<User, AppError> {
        resolve_user(ctx, id, self.users.as_deref()).await
    }
}

/// A card on a project's board.
#[Object]
impl Task {
    /// The task's id.
    async fn id(&self) -> ID {
        self.task.id.into()
    }

    /// The project the task belongs to.
    async fn project_id(&self) -> ID {
        self.task.project_id.into()
    }

    /// Title, 1–200 characters, stored trimmed.
    async fn title(&self) -> &str {
        &self.task.title
    }

    /// Free-text description (empty when none), up to 20,000 characters.
    async fn description(&self) -> &str {
        &self.task.description
    }

    /// Where the task stands.
    async fn status(&self) -> TaskStatus {
        self.task.status
    }

    /// Sort key on the board: tasks are listed by ascending position.
    async fn position(&self) -> f64 {
        self.task.position
    }

    /// 0 (none) to 4 (urgent).
    async fn priority(&self) -> Option<i32> {
        Some(self.task.priority)
    }

    /// When the task is due.
    async fn due_at(&self) -> Option<DateTime<Utc>> {
        self.task.due_at
    }

    /// Who the task is assigned to.
    async fn assignee(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match &self.task.assignee_id {
            Some(id) => Ok(Some(self.user(ctx, id).await?)),
            None => Ok(None),
        }
    }

    /// 1 on create, +1 on every accepted change: pass it as `baseVersion` when writing.
    async fn version(&self) -> i32 {
        self.task.version
    }

    /// When the task was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.task.created_at
    }

    /// When the task last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.task.updated_at
    }

    /// Who created the task.
    async fn created_by(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(self.user(ctx, &self.task.created_by).await?)
    }

    /// Who changed the task last.
    async fn updated_by(&self, ctx: &Context<'_>) -> Result<User> {
        Ok(self.user(ctx, &self.task.updated_by).await?)
    }
}

/// Paging information of a connection.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether more tasks follow this page.
    has_next_page: bool,
    /// Cursor of the last task of this page: pass it as `after` for the next page.
    end_cursor: Option<String>,
}

/// A task and its cursor.
#[derive(SimpleObject)]
pub struct TaskEdge {
    /// Opaque, stable cursor of this task.
    cursor: String,
    /// The task.
    node: Task,
}

/// A page of a project's tasks, in board order.
pub struct TaskConnection(TaskPage);

impl TaskConnection {
    /// One batch for every user the page names.
    async fn prefetch(&self, ctx: &Context<'_>) -> Result<(), AppError> {
        let ids = self
            .0
            .tasks
            .iter()
            .flat_map(|t| t.user_ids().map(str::to_owned).collect::<Vec<_>>());
        prefetch_users(ctx, ids).await
    }
}

impl From<TaskPage> for TaskConnection {
    fn from(page: TaskPage) -> Self {
        Self(page)
    }
}

/// A page of a project's tasks, in board order.
#[Object]
impl TaskConnection {
    /// The tasks of this page with their cursors.
    async fn edges(&self, ctx: &Context<'_>) -> Result<Vec<TaskEdge>> {
        self.prefetch(ctx).await?;
        Ok(self
            .0
            .tasks
            .iter()
            .map(|t| TaskEdge {
                cursor: cursor::encode(t.position, t.id),
                node: Task::new(t.clone()),
            })
            .collect())
    }

    /// The tasks of this page.
    async fn nodes(&self, ctx: &Context<'_>) -> Result<Vec<Task>> {
        self.prefetch(ctx).await?;
        Ok(self.0.tasks.iter().cloned().map(Task::new).collect())
    }

    /// Paging information.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_next_page: self.0.has_next_page,
            end_cursor: self
                .0
                .tasks
                .last()
                .map(|t| cursor::encode(t.position, t.id)),
        }
    }

    /// How many tasks match, over all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
        let state = AppState::from_ctx(ctx)?;
        let count = service::count(&state.db, self.0.project_id, self.0.status).await?;
        Ok(i64::try_from(count).unwrap_or(i64::MAX))
    }
}

/// A change that was applied.
#[derive(SimpleObject)]
pub struct TaskUpdated {
    /// The task after the change.
    task: Task,
    /// True when the change was applied on top of a newer version than `baseVersion`
    /// (nobody had changed the fields it touches).
    merged: bool,
}

/// A task that was deleted.
#[derive(SimpleObject)]
pub struct TaskDeleted {
    /// The deleted task's id.
    task_id: ID,
}

/// A write that was not applied, and what the server holds instead: roll the optimistic
/// change back to `serverTask`.
#[derive(SimpleObject, Clone)]
pub struct TaskConflict {
    /// The task written to.
    task_id: ID,
    /// Why the write lost.
    reason: ConflictReason,
    /// The task as the server has it now; null when it was deleted.
    server_task: Option<Task>,
    /// The change that was not applied, as sent (`{}` for a delete).
    your_patch: Json<Value>,
    /// The fields that changed since `baseVersion` and clash with this write.
    conflicting_fields: Vec<String>,
    /// Echoed from the mutation.
    client_mutation_id: Option<String>,
}

impl From<Conflict> for TaskConflict {
    fn from(c: Conflict) -> Self {
        Self {
            task_id: c.task_id.into(),
            reason: c.reason,
            server_task: c.server_task.map(Task::new),
            your_patch: Json(Value::Object(c.your_patch)),
            conflicting_fields: c.conflicting_fields,
            client_mutation_id: c.client_mutation_id,
        }
    }
}

/// The outcome of `updateTask`.
#[derive(Union)]
pub enum TaskUpdateResult {
    /// Applied.
    Updated(TaskUpdated),
    /// Not applied.
    Conflict(TaskConflict),
}

/// The outcome of `deleteTask`.
#[derive(Union)]
pub enum TaskDeleteResult {
    /// Deleted.
    Deleted(TaskDeleted),
    /// Not deleted.
    Conflict(TaskConflict),
}

/// Queries about tasks.
#[derive(Default)]
pub struct TaskQuery;

#[Object]
impl TaskQuery {
    /// One live task; `NOT_FOUND` unless the viewer is a member of its project.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> Result<Task> {
        let viewer = auth::viewer(ctx)?;
        let id = parse_uuid("id", &id)?;
        Ok(Task::new(
            service::get(&AppState::from_ctx(ctx)?.db, viewer, id).await?,
        ))
    }
}

/// Mutations of tasks.
#[derive(Default)]
pub struct TaskMutation;

#[Object]
impl TaskMutation {
    /// Creates a task (EDITOR or OWNER).
    async fn create_task(&self, ctx: &Context<'_>, input: CreateTaskInput) -> Result<Task> {
        let viewer = auth::viewer(ctx)?;
        let new = NewTask {
            project_id: parse_uuid("input.projectId", &input.project_id)?,
            title: input.title,
            description: input.description,
            status: input.status,
            position: input.position,
            priority: input.priority,
            due_at: input.due_at,
            assignee_id: input
                .assignee_id
                .map(|id| parse_user_id("input.assigneeId", &id))
                .transpose()?,
            client_mutation_id: input.client_mutation_id,
        };
        Ok(Task::new(
            service::create(&AppState::from_ctx(ctx)?.events, viewer, new).await?,
        ))
    }

    /// Changes a task (EDITOR or OWNER). Without `baseVersion` the last write wins. With
    /// the version the client last saw, a write on top of newer changes is merged when it
    /// touches none of the fields they changed, and is a `TaskConflict` otherwise.
    async fn update_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        patch: TaskPatch,
        #[graphql(desc = "The task version the change was made on.")] base_version: Option<i32>,
        #[graphql(desc = "Echoed on the resulting event or conflict.")] client_mutation_id: Option<
            String,
        >,
    ) -> Result<TaskUpdateResult> {
        let viewer = auth::viewer(ctx)?;
        let id = parse_uuid("id", &id)?;
        let patch = patch.validate()?;
        let state = AppState::from_ctx(ctx)?;
        let outcome = service::update(
            &state.events,
            &state.conflicts,
            viewer,
            id,
            patch,
            base_version,
            client_mutation_id,
        )
        .await?;
        Ok(match outcome {
            UpdateOutcome::Updated { task, merged } => TaskUpdateResult::Updated(TaskUpdated {
                task: Task::new(task),
                merged,
            }),
            UpdateOutcome::Conflict(c) => TaskUpdateResult::Conflict(c.into()),
        })
    }

    /// Deletes a task (EDITOR or OWNER). With a `baseVersion` older than the task's version
    /// it is a `TaskConflict`: someone changed the task after the deleter saw it.
    async fn delete_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "The task version the deleter last saw.")] base_version: Option<i32>,
        #[graphql(desc = "Echoed on the resulting event or conflict.")] client_mutation_id: Option<
            String,
        >,
    ) -> Result<TaskDeleteResult> {
        let viewer = auth::viewer(ctx)?;
        let id = parse_uuid("id", &id)?;
        let state = AppState::from_ctx(ctx)?;
        let outcome = service::delete(
            &state.events,
            &state.conflicts,
            viewer,
            id,
            base_version,
            client_mutation_id,
        )
        .await?;
        Ok(match outcome {
            DeleteOutcome::Deleted(task_id) => TaskDeleteResult::Deleted(TaskDeleted {
                task_id: task_id.into(),
            }),
            DeleteOutcome::Conflict(c) => TaskDeleteResult::Conflict((*c).into()),
        })
    }
}
