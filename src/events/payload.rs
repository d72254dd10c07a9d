//! What an event row's JSON payload holds: enough to serve a subscriber without reading
//! anything else (the changed fields, the task after the change, the users it names).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entities::{tasks, users};

/// The `payload` column of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    /// The fields that changed, by GraphQL input name, with their new values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Map<String, Value>>,
    /// The task as it is after the change (absent for deletions and non-task events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<tasks::Model>,
    /// Every user the event names (actor, task users, the member concerned).
    #[serde(default)]
    pub users: Vec<UserSnapshot>,
}

impl EventPayload {
    /// A user named by this event.
    pub fn user(&self, id: &str) -> Option<&UserSnapshot> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The embedded users by id, for resolvers.
    pub fn user_map(&self) -> HashMap<String, UserSnapshot> {
        self.users
            .iter()
            .map(|u| (u.id.clone(), u.clone()))
            .collect()
    }
}

/// A user as embedded in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSnapshot {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl From<users::Model> for UserSnapshot {
    fn from(user: users::Model) -> Self {
        Self {
            id: user.id,
            name: user.name,
            avatar_url: user.avatar_url,
        }
    }
}
