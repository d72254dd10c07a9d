//! Reading the log for clients catching up over HTTP.

use uuid::Uuid;

use super::log;
use crate::auth::Viewer;
use crate::entities::events;
use crate::entities::project_members::Role;
use crate::error::AppError;
use crate::projects::access;

/// Largest page of `events`.
pub const MAX_LIMIT: i32 = 1_000;

/// A page of a project's log.
#[derive(Debug)]
pub struct EventRange {
    pub events: Vec<events::Model>,
    pub last_seq: i64,
    pub has_more: bool,
}

/// Events with `seq > after`, ascending; `limit` is capped at [`MAX_LIMIT`].
pub async fn list(
    db: &sea_orm::DatabaseConnection,
    viewer: &Viewer,
    project_id: Uuid,
    after: i64,
    limit: i32,
) -> Result<EventRange, AppError> {
    if after < 0 {
        return Err(AppError::bad_input("after", "after must be 0 or more"));
    }
    if limit < 1 {
        return Err(AppError::bad_input("limit", "limit must be at least 1"));
    }
    let limit = limit.min(MAX_LIMIT) as u64;
    let (project, _) = access::require(db, project_id, viewer, Role::Viewer).await?;
    let mut events = log::range(db, project_id, after, limit + 1).await?;
    // The log must hold the event right after `after`, or the client's cursor points into
    // pruned history and it has to refetch state instead.
    let expired = match events.first() {
        Some(first) => first.seq != after + 1,
        None => project.last_seq > after,
    };
    if expired {
        return Err(AppError::CursorExpired(after));
    }
    let has_more = events.len() as u64 > limit;
    events.truncate(limit as usize);
    // Read after the events, so lastSeq is never behind the page it comes with.
    let last_seq = project.last_seq.max(events.last().map_or(0, |e| e.seq));
    Ok(EventRange {
        events,
        last_seq,
        has_more,
    })
}
