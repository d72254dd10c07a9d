//! Members of a shared execution that the group writes to itself: a WebSocket subscriber's
//! frame goes from the group's task straight into its connection's output, usually with one
//! `send` and no other work. Delivering an event then wakes no task per subscriber, polls no
//! stream and takes no broadcast slot: the fan-out costs about what the kernel charges for
//! the messages.
//!
//! A member's connection hears from the group only when the member leaves it (see [`Left`]):
//! its output backed up, the group ended, the viewer was removed, or the project is gone.
//! Until then the connection's task sleeps through every delivery.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::oneshot;

use super::SharedMessage;
use crate::http::payload::Payload;
use crate::realtime::stream::{Subscriber, Verdict, verdict};

/// A connection's output, as the group writes to it.
pub trait Outbox: Send + Sync {
    /// Queues a text frame made of `parts` (UTF-8 together) after everything already
    /// queued, and writes it at once when nothing was waiting. Never waits.
    ///
    /// A socket write counts against tokio's cooperative budget of the calling task; once
    /// that is spent every write reports "not now" and is left to the connection's task.
    /// Still correct, but a wake-up per frame: a caller writing to many outboxes in a row
    /// runs outside the budget (`tokio::task::unconstrained`), as a group does.
    fn push_text(&self, parts: &[&[u8]]) -> Pushed;
}

/// What became of a frame handed to an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to the socket.
    Sent,
    /// Queued behind other output; the connection writes it when the socket can take it.
    Queued,
    /// Not queued: the connection has more waiting than it may hold (its reader is slow).
    Full,
    /// Not queued: the connection is broken.
    Closed,
}

/// Where the group writes a member's frames: the connection, and the start of the member's
/// `next` frame (up to its payload key), which is all that differs between members.
#[derive(Clone)]
pub struct Output {
    /// The member's connection.
    pub outbox: Arc<dyn Outbox>,
    /// The operation's frame prefix; a frame is `prefix`, the shared payload, then `}`.
    pub prefix: Arc<str>,
}

/// Why a member no longer receives from its group. The group writes nothing more for it.
#[derive(Debug)]
pub enum Left {
    /// It fell behind (its output was full) or the group ended: it goes on alone after the
    /// last seq written to it.
    Behind,
    /// It is over: the project is gone (its last event was written), or the connection broke.
    Done,
    /// The viewer was removed from the project; the event that says so was not written.
    Removed,
    /// The execution failed on an event: this error ends the operation.
    Failed(Payload),
}

struct Member {
    id: u64,
    user: Subscriber,
    output: Output,
    /// The seq of the last event written to this member (its start until then).
    last: Arc<AtomicI64>,
    /// Taken when the member leaves.
    left: Option<oneshot::Sender<Left>>,
}

impl Member {
    fn leave(&mut self, why: Left) {
        if let Some(left) = self.left.take() {
            let _ = left.send(why);
        }
    }

    /// Writes `message` (its payload serialized as `json`) to this member; whether it stays.
    fn deliver(&mut self, message: &SharedMessage, json: &str) -> bool {
        let last_one = match verdict(&message.event, &self.user) {
            Verdict::Removed => {
                self.leave(Left::Removed);
                return false;
            }
            Verdict::LastOne => true,
            Verdict::Deliver => false,
        };
        let parts = [self.output.prefix.as_bytes(), json.as_bytes(), b"}"];
        match self.output.outbox.push_text(&parts) {
            Pushed::Sent | Pushed::Queued => {
                self.last.store(message.event.seq(), Ordering::Release);
                if last_one {
                    self.leave(Left::Done);
                }
                !last_one
            }
            Pushed::Full => {
                self.leave(Left::Behind);
                false
            }
            Pushed::Closed => {
                self.leave(Left::Done);
                false
            }
        }
    }
}

/// A group's direct members.
#[derive(Default)]
pub(super) struct Members {
    next_id: u64,
    list: Vec<Member>,
}

impl Members {
    /// Adds a member that has received everything up to `last_seq`.
    pub(super) fn add(&mut self, user: Subscriber, output: Output, last_seq: i64) -> Place {
        let id = self.next_id;
        self.next_id += 1;
        let last = Arc::new(AtomicI64::new(last_seq));
        let (left, left_rx) = oneshot::channel();
        self.list.push(Member {
            id,
            user,
            output,
            last: last.clone(),
            left: Some(left),
        });
        Place {
            id,
            last,
            left: left_rx,
        }
    }

    /// Removes member `id`, if it is still here.
    pub(super) fn remove(&mut self, id: u64) {
        if let Some(at) = self.list.iter().position(|member| member.id == id) {
            self.list.swap_remove(at);
        }
    }

    /// Writes `message` to every member; those that leave on it are told why.
    pub(super) fn deliver(&mut self, message: &SharedMessage) {
        match &message.payload {
            Payload::Result(json) => self.list.retain_mut(|member| member.deliver(message, json)),
            Payload::Errors(_) => self.leave_all(|| Left::Failed(message.payload.clone())),
        }
    }

    /// Every member leaves, told `why` (the group is ending).
    pub(super) fn leave_all(&mut self, why: impl Fn() -> Left) {
        for mut member in self.list.drain(..) {
            member.leave(why());
        }
    }

