//! One subscriber's event stream: replay from the log, then live from the room, strictly
//! ascending with no gap and no duplicate, whatever the room or the subscriber's own pace.
//! Also the request data through which a transport's shared execution feeds a stream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::entities::events::EventKind;
use crate::error::AppError;
use crate::events::{CommittedEvent, log};

use super::Hub;
use super::hub::Membership;

/// Who a stream is for, which decides when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriber {
    /// One user: the stream ends with `FORBIDDEN` when that user is removed.
    User(String),
    /// A shared execution: it is never removed itself; its members are checked one by one.
    Group,
}

/// Request data that makes `projectEvents` read events from this feed instead of joining a
/// room itself. Only a transport's shared execution puts it into a request.
pub struct SharedFeed(pub Mutex<Option<mpsc::Receiver<Arc<CommittedEvent>>>>);

/// Request data that makes `projectEvents` resume after this seq, whatever its `after` (a
/// shared subscriber that fell behind continues on its own from where it was; an SSE client
/// reconnects with `Last-Event-ID`).
pub struct ResumeAfter(pub i64);

/// Request data through which `projectEvents` tells the transport the seq of the event
/// behind each result it yields, whatever the selection (SSE numbers its events with it).
pub struct SeqTap(pub Arc<AtomicI64>);

impl SeqTap {
    /// The tap's value when no event is behind the last result.
    pub const NONE: i64 = -1;

    /// Notes the seq of the event about to be resolved.
    pub fn note(&self, seq: i64) {
        self.0.store(seq, Ordering::Relaxed);
    }
}

/// Largest page read from the log while replaying or catching up.
const PAGE: u64 = 500;

/// The events of `project_id` after `after` (or from now), as `subscriber` may see them.
/// Ends with `FORBIDDEN` when that user is removed from the project, and after
/// PROJECT_DELETED.
pub fn project_events(
    hub: Arc<Hub>,
    subscriber: Subscriber,
    project_id: Uuid,
    after: Option<i64>,
) -> impl Stream<Item = Result<Arc<CommittedEvent>, AppError>> {
    async_stream::stream! {
        let membership = hub.join(project_id).await;
        let events = from_membership(hub, subscriber, project_id, after, membership);
        futures_util::pin_mut!(events);
        while let Some(item) = futures_util::StreamExt::next(&mut events).await {
            yield item;
        }
    }
}

/// Like [`project_events`], from a room membership the caller already holds (so that it
/// knows the seq the live part starts after).
pub fn from_membership(
    hub: Arc<Hub>,
    subscriber: Subscriber,
    project_id: Uuid,
    after: Option<i64>,
    membership: Membership,
) -> impl Stream<Item = Result<Arc<CommittedEvent>, AppError>> {
    async_stream::stream! {
        let db = hub.db();
        let mut live = membership.receiver;
        let joined_at = membership.last_seq;
        let mut next = after.map_or(joined_at + 1, |a| a + 1);

        // The log up to the join point; the room's receiver holds everything after it.
        if let Some(after) = after.filter(|a| *a < joined_at) {
            match expired(db, project_id, after).await {
                Ok(false) => {}
                Ok(true) => {
                    yield Err(AppError::CursorExpired(after));
                    return;
                }
                Err(err) => {
                    yield Err(err);
                    return;
                }
            }
        }
        while next <= joined_at {
            let rows = match log::range(db, project_id, next - 1, PAGE).await {
                Ok(rows) => rows,
                Err(err) => {
                    yield Err(err.into());
                    return;
                }
            };
            if rows.is_empty() {
                break;
            }
            for row in rows {
                if row.seq > joined_at {
                    break;
                }
                next = row.seq + 1;
                yield Ok(CommittedEvent::decode(row));
            }
        }

        loop {
            let event = match live.recv().await {
                Ok(event) => event,
                // Fell behind the room's buffer: the next event shows the jump, and the
                // missing range comes from the log below.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            if event.seq() < next {
                continue;
            }
            // Anything between what we sent and this event comes from the log.
            while next < event.seq() {
                let rows = match log::range(db, project_id, next - 1, PAGE.min((event.seq() - next) as u64)).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        yield Err(err.into());
                        return;
                    }
                };
                if rows.is_empty() {
                    yield Err(AppError::CursorExpired(next - 1));
                    return;
                }
                for row in rows {
                    next = row.seq + 1;
                    let event = CommittedEvent::decode(row);
                    match verdict(&event, &subscriber) {
                        Verdict::Deliver => yield Ok(event),
                        Verdict::LastOne => { yield Ok(event); return; }
                        Verdict::Removed => { yield Err(removed()); return; }
                    }
                }
            }
            next = event.seq() + 1;
            match verdict(&event, &subscriber) {
                Verdict::Deliver => yield Ok(event),
                Verdict::LastOne => { yield Ok(event); return; }
                Verdict::Removed => { yield Err(removed()); return; }
            }
        }
    }
}

/// What a subscriber does with an event.
pub enum Verdict {
    Deliver,
    /// Deliver, then end the stream (the project is gone).
    LastOne,
    /// The viewer lost access: end with FORBIDDEN, without this event.
    Removed,
}

/// Whether `subscriber` gets `event`, gets it as the last one, or has lost access.
pub fn verdict(event: &CommittedEvent, subscriber: &Subscriber) -> Verdict {
    match (event.row.kind, subscriber) {
        (EventKind::MemberRemoved, Subscriber::User(user))
            if event.subject_user() == Some(user.as_str()) =>
        {
            Verdict::Removed
        }
        (EventKind::ProjectDeleted, _) => Verdict::LastOne,
        _ => Verdict::Deliver,
    }
}

/// The error that ends the streams of a removed member.
pub fn removed() -> AppError {
    AppError::Forbidden("you were removed from this project")
}

/// Whether the log no longer holds the event right after `after` (pruned by retention).
async fn expired(
    db: &sea_orm::DatabaseConnection,
    project_id: Uuid,
    after: i64,
) -> Result<bool, AppError> {
    let first = log::range(db, project_id, after, 1).await?;
    Ok(first.first().is_none_or(|e| e.seq != after + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_removed(user: &str) -> Arc<CommittedEvent> {
        CommittedEvent::decode(crate::entities::events::Model {
            id: 1,
            project_id: Uuid::new_v4(),
            seq: 1,
            kind: EventKind::MemberRemoved,
            task_id: None,
            actor_id: "owner".into(),
            payload: serde_json::json!({ "changes": { "userId": user } }),
            actor_via: Default::default(),
            actor_token_name: None,
            client_mutation_id: None,
            created_at: chrono::Utc::now(),
        })
    }

    #[test]
    fn only_the_removed_user_loses_its_stream_and_a_group_never_does() {
        let event = member_removed("bob");
        let removed = |s: &Subscriber| matches!(verdict(&event, s), Verdict::Removed);
        assert!(removed(&Subscriber::User("bob".into())));
        assert!(!removed(&Subscriber::User("alice".into())));
        assert!(!removed(&Subscriber::Group));
        // The empty string is a user id like any other, not "nobody".
        assert!(!removed(&Subscriber::User(String::new())));
    }
}
