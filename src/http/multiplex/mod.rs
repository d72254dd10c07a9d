//! Shared execution of identical subscriptions, as Hasura multiplexes them. Subscribers of
//! one project on any transport (graphql-ws, SSE, multipart) holding the same document and
//! variables (and no `after`: they all want "live from now") share one GraphQL execution
//! per event and one serialized payload; each subscriber then only wraps the payload in its
//! own frame. An HTTP stream reads the group's messages from a broadcast; a WebSocket
//! subscriber's frames are written by the group itself into its connection's output
//! ([`direct`]). Event payloads are viewer-independent, and access is checked for every
//! subscriber when it joins and on every event (a removed member's share ends with
//! FORBIDDEN).
//!
//! A member that falls behind (the group's buffer, or its connection's output), or whose
//! group ends, resumes on its own execution from the last seq it delivered, so nothing is
//! lost or repeated (the member side is in [`deliveries`](super::deliveries)).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Request, Variables};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::payload::Payload;
use crate::auth::{Authentication, Viewer};
use crate::events::CommittedEvent;
use crate::graphql::document::Analysis;
use crate::graphql::{TaskNestSchema, prepare_request};
use crate::realtime::sequenced::{Joined, Sequenced};
use crate::realtime::stream::{self, SharedFeed, Subscriber};
use crate::state::AppState;
use direct::Members;
pub use direct::{Left, Outbox, Output, Pushed};

pub mod direct;

/// One event of a group, executed and serialized once.
pub struct SharedMessage {
    /// The event the payload is about.
    pub event: Arc<CommittedEvent>,
    /// The execution's result for it.
    pub payload: Payload,
}

/// What can be shared: a live `projectEvents` subscription (see [`Analysis::live_project`]).
/// Two keys are the same operation when project, document, variables (compared by their
/// JSON) and operation name are.
#[derive(Debug, Clone)]
pub struct GroupKey {
    /// The project whose events the group executes.
    pub project_id: Uuid,
    query: String,
    variables: Variables,
    variables_json: String,
    operation_name: Option<String>,
}

impl PartialEq for GroupKey {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for GroupKey {}

impl std::hash::Hash for GroupKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl GroupKey {
    /// The key of an analyzed request, when it may share an execution.
    pub fn of(request: &Request, analysis: &Analysis) -> Option<Self> {
        Some(Self {
            project_id: analysis.live_project?,
            query: request.query.clone(),
            variables: request.variables.clone(),
            variables_json: serde_json::to_string(&request.variables).ok()?,
            operation_name: request.operation_name.clone(),
        })
    }

    fn identity(&self) -> (&Uuid, &str, &str, Option<&str>) {
        (
            &self.project_id,
            &self.query,
            &self.variables_json,
            self.operation_name.as_deref(),
        )
    }

    /// A fresh request for this key's operation.
    pub fn request(&self) -> Request {
        let request = Request::new(self.query.clone()).variables(self.variables.clone());
        match &self.operation_name {
            Some(name) => request.operation_name(name.clone()),
            None => request,
        }
    }
}

/// The subscribers of one shared execution: those that read its messages from a broadcast
/// (SSE, multipart) and those it writes to itself (WebSocket, see [`direct`]).
pub struct Group {
    broadcast: Arc<Sequenced<Arc<SharedMessage>>>,
    /// Locked while a message is sent, so that a member joins exactly between two.
    direct: Mutex<Members>,
}

/// A member's place in a group: messages after `last_seq` arrive on `receiver`.
pub type Share = Joined<Arc<SharedMessage>>;

impl Group {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            broadcast: Sequenced::new(GROUP_BUFFER),
            direct: Mutex::new(Members::default()),
        })
    }

    fn direct(&self) -> std::sync::MutexGuard<'_, Members> {
        self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends message `seq` to every member; returns how many there are.
    fn send(&self, seq: i64, message: Arc<SharedMessage>) -> usize {
        let mut direct = self.direct();
        let readers = self.broadcast.send(seq, message.clone());
        direct.deliver(&message);
        readers + direct.len()
    }

    /// Turns joiners away and sends the direct members on alone.
    fn close(&self) {
        let mut direct = self.direct();
        self.broadcast.close();
        direct.leave_all(|| Left::Behind);
    }

    fn member_count(&self) -> usize {
        self.broadcast.receiver_count() + self.direct().len()
    }

    /// Joins as a direct member writing to `output`; `None` when the group closed first.
    async fn join_direct(
        self: &Arc<Self>,
        user: Subscriber,
        output: Output,
    ) -> Option<DirectShare> {
        self.broadcast.settled().await;
        let mut direct = self.direct();
        let last_seq = self.broadcast.joinable()?;
        let place = direct.add(user, output, last_seq);
        Some(DirectShare {
            group: self.clone(),
            place,
        })
    }
}

/// A direct member's side of its place in a group; dropping it leaves the group.
pub struct DirectShare {
    group: Arc<Group>,
    place: direct::Place,
}

impl DirectShare {
    /// Waits until the group stops writing to this member, and says why.
    pub async fn left(&mut self) -> Left {
        // A group that went away without a word (its task panicked) sends it on alone.
        (&mut self.place.left).await.unwrap_or(Left::Behind)
    }

