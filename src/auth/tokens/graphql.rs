//! `ApiToken`, `apiTokens`, `createApiToken` and `revokeApiToken`.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{ApiScope, CreateToken, service};
use crate::auth;
use crate::entities::api_tokens;
use crate::ids::parse_uuid;
use crate::state::AppState;

/// A personal API token for an integration. The secret is shown only when it is created.
pub struct ApiToken(api_tokens::Model);

/// A personal API token for an integration. The secret is shown only when it is created.
#[Object]
impl ApiToken {
    /// The token's id (for `revokeApiToken`).
    async fn id(&self) -> ID {
        self.0.id.into()
    }

    /// What the token is for, as its user named it; recorded on the events it causes.
    async fn name(&self) -> &str {
        &self.0.name
    }

    /// What the token may do (every token may read).
    async fn scopes(&self) -> Vec<ApiScope> {
        ApiScope::split(&self.0.scopes)
    }

    /// The projects the token may reach; null: every project of its user.
    async fn project_ids(&self) -> Option<Vec<ID>> {
        service::project_ids(&self.0).map(|ids| ids.into_iter().map(ID::from).collect())
    }

    /// When the token was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// When the token stops working; null: never.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// When the token was last used (to the minute).
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    /// When the token was revoked; null while it is live.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A new token and its secret.
#[derive(SimpleObject)]
pub struct ApiTokenCreated {
    /// The token.
    token: ApiToken,
    /// The secret (`tn_…`), to send as `Authorization: Bearer <secret>`. Shown only now:
    /// TaskNest keeps only its hash.
    secret: String,
}

/// What a new token may do.
#[derive(InputObject)]
pub struct CreateApiTokenInput {
    /// What the token is for (1 to 200 characters), e.g. "CI bot".
    name: String,
    /// Its scopes; at least one.
    scopes: Vec<ApiScope>,
    /// The projects it may reach (the user's own); null: every project of the user, now
    /// and later.
    project_ids: Option<Vec<ID>>,
    /// When it stops working; null: never.
    expires_at: Option<DateTime<Utc>>,
}

/// API token queries.
#[derive(Default)]
pub struct ApiTokenQuery;

#[Object]
impl ApiTokenQuery {
    /// The signed-in user's API tokens, newest first (revoked ones too); never the secrets.
    /// Requires a session: API tokens cannot list tokens.
    async fn api_tokens(&self, ctx: &Context<'_>) -> Result<Vec<ApiToken>> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let tokens = service::list(&state.db, viewer).await?;
        Ok(tokens.into_iter().map(ApiToken).collect())
    }
}

/// API token mutations.
#[derive(Default)]
pub struct ApiTokenMutation;

#[Object]
impl ApiTokenMutation {
    /// Creates a personal API token; the answer holds its secret, shown this once.
    /// Requires a session: an API token cannot create tokens.
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        input: CreateApiTokenInput,
    ) -> Result<ApiTokenCreated> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let project_ids = input
            .project_ids
            .map(|ids| {
                ids.iter()
                    .map(|id| parse_uuid("input.projectIds", id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let request = CreateToken {
            name: input.name,
            scopes: input.scopes,
            project_ids,
            expires_at: input.expires_at,
        };
        let (token, secret) = service::create(&state.db, viewer, request).await?;
        Ok(ApiTokenCreated {
            token: ApiToken(token),
            secret,
        })
    }

    /// Revokes one of the signed-in user's tokens: requests with it fail at once and its
    /// open subscriptions end within seconds, on every instance. Requires a session.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let viewer = auth::viewer(ctx)?;
        let state = AppState::from_ctx(ctx)?;
        let id = parse_uuid("id", &id)?;
        Ok(service::revoke(&state.db, &state.api_tokens, viewer, id).await?)
    }
}
