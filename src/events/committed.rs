//! A committed event decoded once per instance and shared (behind `Arc`) by every subscriber
//! it reaches.

use std::collections::HashMap;
use std::sync::Arc;

use super::payload::{EventPayload, UserSnapshot};
use crate::entities::events;

/// A log row with its payload decoded.
#[derive(Debug)]
pub struct CommittedEvent {
    /// The row as stored.
    pub row: events::Model,
    /// The decoded payload.
    pub payload: EventPayload,
    /// The payload's users by id, for resolvers.
    pub users: Arc<HashMap<String, UserSnapshot>>,
}

impl CommittedEvent {
    /// Decodes a row. A payload that does not decode (never written by this code) is logged
    /// and read as empty rather than stopping a stream.
    pub fn decode(row: events::Model) -> Arc<Self> {
        let payload: EventPayload = serde_json::from_value(row.payload.clone()).unwrap_or_else(|e| {
            tracing::error!(seq = row.seq, project = %row.project_id, error = %e, "undecodable event payload");
            EventPayload::default()
        });
        let users = Arc::new(payload.user_map());
        Arc::new(Self {
            row,
            payload,
            users,
        })
    }

    /// The event's per-project number.
    pub fn seq(&self) -> i64 {
        self.row.seq
    }

    /// The user a member event is about (`changes.userId`).
    pub fn subject_user(&self) -> Option<&str> {
        self.payload
            .changes
            .as_ref()
            .and_then(|c| c.get("userId"))
            .and_then(|v| v.as_str())
    }
}
