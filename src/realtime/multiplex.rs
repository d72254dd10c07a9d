//! Shared execution of identical subscriptions, as Hasura multiplexes them. Subscribers of
//! one project holding the same document and variables (and no `after`: they all want "live
//! from now") share one GraphQL execution per event and one serialized payload; each
//! subscriber then only wraps the payload in its own `next` message. Event payloads are
//! viewer-independent, and access is checked for every subscriber when it joins and on
//! every event (a removed member's share ends with FORBIDDEN).
//!
//! A member that falls behind the group's buffer, or whose group ends, resumes on its own
//! execution from the last seq it delivered, so nothing is lost or repeated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Name, Request, Variables};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use uuid::Uuid;

use crate::auth::{Authentication, Viewer};
use crate::error::with_error_codes;
use crate::events::CommittedEvent;
use crate::graphql::{TaskNestSchema, prepare_request};
use crate::state::AppState;

/// Request data that makes `projectEvents` read events from this feed instead of joining a
/// room itself. Only the server puts it into a request.
pub struct SharedFeed(pub Mutex<Option<mpsc::Receiver<Arc<CommittedEvent>>>>);

/// Request data that makes `projectEvents` without `after` resume after this seq (a shared
/// subscriber that fell behind continues on its own from where it was).
pub struct ResumeAfter(pub i64);

/// One event of a group, executed and serialized once.
pub struct SharedMessage {
    pub event: Arc<CommittedEvent>,
    /// The serialized GraphQL response (`{"data": …}`), or the serialized errors array when
    /// the execution failed.
    pub payload: Arc<str>,
    pub failed: bool,
}

/// What can be shared: a `projectEvents` subscription without `after`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub project_id: Uuid,
    query: String,
    variables: String,
    operation_name: Option<String>,
}

impl GroupKey {
    /// The key of a request, when it is a single `projectEvents` subscription without
    /// `after` whose project id is known.
    pub fn of(
        query: &str,
        variables: &serde_json::Value,
        operation_name: Option<&str>,
    ) -> Option<Self> {
        let document = async_graphql::parser::parse_query(query).ok()?;
        let operation = match (&document.operations, operation_name) {
            (DocumentOperations::Single(op), _) => op,
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(&Name::new(name))?,
            (DocumentOperations::Multiple(_), None) => return None,
        };
        let operation = &operation.node;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let [Selection::Field(field)] = operation
            .selection_set
            .node
            .items
            .as_slice()
            .iter()
            .map(|s| &s.node)
            .collect::<Vec<_>>()[..]
        else {
            return None;
        };
        let field = &field.node;
        if field.name.node.as_str() != "projectEvents" || !field.directives.is_empty() {
            return None;
        }
        let mut project_id = None;
        for (name, value) in &field.arguments {
            let value = value
                .node
                .clone()
                .into_const_with(|var| {
                    Ok::<_, ()>(
                        variables
                            .get(var.as_str())
                            .cloned()
                            .and_then(|v| async_graphql::Value::from_json(v).ok())
                            .unwrap_or(async_graphql::Value::Null),
                    )
                })
                .ok()?;
            match (name.node.as_str(), value) {
                ("projectId", async_graphql::Value::String(id)) => {
                    project_id = Some(Uuid::parse_str(&id).ok()?);
                }
                ("after", async_graphql::Value::Null) => {}
                _ => return None,
            }
        }
        Some(Self {
            project_id: project_id?,
            query: query.to_owned(),
            variables: variables.to_string(),
            operation_name: operation_name.map(str::to_owned),
        })
    }
}

struct Group {
    messages: broadcast::Sender<Arc<SharedMessage>>,
    /// The last seq broadcast; `None` until the group joined its room.
    last_seq: watch::Receiver<Option<i64>>,
    delivery: Arc<Mutex<()>>,
    /// Set (under `delivery`) when the group stopped: a late joiner must start a new one.
    closed: Arc<AtomicBool>,
}

