//! GraphQL inputs of task writes, and their validation into domain types.

use async_graphql::{ID, InputObject, MaybeUndefined};
use chrono::{DateTime, Utc};

use super::patch::Patch;
use crate::entities::tasks::TaskStatus;
use crate::error::AppError;
use crate::ids::parse_user_id;
use crate::validate;

/// A new task.
#[derive(InputObject)]
pub struct CreateTaskInput {
    /// The project to add it to.
    pub(super) project_id: ID,
    /// Title, 1–200 characters after trimming.
    pub(super) title: String,
    /// Description, up to 20,000 characters; default empty.
    pub(super) description: Option<String>,
    /// Default TODO.
    pub(super) status: Option<TaskStatus>,
    /// Default: after the project's last task.
    pub(super) position: Option<f64>,
    /// 0 (none) to 4 (urgent); default 0.
    pub(super) priority: Option<i32>,
    /// When it is due.
    pub(super) due_at: Option<DateTime<Utc>>,
    /// A member of the project to assign it to.
    pub(super) assignee_id: Option<ID>,
    /// Echoed on the TASK_CREATED event, to match an optimistic change.
    pub(super) client_mutation_id: Option<String>,
}

/// Changes to a task. Every field is optional: an absent field is left alone, an explicit
/// null clears a nullable field.
#[derive(InputObject)]
pub struct TaskPatch {
    /// New title, 1–200 characters after trimming.
    title: MaybeUndefined<String>,
    /// New description; null clears it.
    description: MaybeUndefined<String>,
    /// New status.
    status: MaybeUndefined<TaskStatus>,
    /// New position.
    position: MaybeUndefined<f64>,
    /// New priority, 0–4; null means 0.
    priority: MaybeUndefined<i32>,
    /// New due date; null clears it.
    due_at: MaybeUndefined<DateTime<Utc>>,
    /// New assignee (a member); null unassigns.
    assignee_id: MaybeUndefined<ID>,
}

impl TaskPatch {
    pub(super) fn validate(self) -> Result<Patch, AppError> {
        fn required<T>(field: &str, value: MaybeUndefined<T>) -> Result<Option<T>, AppError> {
            match value {
                MaybeUndefined::Undefined => Ok(None),
                MaybeUndefined::Null => Err(AppError::bad_input(
                    field,
                    format!("{field} cannot be null"),
                )),
                MaybeUndefined::Value(v) => Ok(Some(v)),
            }
        }
        Ok(Patch {
            title: required("patch.title", self.title)?
                .map(|t| validate::title("patch.title", &t))
                .transpose()?,
            description: match self.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(String::new()),
                MaybeUndefined::Value(d) => Some(validate::description("patch.description", d)?),
            },
            status: required("patch.status", self.status)?,
            position: required("patch.position", self.position)?
                .map(|p| validate::position("patch.position", p))
                .transpose()?,
            priority: match self.priority {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(0),
                MaybeUndefined::Value(p) => Some(validate::priority("patch.priority", Some(p))?),
            },
            due_at: match self.due_at {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(d) => Some(Some(d)),
            },
            assignee_id: match self.assignee_id {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(id) => Some(Some(parse_user_id("patch.assigneeId", &id)?)),
            },
        })
    }
}
