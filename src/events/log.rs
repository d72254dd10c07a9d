//! Appending to and reading the event log.
//!
//! Writers go through a [`LogTxn`] (see [`super::txn`]), the only way to lock a project's log
//! and append. [`LogTxn::lock_project`]'s `UPDATE … RETURNING` bumps the project's counter and holds the
//! project row's lock until commit, so writers to one project take turns, each gets the next
//! number, and a rolled-back transaction gives its number back. Gap-free by construction,
//! and `MAX(seq)+1` is never used, so pruning old events never reuses a number.

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::payload::{EventPayload, UserSnapshot};
#[cfg(doc)]
use super::txn::LogTxn;
use crate::entities::events::{self, ActorVia, EventKind};
use crate::entities::{projects, tasks, users};

/// Proof that this transaction holds its project's log lock, with the seq it may write.
#[derive(Debug)]
pub struct SeqLock {
    project_id: Uuid,
    seq: i64,
    project: projects::Model,
}

impl SeqLock {
    /// The project as locked (its `last_seq` already counts this event).
    pub fn project(&self) -> &projects::Model {
        &self.project
    }
}

/// Locks the project's log for this transaction and reserves the next seq (see
/// [`LogTxn::lock_project`], the only caller).
pub(super) async fn lock_project(
    txn: &DatabaseTransaction,
    project_id: Uuid,
) -> Result<Option<SeqLock>, DbErr> {
    let updated = projects::Entity::update_many()
        .col_expr(
            projects::Column::LastSeq,
            Expr::col(projects::Column::LastSeq).add(1),
        )
        .filter(projects::Column::Id.eq(project_id))
        .filter(projects::Column::DeletedAt.is_null())
        .exec_with_returning(txn)
        .await?;
    Ok(updated.into_iter().next().map(|project| SeqLock {
        project_id,
        seq: project.last_seq,
        project,
    }))
}

/// Who caused an event, and through what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user.
    pub user_id: String,
    /// A session or an API token.
    pub via: ActorVia,
    /// The API token's name, when `via` is an API token.
    pub token_name: Option<String>,
}

/// An event about to be written.
#[derive(Debug)]
pub struct NewEvent {
    pub kind: EventKind,
    pub actor: Actor,
    pub task_id: Option<Uuid>,
    pub task: Option<tasks::Model>,
    pub changes: Option<Map<String, Value>>,
    /// Another user the event concerns (the member added or removed).
    pub subject_user_id: Option<String>,
    pub client_mutation_id: Option<String>,
}

impl NewEvent {
    /// An event of `kind` by `actor`, with nothing else set.
    pub fn new(kind: EventKind, actor: Actor) -> Self {
        Self {
            kind,
            actor,
            task_id: None,
            task: None,
            changes: None,
            subject_user_id: None,
            client_mutation_id: None,
        }
    }

    /// About `task`, as it is after the change.
    pub fn with_task(mut self, task: &tasks::Model) -> Self {
        self.task_id = Some(task.id);
        self.task = Some(task.clone());
        self
    }
}

/// Writes the event under `lock` (see [`LogTxn::append`], the only caller).
pub(super) async fn append(
    txn: &DatabaseTransaction,
    lock: SeqLock,
    event: NewEvent,
) -> Result<events::Model, DbErr> {
    let mut user_ids: Vec<String> = vec![event.actor.user_id.clone()];
    if let Some(task) = &event.task {
        user_ids.extend(task.user_ids().map(str::to_owned));
    }
    user_ids.extend(event.subject_user_id.iter().cloned());
    user_ids.sort();
    user_ids.dedup();
    let users: Vec<UserSnapshot> = users::Entity::find()
        .filter(users::Column::Id.is_in(user_ids))
        .all(txn)
        .await?
        .into_iter()
        .map(UserSnapshot::from)
        .collect();

    let payload = EventPayload {
        changes: event.changes,
        task: event.task,
        users,
    };
    let row = events::ActiveModel {
        project_id: Set(lock.project_id),
        seq: Set(lock.seq),
        kind: Set(event.kind),
        task_id: Set(event.task_id),
        actor_id: Set(event.actor.user_id),
        actor_via: Set(event.actor.via),
        actor_token_name: Set(event.actor.token_name),
        payload: Set(serde_json::to_value(&payload).map_err(|e| DbErr::Json(e.to_string()))?),
        client_mutation_id: Set(event.client_mutation_id),
        created_at: Set(Utc::now()),
        ..Default::default()
    };
    events::Entity::insert(row).exec_with_returning(txn).await
}

/// Events of a project with `seq > after`, ascending, at most `limit`.
pub async fn range<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    after: i64,
    limit: u64,
) -> Result<Vec<events::Model>, DbErr> {
    events::Entity::find()
        .filter(events::Column::ProjectId.eq(project_id))
        .filter(events::Column::Seq.gt(after))
        .order_by_asc(events::Column::Seq)
        .limit(limit)
        .all(db)
        .await
}

/// The task-update events of one task, oldest first (for the three-way merge).
pub async fn task_history<C: ConnectionTrait>(
    db: &C,
    project_id: Uuid,
    task_id: Uuid,
) -> Result<Vec<events::Model>, DbErr> {
    events::Entity::find()
        .filter(events::Column::ProjectId.eq(project_id))
        .filter(events::Column::TaskId.eq(task_id))
        .order_by_asc(events::Column::Seq)
        .all(db)
        .await
}