    /// The seq of the last event written to this member (where it goes on from alone).
    pub fn last_seq(&self) -> i64 {
        self.place.last.load(Ordering::Acquire)
    }
}

impl Drop for DirectShare {
    fn drop(&mut self) {
        self.group.direct().remove(self.place.id);
    }
}

/// This instance's groups.
#[derive(Default)]
pub struct Multiplexer {
    groups: Mutex<HashMap<GroupKey, Arc<Group>>>,
}

/// Messages a group keeps for members that fall behind.
const GROUP_BUFFER: usize = 256;

impl Multiplexer {
    fn groups(&self) -> std::sync::MutexGuard<'_, HashMap<GroupKey, Arc<Group>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the group for `key`, starting it (executing as `viewer`) when there is none.
    pub async fn join(
        self: &Arc<Self>,
        key: GroupKey,
        state: &AppState,
        schema: &TaskNestSchema,
        viewer: &Viewer,
    ) -> Share {
        loop {
            let group = self.group(&key, state, schema, viewer);
            if let Some(share) = group.broadcast.join().await {
                return share;
            }
            // The group ended before we got in: start or find a newer one.
        }
    }

    /// Joins the group for `key` as a member it writes to itself, through `output`.
    pub async fn join_direct(
        self: &Arc<Self>,
        key: GroupKey,
        state: &AppState,
        schema: &TaskNestSchema,
        viewer: &Viewer,
        output: Output,
    ) -> DirectShare {
        loop {
            let group = self.group(&key, state, schema, viewer);
            let user = Subscriber::User(viewer.user_id.clone());
            if let Some(share) = group.join_direct(user, output.clone()).await {
                return share;
            }
        }
    }

    fn group(
        self: &Arc<Self>,
        key: &GroupKey,
        state: &AppState,
        schema: &TaskNestSchema,
        viewer: &Viewer,
    ) -> Arc<Group> {
        self.groups()
            .entry(key.clone())
            .or_insert_with(|| self.start(key.clone(), state, schema, viewer))
            .clone()
    }

    fn start(
        self: &Arc<Self>,
        key: GroupKey,
        state: &AppState,
        schema: &TaskNestSchema,
        viewer: &Viewer,
    ) -> Arc<Group> {
        let group = Group::new();
        let (feed_tx, feed_rx) = mpsc::channel(1);
        let request = prepare_request(key.request(), state, Authentication::Viewer(viewer.clone()))
            .data(SharedFeed(Mutex::new(Some(feed_rx))));
        let responses = schema.execute_stream(request);
        let task = GroupTask {
            key,
            state: state.clone(),
            group: group.clone(),
            owner: self.clone(),
        };
        tokio::spawn(task.run(feed_tx, responses));
        group
    }
}

struct GroupTask {
    key: GroupKey,
    state: AppState,
    group: Arc<Group>,
    owner: Arc<Multiplexer>,
}

impl GroupTask {
    async fn run(
        self,
        feed: mpsc::Sender<Arc<CommittedEvent>>,
        responses: futures_util::stream::BoxStream<'static, async_graphql::Response>,
    ) {
        let gauge = self.state.metrics.shared_executions.clone();
        gauge.inc();
        self.deliver(feed, responses).await;
        gauge.dec();
        // Late joiners start a new group; members still holding a receiver see it close
        // once the last handle is gone, and resume on their own.
        self.group.close();
        let mut groups = self.owner.groups();
        if groups
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &self.group))
        {
            groups.remove(&self.key);
        }
    }

    async fn deliver(
        &self,
        feed: mpsc::Sender<Arc<CommittedEvent>>,
        mut responses: futures_util::stream::BoxStream<'static, async_graphql::Response>,
    ) {
        let hub = self.state.realtime.hub.clone();
        let membership = hub.join(self.key.project_id).await;
        self.group.broadcast.start(membership.last_seq);
        let events = stream::from_membership(
            hub,
            Subscriber::Group,
            self.key.project_id,
            None,
            membership,
        );
        futures_util::pin_mut!(events);
        let shutdown = self.state.shutdown.clone();
        // A group nobody belongs to ends (letting its room close) even if no event comes;
        // two looks in a row, so a member about to join is not left out.
        let mut looks = tokio::time::interval(Duration::from_secs(1));
        let mut empty_looks = 0;
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = events.next() => item,
                _ = looks.tick() => {
                    empty_looks = if self.group.member_count() == 0 { empty_looks + 1 } else { 0 };
                    if empty_looks >= 2 {
                        return;
                    }
                    continue;
                }
            };
            let Some(Ok(event)) = item else { return };
            if feed.send(event.clone()).await.is_err() {
                return;
            }
            let Some(response) = responses.next().await else {
                return;
            };
            let payload = Payload::of(response);
            let failed = payload.is_error();
            let seq = event.seq();
            let message = Arc::new(SharedMessage { event, payload });
            // Outside tokio's cooperative budget: a socket write counts against it, and once
            // the task's 128 are spent every further write would report "not now", leaving
            // each remaining member's frame to its connection's task (a wake-up per
            // delivery, the very cost writing directly avoids). The loop still yields at its
            // next await on the room's stream, which has a budget.
            let receivers =
                tokio::task::unconstrained(async { self.group.send(seq, message) }).await;
            if receivers == 0 || failed {
                return;
            }
        }
    }
}
