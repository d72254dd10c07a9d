//! Personal API tokens for integrations: scoped to `READ`/`WRITE`/`ADMIN`, optionally to
//! some projects, revocable, and shown only once. A token acts as its user, within its
//! scopes and projects and the user's own role.
//!
//! Revocation reaches open connections on every instance: the revoking instance publishes
//! the token's id on the bus, and each instance tells its connections through
//! [`ApiTokens::notices`]. A notice lost while the bus was down is covered by a
//! [`Notice::Recheck`], on which every token connection looks at its row again.

mod graphql;
mod secret;
mod service;
mod watch;

pub use graphql::{ApiTokenMutation, ApiTokenQuery};
pub use secret::{hash as hash_secret, looks_like};
pub use service::{CreateToken, create, list, revoke};
pub use watch::{TokenWatch, revoked};

use std::sync::Arc;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{TokenError, Via, Viewer};
use crate::entities::{api_tokens, users};
use crate::error::AppError;
use crate::realtime::{Bus, ChannelHandler};

/// The bus channel of revocations.
pub const CHANNEL: &str = "tasknest:tokens";

/// `last_used_at` is written at most this often per token (seconds), not on every request.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// What an API token may do. Every token may read: `WRITE` and `ADMIN` act on what they
/// read, so each includes `READ`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, async_graphql::Enum, Serialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApiScope {
    /// Queries and subscriptions.
    Read,
    /// Task mutations (create, update, delete tasks).
    Write,
    /// Projects, members and webhooks.
    Admin,
}

impl ApiScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Write => "WRITE",
            Self::Admin => "ADMIN",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "READ" => Some(Self::Read),
            "WRITE" => Some(Self::Write),
            "ADMIN" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Stored form: sorted, comma-separated.
    fn join(scopes: &[Self]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn split(stored: &str) -> Vec<Self> {
        stored.split(',').filter_map(Self::parse).collect()
    }
}

/// What a request made with an API token is allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token's id.
    pub id: Uuid,
    /// The token's name (recorded on events it causes).
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<ApiScope>,
    /// The projects it may reach; `None`: all of its user's.
    pub project_ids: Option<Vec<Uuid>>,
}

impl TokenGrant {
    /// Whether the token holds `scope` (every token holds `READ`).
    pub fn allows(&self, scope: ApiScope) -> bool {
        scope == ApiScope::Read || self.scopes.contains(&scope)
    }

    /// Whether the token may reach `project`.
    pub fn reaches(&self, project: Uuid) -> bool {
        self.project_ids
            .as_ref()
            .is_none_or(|ids| ids.contains(&project))
    }
}

/// A change to some token that open connections must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// This token was revoked.
    Revoked(Uuid),
    /// Notices may have been lost: every token connection checks its row again.
    Recheck,
}

/// Checks API token secrets and spreads revocations.
pub struct ApiTokens {
    local: broadcast::Sender<Notice>,
    bus: Arc<dyn Bus>,
}

impl ApiTokens {
    /// Revocations travel to other instances on `bus`.
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            local: broadcast::channel(64).0,
            bus,
        })
    }

    /// The viewer a secret stands for: its user, acting through the token. Unknown,
    /// malformed, revoked and expired secrets all read as `UnknownApiToken` (nothing tells a
    /// guesser which).
    pub async fn verify<C: ConnectionTrait>(
        &self,
        db: &C,
        secret: &str,
    ) -> Result<Viewer, TokenError> {
        if !secret::well_formed(secret) {
            return Err(TokenError::UnknownApiToken);
        }
        let found = api_tokens::Entity::find()
            .filter(api_tokens::Column::SecretHash.eq(secret::hash(secret)))
            .find_also_related(users::Entity)
            .one(db)
            .await;
        let (token, user) = match found {
            Ok(Some((token, Some(user)))) => (token, user),
            Ok(_) => return Err(TokenError::UnknownApiToken),
            Err(err) => {
                tracing::error!(error = %err, "cannot look up an API token");
                return Err(TokenError::Unavailable);
            }
        };
        let now = Utc::now();
        if !service::usable(&token, now) {
            return Err(TokenError::UnknownApiToken);
        }
        if token
            .last_used_at
            .is_none_or(|at| (now - at).num_seconds() >= LAST_USED_GRANULARITY_SECS)
        {
            let touched = api_tokens::Entity::update_many()
                .col_expr(api_tokens::Column::LastUsedAt, Expr::value(now))
                .filter(api_tokens::Column::Id.eq(token.id))
                .exec(db)
                .await;
            if let Err(err) = touched {
                // Only bookkeeping: the request goes on.
                tracing::warn!(error = %err, token = %token.id, "cannot record token use");
            }
        }
        Ok(Viewer {
            user_id: user.id,
            name: user.name,
            avatar_url: user.avatar_url,
            expires_at: token.expires_at.map_or(i64::MAX, expiry_second),
            via: Via::ApiToken(Arc::new(service::grant_of(&token))),
        })
    }

    /// Whether the token behind `grant` is still usable (for connections that outlive a
    /// request). A database error counts as usable: a blip must not close every stream.
    pub async fn still_valid<C: ConnectionTrait>(&self, db: &C, grant: &TokenGrant) -> bool {
        match api_tokens::Entity::find_by_id(grant.id).one(db).await {
            Ok(Some(token)) => service::usable(&token, Utc::now()),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, token = %grant.id, "cannot recheck an API token");
                true
            }
        }
    }

    /// Revocations from now on, on this and every other instance.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.local.subscribe()
    }

    /// Tells every instance that `id` is revoked.
    fn announce(&self, id: Uuid) {
        let notice = Notice::Revoked(id);
        let _ = self.local.send(notice);
        self.bus.publish(
            CHANNEL.into(),
            Box::new(move || serde_json::to_vec(&notice).ok()),
        );
    }
}

impl ChannelHandler for ApiTokens {
    fn receive(&self, payload: &[u8]) {
        match serde_json::from_slice::<Notice>(payload) {
            Ok(notice) => {
                let _ = self.local.send(notice);
            }
            Err(err) => tracing::warn!(error = %err, "undecodable token notice on the bus"),
        }
    }

    fn reconnected(&self) {
        let _ = self.local.send(Notice::Recheck);
    }
}

/// Refuses what only a signed-in person may do (managing API tokens).
pub fn require_session(viewer: &Viewer) -> Result<(), AppError> {
    match viewer.via {
        Via::Session => Ok(()),
        Via::ApiToken(_) => Err(AppError::Forbidden(
            "API tokens cannot manage API tokens: sign in to do this",
        )),
    }
}

/// An API token's expiry as the whole second a connection on it may last until, rounded up:
/// a connection must not end before the token does, or a request right after the close
/// would still be let in.
fn expiry_second(at: chrono::DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

#[cfg(test)]
mod expiry_tests {
    use super::expiry_second;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_connection_never_ends_before_its_api_token_expires() {
        let whole = Utc.timestamp_opt(1_000, 0).unwrap();
        let later = Utc.timestamp_opt(1_000, 700_000_000).unwrap();
        assert_eq!(expiry_second(whole), 1_000);
        assert_eq!(expiry_second(later), 1_001);
    }
}