/// A member's place in a group: messages after `start` arrive on `messages`.
pub struct Share {
    pub messages: broadcast::Receiver<Arc<SharedMessage>>,
    pub start: i64,
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
            let group = {
                let mut groups = self.groups();
                groups
                    .entry(key.clone())
                    .or_insert_with(|| self.start(key.clone(), state, schema, viewer))
                    .clone()
            };
            let mut ready = group.last_seq.clone();
            if ready.wait_for(Option::is_some).await.is_err() {
                continue;
            }
            let _guard = group.delivery.lock().unwrap_or_else(|e| e.into_inner());
            if group.closed.load(Ordering::Relaxed) {
                continue;
            }
            let start = (*ready.borrow()).unwrap_or_default();
            return Share {
                messages: group.messages.subscribe(),
                start,
            };
        }
    }

    fn start(
        self: &Arc<Self>,
        key: GroupKey,
        state: &AppState,
        schema: &TaskNestSchema,
        viewer: &Viewer,
    ) -> Arc<Group> {
        let (messages, _) = broadcast::channel(GROUP_BUFFER);
        let (last_tx, last_seq) = watch::channel(None);
        let delivery = Arc::new(Mutex::new(()));
        let closed = Arc::new(AtomicBool::new(false));
        let group = Arc::new(Group {
            messages: messages.clone(),
            last_seq,
            delivery: delivery.clone(),
            closed: closed.clone(),
        });
        let (feed_tx, feed_rx) = mpsc::channel(1);
        let variables: serde_json::Value = serde_json::from_str(&key.variables).unwrap_or_default();
        let mut request =
            Request::new(key.query.clone()).variables(Variables::from_json(variables));
        if let Some(name) = &key.operation_name {
            request = request.operation_name(name.clone());
        }
        let request = prepare_request(request, state, Authentication::Viewer(viewer.clone()))
            .data(SharedFeed(Mutex::new(Some(feed_rx))));
        let responses = schema.execute_stream(request);
        let task = GroupTask {
            key,
            state: state.clone(),
            messages,
            last_seq: last_tx,
            delivery,
            closed,
            owner: self.clone(),
            group: Arc::downgrade(&group),
        };
        tokio::spawn(task.run(feed_tx, responses));
        group
    }
}

struct GroupTask {
    key: GroupKey,
    state: AppState,
    messages: broadcast::Sender<Arc<SharedMessage>>,
    last_seq: watch::Sender<Option<i64>>,
    delivery: Arc<Mutex<()>>,
    closed: Arc<AtomicBool>,
    owner: Arc<Multiplexer>,
    group: std::sync::Weak<Group>,
}

impl GroupTask {
    async fn run(
        self,
        feed: mpsc::Sender<Arc<CommittedEvent>>,
        mut responses: futures_util::stream::BoxStream<'static, async_graphql::Response>,
    ) {
        let membership = self.state.realtime.hub.join(self.key.project_id).await;
        self.last_seq.send_replace(Some(membership.last_seq));
        // No user: the group itself is never "removed"; members are checked one by one.
        let events = super::stream::from_membership(
            self.state.clone(),
            String::new(),
            self.key.project_id,
            None,
            membership,
        );
        futures_util::pin_mut!(events);
        let shutdown = self.state.shutdown.clone();
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => break,
                item = events.next() => item,
            };
            let Some(Ok(event)) = item else { break };
            if feed.send(event.clone()).await.is_err() {
                break;
            }
            let Some(mut response) = responses.next().await else {
                break;
            };
            with_error_codes(&mut response.errors);
            let failed = response.data == async_graphql::Value::Null && !response.errors.is_empty();
            let payload = if failed {
                serde_json::to_string(&response.errors)
            } else {
                serde_json::to_string(&response)
            }
            .unwrap_or_else(|_| "null".to_owned());
            let message = Arc::new(SharedMessage {
                event: event.clone(),
                payload: payload.into(),
                failed,
            });
            let nobody_left = {
                let _guard = self.delivery.lock().unwrap_or_else(|e| e.into_inner());
                let sent = self.messages.send(message);
                self.last_seq.send_replace(Some(event.seq()));
                sent.is_err()
            };
            if nobody_left || failed {
                break;
            }
        }
        {
            let _guard = self.delivery.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Relaxed);
        }
        // Leave the registry (unless a newer group already took the key). Members still
        // holding a receiver see it close and resume on their own.
        let mut groups = self.owner.groups();
        let ours = groups
            .get(&self.key)
            .zip(self.group.upgrade())
            .is_some_and(|(current, ours)| Arc::ptr_eq(current, &ours));
        if ours {
            groups.remove(&self.key);
        }
        drop(groups);
        drop(self.messages);
    }
}
