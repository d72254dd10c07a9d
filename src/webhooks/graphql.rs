//! The GraphQL face of webhooks: thin resolvers over [`super::service`].

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::ROTATION_OVERLAP_HOURS;
use super::history::{self, DeliveryPage};
use super::service::{self, NewWebhook, WebhookChanges, WebhookView};
use crate::auth;
use crate::entities::events::EventKind;
use crate::entities::webhook_deliveries;
use crate::ids::parse_uuid;
use crate::state::AppState;

/// An HTTP endpoint that receives a project's events, signed, in order, at least once.
pub struct Webhook(WebhookView);

/// An HTTP endpoint that receives a project's events, signed, in order, at least once.
#[Object]
impl Webhook {
    /// The webhook's id.
    async fn id(&self) -> ID {
        self.0.webhook.id.into()
    }

    /// The project whose events it receives.
    async fn project_id(&self) -> ID {
        self.0.webhook.project_id.into()
    }

    /// Where events are POSTed.
    async fn url(&self) -> &str {
        &self.0.webhook.url
    }

    /// The kinds of events it receives.
    async fn event_kinds(&self) -> Vec<EventKind> {
        service::kinds_of(&self.0.webhook)
    }

    /// What it is for.
    async fn description(&self) -> Option<&str> {
        self.0.webhook.description.as_deref()
    }

    /// False once disabled (by an owner, a 410 Gone answer, or failing for too long).
    async fn enabled(&self) -> bool {
        self.0.webhook.enabled
    }

    /// Why it was disabled.
    async fn disabled_reason(&self) -> Option<&str> {
        self.0.webhook.disabled_reason.as_deref()
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.webhook.created_at
    }

    /// The last event seq delivered (or skipped as not wanted).
    async fn last_delivered_seq(&self) -> i64 {
        self.0.webhook.cursor
    }

    /// How many events it is behind the project's head.
    async fn lag(&self) -> i64 {
        (self.0.head - self.0.webhook.cursor).max(0)
    }

    /// Failed attempts at the next event so far (0 while deliveries succeed).
    async fn failed_attempts(&self) -> i32 {
        self.0.webhook.attempt
    }

    /// When the next attempt is due, while retrying.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.webhook.next_attempt_at
    }
}

/// A new webhook and its signing secret.
#[derive(SimpleObject)]
pub struct WebhookSecret {
    /// The webhook.
    webhook: Webhook,
    /// The signing secret (`whsec_…`, Standard Webhooks format). Shown only now.
    secret: String,
}

/// One delivery attempt.
pub struct WebhookDelivery(webhook_deliveries::Model);

/// One delivery attempt.
#[Object]
impl WebhookDelivery {
    /// The event's seq.
    async fn seq(&self) -> i64 {
        self.0.seq
    }

    /// 1 for the first attempt at this event, then 2, 3, …
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }

    /// The `webhook-id` header sent (the same for every retry of one event).
    async fn message_id(&self) -> &str {
        &self.0.message_id
    }

    /// The HTTP status answered, if any.
    async fn status_code(&self) -> Option<i32> {
        self.0.status_code
    }

    /// How long the attempt took.
    async fn duration_ms(&self) -> Option<i32> {
        self.0.duration_ms
    }

    /// What went wrong, for a failed attempt.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }

    /// When the attempt was made.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }

    /// When the event will be tried again, after a failure.
    async fn next_attempt_at(&self) -> Option<DateTime<Utc>> {
        self.0.next_attempt_at
    }
}

/// A page of delivery attempts, newest first.
#[derive(SimpleObject)]
pub struct WebhookDeliveryPage {
    /// The attempts.
    deliveries: Vec<WebhookDelivery>,
    /// Whether older attempts follow.
    has_more: bool,
    /// Pass as `after` for the next page.
    end_cursor: Option<String>,
}

impl From<DeliveryPage> for WebhookDeliveryPage {
    fn from(page: DeliveryPage) -> Self {
        Self {
            deliveries: page.deliveries.into_iter().map(WebhookDelivery).collect(),
            has_more: page.has_more,
            end_cursor: page.end_cursor,
        }
    }
}

