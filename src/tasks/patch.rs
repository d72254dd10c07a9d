//! A validated change to a task, and its comparison with the task's current state.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::entities::tasks::{self, TaskStatus};

/// The fields of a task a patch may change, by their GraphQL input names.
pub const FIELDS: [&str; 7] = [
    "title",
    "description",
    "status",
    "position",
    "priority",
    "dueAt",
    "assigneeId",
];

/// A validated patch. `None` leaves a field alone; for nullable fields `Some(None)` clears.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<TaskStatus>,
    pub position: Option<f64>,
    pub priority: Option<i32>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub assignee_id: Option<Option<String>>,
}

/// How times appear in JSON, the same as the `DateTime` scalar.
pub fn time_json(time: &DateTime<Utc>) -> Value {
    json!(time.to_rfc3339())
}

impl Patch {
    /// Every field the patch sets, with its value, as given.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        if let Some(v) = &self.title {
            map.insert("title".into(), json!(v));
        }
        if let Some(v) = &self.description {
            map.insert("description".into(), json!(v));
        }
        if let Some(v) = &self.status {
            map.insert("status".into(), json!(v));
        }
        if let Some(v) = self.position {
            map.insert("position".into(), json!(v));
        }
        if let Some(v) = self.priority {
            map.insert("priority".into(), json!(v));
        }
        if let Some(v) = &self.due_at {
            map.insert("dueAt".into(), v.as_ref().map_or(Value::Null, time_json));
        }
        if let Some(v) = &self.assignee_id {
            map.insert("assigneeId".into(), json!(v));
        }
        map
    }

    /// The fields whose value would change if applied to `task`, with their new values.
    /// Empty when the patch restates what the task already holds.
    pub fn changes_against(&self, task: &tasks::Model) -> Map<String, Value> {
        let mut changes = self.to_json();
        changes.retain(|field, _| match field.as_str() {
            "title" => self.title.as_ref() != Some(&task.title),
            "description" => self.description.as_ref() != Some(&task.description),
            "status" => self.status != Some(task.status),
            "position" => self.position != Some(task.position),
            "priority" => self.priority != Some(task.priority),
            "dueAt" => self.due_at != Some(task.due_at),
            "assigneeId" => self.assignee_id.as_ref() != Some(&task.assignee_id),
            _ => true,
        });
        changes
    }

    /// Writes the patch into `task` (fields only; version and audit columns are the
    /// caller's).
    pub fn apply(&self, task: &mut tasks::Model) {
        if let Some(v) = &self.title {
            task.title.clone_from(v);
        }
        if let Some(v) = &self.description {
            task.description.clone_from(v);
        }
        if let Some(v) = self.status {
            task.status = v;
        }
        if let Some(v) = self.position {
            task.position = v;
        }
        if let Some(v) = self.priority {
            task.priority = v;
        }
        if let Some(v) = self.due_at {
            task.due_at = v;
        }
        if let Some(v) = &self.assignee_id {
            task.assignee_id.clone_from(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn task() -> tasks::Model {
        let now = Utc::now();
        tasks::Model {
            id: Uuid::new_v4(),
            project_id: Uuid::new_v4(),
            title: "Write docs".into(),
            description: String::new(),
            status: TaskStatus::Todo,
            position: 1.0,
            priority: 0,
            due_at: None,
            assignee_id: None,
            version: 1,
            created_by: "a".into(),
            updated_by: "a".into(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    #[test]
    fn restating_current_values_changes_nothing() {
        let patch = Patch {
            title: Some("Write docs".into()),
            status: Some(TaskStatus::Todo),
            due_at: Some(None),
            ..Default::default()
        };
        assert!(patch.changes_against(&task()).is_empty());
    }

    #[test]
    fn only_differing_fields_are_changes() {
        let patch = Patch {
            title: Some("Write docs".into()),
            status: Some(TaskStatus::Done),
            assignee_id: Some(Some("bob".into())),
            ..Default::default()
        };
        let changes = patch.changes_against(&task());
        assert_eq!(
            changes.keys().collect::<Vec<_>>(),
            vec!["assigneeId", "status"]
        );
        assert_eq!(changes["status"], json!("DONE"));
    }
}