    /// How many members there are.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }
}

/// A member's own side of its place in a group: what its connection holds.
pub(super) struct Place {
    pub(super) id: u64,
    pub(super) last: Arc<AtomicI64>,
    pub(super) left: oneshot::Receiver<Left>,
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use uuid::Uuid;

    use super::*;
    use crate::entities::events::{EventKind, Model};
    use crate::events::CommittedEvent;
    use crate::http::ws::socket::{Socket, config};

    fn message(seq: i64, kind: EventKind, payload: Payload) -> SharedMessage {
        let event = CommittedEvent::decode(Model {
            id: seq,
            project_id: Uuid::nil(),
            seq,
            kind,
            task_id: None,
            actor_id: "owner".into(),
            payload: serde_json::json!({ "changes": { "userId": "bob" } }),
            actor_via: Default::default(),
            actor_token_name: None,
            client_mutation_id: None,
            created_at: chrono::Utc::now(),
        });
        SharedMessage { event, payload }
    }

    fn result(json: String) -> Payload {
        Payload::Result(json.into())
    }

    /// A member's connection over a pipe of `capacity` bytes, and the client at its far end.
    async fn connection(capacity: usize) -> (Socket<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (client, server) = tokio::io::duplex(capacity);
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (Socket::new(server, config(1 << 20)), client)
    }

    async fn texts(client: &mut WebSocketStream<DuplexStream>, count: usize) -> Vec<String> {
        let mut texts = Vec::new();
        for _ in 0..count {
            let message = client.next().await.expect("open").expect("frame");
            texts.push(message.into_text().expect("text").as_str().to_owned());
        }
        texts
    }

    #[tokio::test]
    async fn members_get_their_own_frames_until_removed_backed_up_or_done() {
        let mut members = Members::default();
        let mut add = |user: &str, socket: &Socket<DuplexStream>, id: &str| {
            let output = Output {
                outbox: socket.outbox(),
                prefix: format!(r#"{{"id":"{id}","payload":"#).into(),
            };
            members.add(Subscriber::User(user.into()), output, 0)
        };
        let (alice_socket, mut alice) = connection(1 << 20).await;
        let (bob_socket, mut bob) = connection(1 << 20).await;
        // Carol's client reads nothing and her pipe holds 64 bytes.
        let (carol_socket, _carol) = connection(64).await;
        let mut alice_place = add("alice", &alice_socket, "a");
        let mut bob_place = add("bob", &bob_socket, "b");
        let mut carol_place = add("carol", &carol_socket, "c");

        let big = "x".repeat(300 * 1024);
        let sent = [
            message(1, EventKind::TaskUpdated, result(r#"{"n":1}"#.into())),
            message(
                2,
                EventKind::TaskUpdated,
                result(format!(r#"{{"n":"{big}"}}"#)),
            ),
            message(3, EventKind::MemberRemoved, result(r#"{"n":3}"#.into())),
            message(4, EventKind::ProjectDeleted, result(r#"{"n":4}"#.into())),
        ];
        for message in &sent {
            members.deliver(message);
        }
        assert_eq!(members.len(), 0, "everyone left");

        let alice_got = texts(&mut alice, 4).await;
        assert_eq!(alice_got[0], r#"{"id":"a","payload":{"n":1}}"#);
        assert_eq!(alice_got[1].len(), big.len() + 29);
        assert_eq!(alice_got[3], r#"{"id":"a","payload":{"n":4}}"#);
        assert!(matches!(alice_place.left.try_recv(), Ok(Left::Done)));
        assert_eq!(alice_place.last.load(Ordering::Acquire), 4);

        // Bob is not told he was removed by the event itself: his stream ends with an error.
        let bob_got = texts(&mut bob, 2).await;
        assert_eq!(bob_got[0], r#"{"id":"b","payload":{"n":1}}"#);
        assert!(matches!(bob_place.left.try_recv(), Ok(Left::Removed)));
        assert_eq!(bob_place.last.load(Ordering::Acquire), 2);

        // Carol's output held the big frame: the next one did not fit, so she goes on alone
        // after the last one she was given.
        assert!(matches!(carol_place.left.try_recv(), Ok(Left::Behind)));
        assert_eq!(carol_place.last.load(Ordering::Acquire), 2);
    }

    #[tokio::test]
    async fn a_failed_execution_sends_every_member_off_with_its_error_and_writes_nothing() {
        let mut members = Members::default();
        let (socket, mut client) = connection(1 << 20).await;
        let output = Output {
            outbox: socket.outbox(),
            prefix: "{".into(),
        };
        let mut place = members.add(Subscriber::User("alice".into()), output, 7);
        let failed = Payload::Errors(r#"[{"message":"boom"}]"#.into());
        members.deliver(&message(8, EventKind::TaskUpdated, failed));
        assert_eq!(members.len(), 0);
        assert!(matches!(place.left.try_recv(), Ok(Left::Failed(p)) if p.is_error()));
        assert_eq!(place.last.load(Ordering::Acquire), 7);
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), client.next());
        assert!(nothing.await.is_err(), "no frame was written");
    }
}