/// A new webhook.
#[derive(InputObject)]
pub struct CreateWebhookInput {
    /// The project whose events it receives.
    project_id: ID,
    /// An `http` or `https` URL on a public address.
    url: String,
    /// The kinds of events it receives; at least one.
    event_kinds: Vec<EventKind>,
    /// What it is for (up to 1,000 characters).
    description: Option<String>,
}

/// Changes to a webhook; absent fields stay as they are.
#[derive(InputObject)]
pub struct UpdateWebhookInput {
    /// A new URL.
    url: Option<String>,
    /// New event kinds.
    event_kinds: Option<Vec<EventKind>>,
    /// A new description (empty clears it).
    description: Option<String>,
    /// False pauses deliveries; true resumes them (also after it was disabled), at its
    /// cursor.
    enabled: Option<bool>,
}

/// Webhook queries (project OWNERs; API tokens need `ADMIN`).
#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The project's webhooks.
    async fn webhooks(&self, ctx: &Context<'_>, project_id: ID) -> Result<Vec<Webhook>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_id = parse_uuid("projectId", &project_id)?;
        let hooks = service::list(&state.db, viewer, project_id).await?;
        Ok(hooks.into_iter().map(Webhook).collect())
    }

    /// A webhook's delivery attempts, newest first, kept 7 days.
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<WebhookDeliveryPage> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("webhookId", &webhook_id)?;
        // A variable left out reaches here as null: it means the default too.
        let first = first.unwrap_or(50);
        let page = history::deliveries(&state.db, viewer, id, first, after.as_deref()).await?;
        Ok(page.into())
    }
}

/// Webhook mutations (project OWNERs; API tokens need `ADMIN`). Each is recorded in the
/// project's log as a `WEBHOOK_*` event.
#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Adds a webhook; it receives the events after this one. The answer holds its signing
    /// secret, shown this once.
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookInput,
    ) -> Result<WebhookSecret> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let request = NewWebhook {
            project_id: parse_uuid("input.projectId", &input.project_id)?,
            url: input.url,
            event_kinds: input.event_kinds,
            description: input.description,
        };
        let (view, secret) =
            service::create(&state.events, &state.webhooks, viewer, request).await?;
        Ok(WebhookSecret {
            webhook: Webhook(view),
            secret,
        })
    }

    /// Changes a webhook's URL, event kinds, description or `enabled`.
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWebhookInput,
    ) -> Result<Webhook> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        let changes = WebhookChanges {
            url: input.url,
            event_kinds: input.event_kinds,
            description: input.description,
            enabled: input.enabled,
        };
        let view = service::update(&state.events, &state.webhooks, viewer, id, changes).await?;
        Ok(Webhook(view))
    }

    /// Gives the webhook a new signing secret, shown this once; the old one keeps signing
    /// beside it for 24 hours (both signatures are sent).
    async fn rotate_webhook_secret(&self, ctx: &Context<'_>, id: ID) -> Result<WebhookSecret> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        let overlap = chrono::Duration::hours(ROTATION_OVERLAP_HOURS);
        let (view, secret) =
            service::rotate_secret(&state.events, &state.webhooks, viewer, id, overlap).await?;
        Ok(WebhookSecret {
            webhook: Webhook(view),
            secret,
        })
    }

    /// Deletes a webhook and its delivery log.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        Ok(service::delete(&state.events, &state.webhooks, viewer, id).await?)
    }

    /// Sends one event again, as a new message (a new `webhook-id`), before the webhook
    /// goes on.
    async fn redeliver_webhook_event(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        seq: i64,
    ) -> Result<bool> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("webhookId", &webhook_id)?;
        Ok(history::redeliver(&state.db, &state.webhooks, viewer, id, seq).await?)
    }

    /// Delivers again from `fromSeq` (inclusive), as new messages; `CURSOR_EXPIRED` when the
    /// log no longer holds that event.
    async fn replay_webhook(
        &self,
        ctx: &Context<'_>,
        webhook_id: ID,
        from_seq: i64,
    ) -> Result<Webhook> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("webhookId", &webhook_id)?;
        let view = history::replay(&state.events, &state.webhooks, viewer, id, from_seq).await?;
        Ok(Webhook(view))
    }
}
