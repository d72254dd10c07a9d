//! Authentication: JWT claims, token minting and checking, the `Viewer` of a request, and
//! the user rows kept in step with the claims.

mod directory;
mod jwks;
mod jwt;
pub mod tokens;
mod verified;
mod verifier;

pub use directory::UserDirectory;
pub use jwt::{Claims, JwtKeys, TokenError, unix_now};
pub use tokens::{ApiScope, ApiTokens, TokenGrant};
pub use verifier::{ClaimNames, LEEWAY_SECS, Verifier};

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::Context;
use uuid::Uuid;

use crate::entities::events::ActorVia;
use crate::error::AppError;
use crate::events::log::Actor;

/// The authenticated user a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's `sub`, the user's id.
    pub user_id: String,
    /// Display name from the token.
    pub name: String,
    /// Avatar URL from the token.
    pub avatar_url: Option<String>,
    /// When the token expires (Unix seconds; `i64::MAX` for an API token without expiry).
    pub expires_at: i64,
    /// How the user signed this request.
    pub via: Via,
}

/// What a request's token was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A session token: the server's own JWT or an identity provider's.
    Session,
    /// A personal API token, with what it allows.
    ApiToken(Arc<TokenGrant>),
}

impl Viewer {
    /// The API token's grant, when the request came with one.
    pub fn grant(&self) -> Option<&TokenGrant> {
        match &self.via {
            Via::Session => None,
            Via::ApiToken(grant) => Some(grant),
        }
    }

    /// Whether the request may reach `project` at all (an API token may be limited to
    /// some projects; membership is checked separately).
    pub fn reaches(&self, project: Uuid) -> bool {
        self.grant().is_none_or(|grant| grant.reaches(project))
    }

    /// Refuses, as `FORBIDDEN`, what the request's API token is not scoped for; a session
    /// may do everything its role allows.
    pub fn require_scope(&self, scope: ApiScope) -> Result<(), AppError> {
        match self.grant() {
            Some(grant) if !grant.allows(scope) => Err(AppError::Forbidden(match scope {
                ApiScope::Read => "this API token may not read",
                ApiScope::Write => "this API token lacks the WRITE scope",
                ApiScope::Admin => "this API token lacks the ADMIN scope",
            })),
            _ => Ok(()),
        }
    }

    /// What rate limits count against: the API token when there is one (so an
    /// integration cannot spend its user's budget), else the user.
    pub fn rate_key(&self) -> Cow<'_, str> {
        match self.grant() {
            Some(grant) => Cow::Owned(format!("token:{}", grant.id)),
            None => Cow::Borrowed(&self.user_id),
        }
    }

    /// How long a connection opened now may run on this token. A token that never expires
    /// (an API token) counts as a year: longer than any connection lives. Counted in
    /// milliseconds: counted from the whole second, a connection could end up to a second
    /// early or late against a request checked at the same moment.
    pub fn remaining(&self) -> std::time::Duration {
        const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;
        let left = self
            .expires_at
            .saturating_mul(1000)
            .saturating_sub(chrono::Utc::now().timestamp_millis())
            .clamp(0, YEAR_MS);
        std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    /// Who the log records as having acted, and through what.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id.clone(),
            via: match self.via {
                Via::Session => ActorVia::Session,
                Via::ApiToken(_) => ActorVia::ApiToken,
            },
            token_name: self.grant().map(|grant| grant.name.clone()),
        }
    }
}

/// What the transport found out about the caller; put into every GraphQL request.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// A valid token.
    Viewer(Viewer),
    /// No token at all.
    Anonymous,
    /// A token that failed validation.
    Invalid(TokenError),
}

/// The viewer of this GraphQL request, or `UNAUTHENTICATED`. Every resolver but
/// introspection starts here.
pub fn viewer<'a>(ctx: &Context<'a>) -> Result<&'a Viewer, AppError> {
    match ctx.data_opt::<Authentication>() {
        Some(Authentication::Viewer(viewer)) => Ok(viewer),
        Some(Authentication::Invalid(TokenError::BadClaim(field))) => Err(AppError::bad_input(
            *field,
            TokenError::BadClaim(field).message(),
        )),
        Some(Authentication::Invalid(err)) => Err(AppError::Unauthenticated(err.message())),
        Some(Authentication::Anonymous) | None => Err(AppError::Unauthenticated(
            "a valid bearer token is required",
        )),
    }
}

/// Reads `Bearer <token>` (or a bare token) from a header value.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let token = match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}
