//! PostgreSQL's one-round-trip task writes. The common create, update against the current
//! version and delete are done whole by a server-side function (installed by the migration
//! `task_write_functions`) in one statement and its implicit transaction: the same lock,
//! checks, receipt and event as the general path, without eleven sequential round trips
//! before the event can leave.
//!
//! A function handles only the plain case and returns no row, having changed nothing, for
//! anything else (a retry, a stale `baseVersion` to merge, a deleted task, a no-op, a check
//! that fails); the caller then takes the general path, which holds every rule. So the
//! uncommon cases cost one extra round trip and keep a single definition.

use sea_orm::{ActiveEnum, DatabaseBackend, Statement, Value};
use uuid::Uuid;

use super::super::patch::Patch;
use super::super::service::{DeleteOutcome, UpdateOutcome};
use crate::auth::Viewer;
use crate::entities::events;
use crate::entities::tasks::{self, TaskStatus};
use crate::error::AppError;
use crate::events::payload::EventPayload;
use crate::events::txn::EventLog;

/// Whether `log` can take the one-round-trip path.
pub(super) fn available(log: &EventLog) -> bool {
    sea_orm::ConnectionTrait::get_database_backend(log.db()) == DatabaseBackend::Postgres
}

/// A validated new task, as the fast path writes it.
pub(super) struct Creation<'a> {
    pub project_id: Uuid,
    pub title: &'a str,
    pub description: &'a str,
    pub status: TaskStatus,
    pub position: Option<f64>,
    pub priority: i32,
    pub due_at: Option<chrono::DateTime<chrono::Utc>>,
    pub assignee_id: Option<&'a str>,
}

/// Creates the task in one round trip, or `None` when the general path must decide.
pub(super) async fn create(
    log: &EventLog,
    viewer: &Viewer,
    task: Creation<'_>,
    client_mutation_id: Option<&str>,
    operation: &str,
) -> Result<Option<tasks::Model>, AppError> {
    let mut values: Vec<Value> = vec![
        task.project_id.into(),
        Uuid::new_v4().into(),
        task.title.into(),
        task.description.into(),
        task.status.to_value().into(),
        task.position.into(),
        task.priority.into(),
        task.due_at.into(),
        task.assignee_id.map(str::to_owned).into(),
    ];
    values.extend(writer(viewer, client_mutation_id, operation));
    let call = statement(
        "SELECT * FROM tasknest_create_task($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13::jsonb, $14, $15)",
        values,
    );
    let Some(event) = log.append_in_one_statement(call).await? else {
        return Ok(None);
    };
    Ok(Some(task_of(&event)?))
}

/// Applies the patch in one round trip when `base_version` is absent or current, or `None`
/// when the general path must decide.
pub(super) async fn update(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
    patch: &Patch,
    base_version: Option<i32>,
    client_mutation_id: Option<&str>,
    operation: &str,
) -> Result<Option<UpdateOutcome>, AppError> {
    let mut values: Vec<Value> = vec![
        id.into(),
        serde_json::Value::Object(patch.to_json()).into(),
        base_version.into(),
    ];
    values.extend(writer(viewer, client_mutation_id, operation));
    let call = statement(
        "SELECT * FROM tasknest_update_task($1, $2::jsonb, $3, $4, $5, $6, $7::jsonb, $8, $9)",
        values,
    );
    let Some(event) = log.append_in_one_statement(call).await? else {
        return Ok(None);
    };
    Ok(Some(UpdateOutcome::Updated {
        task: task_of(&event)?,
        merged: false,
    }))
}

/// Deletes the task in one round trip when `base_version` is absent or current, or `None`
/// when the general path must decide.
pub(super) async fn delete(
    log: &EventLog,
    viewer: &Viewer,
    id: Uuid,
    base_version: Option<i32>,
    client_mutation_id: Option<&str>,
    operation: &str,
) -> Result<Option<DeleteOutcome>, AppError> {
    let mut values: Vec<Value> = vec![id.into(), base_version.into()];
    values.extend(writer(viewer, client_mutation_id, operation));
    let call = statement(
        "SELECT * FROM tasknest_delete_task($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
        values,
    );
    Ok(log
        .append_in_one_statement(call)
        .await?
        .map(|_| DeleteOutcome::Deleted(id)))
}

/// The arguments every function ends with: who writes (user, how, token name, the projects
/// its token reaches), the clientMutationId and the operation its receipt is for.
fn writer(viewer: &Viewer, client_mutation_id: Option<&str>, operation: &str) -> [Value; 6] {
    let actor = viewer.actor();
    let reach = viewer
        .grant()
        .and_then(|grant| grant.project_ids.as_ref())
        .map(|ids| serde_json::json!(ids));
    [
        actor.user_id.into(),
        actor.via.to_value().into(),
        actor.token_name.into(),
        reach.into(),
        client_mutation_id.map(str::to_owned).into(),
        operation.into(),
    ]
}

fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// The task as the event records it (the function wrote it in the model's JSON shape).
fn task_of(event: &events::Model) -> Result<tasks::Model, AppError> {
    serde_json::from_value::<EventPayload>(event.payload.clone())
        .ok()
        .and_then(|payload| payload.task)
        .ok_or_else(|| {
            AppError::Internal(anyhow::anyhow!(
                "task write function returned an event without its task"
            ))
        })
}
