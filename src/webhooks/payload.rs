//! The JSON body of a delivery, built from the event row alone (its payload embeds the task
//! and the users it names), so a delivery reads nothing else.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use crate::entities::events::{self, EventKind};
use crate::entities::tasks;
use crate::events::payload::EventPayload;

/// The body for `event`: `type`, `projectId`, `seq`, `occurredAt`, `actor`, `actorVia`,
/// `actorTokenName`, `changes`, `task` (as `ProjectEvent.task`, null for deletions) and
/// `clientMutationId`.
pub fn body(event: &events::Model) -> Vec<u8> {
    let payload: EventPayload = serde_json::from_value(event.payload.clone()).unwrap_or_default();
    let user = |id: &str| -> Value {
        let name = payload.user(id).map_or(id, |u| u.name.as_str());
        json!({ "id": id, "name": name })
    };
    let task = match (&payload.task, event.kind) {
        (_, EventKind::TaskDeleted) | (None, _) => Value::Null,
        (Some(task), _) => task_json(task, &user),
    };
    let body = json!({
        "type": event.kind,
        "projectId": event.project_id,
        "seq": event.seq,
        "occurredAt": event.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "actor": user(&event.actor_id),
        "actorVia": event.actor_via,
        "actorTokenName": event.actor_token_name,
        "changes": payload.changes,
        "task": task,
        "clientMutationId": event.client_mutation_id,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A task in the shape of the GraphQL `Task` (users as `{id, name}`).
fn task_json(task: &tasks::Model, user: &dyn Fn(&str) -> Value) -> Value {
    json!({
        "id": task.id,
        "projectId": task.project_id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "position": task.position,
        "priority": task.priority,
        "dueAt": task.due_at.map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "assignee": task.assignee_id.as_deref().map(user),
        "version": task.version,
        "createdAt": task.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "updatedAt": task.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "createdBy": user(&task.created_by),
        "updatedBy": user(&task.updated_by),
    })
}
