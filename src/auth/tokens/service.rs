//! Creating, listing and revoking a user's API tokens. Only a signed-in person manages
//! tokens: a token cannot create, list or revoke tokens.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use super::{ApiScope, ApiTokens, TokenGrant, require_session, secret};
use crate::auth::Viewer;
use crate::entities::{api_tokens, project_members, projects};
use crate::error::AppError;
use crate::validate;

/// Live (not revoked, not expired) tokens one user may hold.
pub const MAX_LIVE_TOKENS: u64 = 100;
/// Projects one token may name.
pub const MAX_PROJECTS: usize = 100;

/// What `createApiToken` asks for.
#[derive(Debug)]
pub struct CreateToken {
    pub name: String,
    pub scopes: Vec<ApiScope>,
    pub project_ids: Option<Vec<Uuid>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a token for the (signed-in) viewer and returns it with its secret, which is
/// never available again.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    viewer: &Viewer,
    input: CreateToken,
) -> Result<(api_tokens::Model, String), AppError> {
    require_session(viewer)?;
    let name = validate::title("input.name", &input.name)?;
    let scopes: BTreeSet<ApiScope> = input.scopes.into_iter().collect();
    if scopes.is_empty() {
        return Err(AppError::bad_input(
            "input.scopes",
            "input.scopes must name at least one scope",
        ));
    }
    let now = Utc::now();
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(AppError::bad_input(
            "input.expiresAt",
            "input.expiresAt must be in the future",
        ));
    }
    let project_ids = match input.project_ids {
        None => None,
        Some(ids) => Some(member_projects(db, viewer, ids).await?),
    };
    let live = api_tokens::Entity::find()
        .filter(api_tokens::Column::UserId.eq(&viewer.user_id))
        .filter(api_tokens::Column::RevokedAt.is_null())
        .filter(
            api_tokens::Column::ExpiresAt
                .is_null()
                .or(api_tokens::Column::ExpiresAt.gt(now)),
        )
        .count(db)
        .await?;
    if live >= MAX_LIVE_TOKENS {
        return Err(AppError::bad_input(
            "input",
            format!("a user may hold at most {MAX_LIVE_TOKENS} live API tokens; revoke one first"),
        ));
    }
    let secret = secret::generate();
    let scopes: Vec<ApiScope> = scopes.into_iter().collect();
    let token = api_tokens::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(viewer.user_id.clone()),
        name: Set(name),
        secret_hash: Set(secret::hash(&secret)),
        scopes: Set(ApiScope::join(&scopes)),
        project_ids: Set(project_ids.map(|ids| {
            serde_json::Value::Array(
                ids.iter()
                    .map(|id| serde_json::Value::String(id.to_string()))
                    .collect(),
            )
        })),
        created_at: Set(now),
        expires_at: Set(input.expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((token, secret))
}

/// The (signed-in) viewer's tokens, newest first, revoked and expired ones included.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    viewer: &Viewer,
) -> Result<Vec<api_tokens::Model>, AppError> {
    require_session(viewer)?;
    Ok(api_tokens::Entity::find()
        .filter(api_tokens::Column::UserId.eq(&viewer.user_id))
        .order_by_desc(api_tokens::Column::CreatedAt)
        .order_by_desc(api_tokens::Column::Id)
        .all(db)
        .await?)
}

/// Revokes one of the viewer's tokens, at once on every instance: requests with it fail
/// and its open subscriptions end. Revoking a revoked token changes nothing.
pub async fn revoke<C: ConnectionTrait>(
    db: &C,
    tokens: &ApiTokens,
    viewer: &Viewer,
    id: Uuid,
) -> Result<bool, AppError> {
    require_session(viewer)?;
    let token = api_tokens::Entity::find_by_id(id)
        .filter(api_tokens::Column::UserId.eq(&viewer.user_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("API token"))?;
    if token.revoked_at.is_none() {
        let mut active = token.into_active_model();
        active.revoked_at = Set(Some(Utc::now()));
        active.update(db).await?;
    }
    tokens.announce(id);
    Ok(true)
}

/// Whether `token` may be used at `now`.
pub(super) fn usable(token: &api_tokens::Model, now: DateTime<Utc>) -> bool {
    token.revoked_at.is_none() && token.expires_at.is_none_or(|at| at > now)
}

/// What a stored token allows.
pub(super) fn grant_of(token: &api_tokens::Model) -> TokenGrant {
    TokenGrant {
        id: token.id,
        name: token.name.clone(),
        scopes: ApiScope::split(&token.scopes),
        project_ids: project_ids(token),
    }
}

/// The stored project list (`None`: every project of the user).
pub(super) fn project_ids(token: &api_tokens::Model) -> Option<Vec<Uuid>> {
    let ids = token.project_ids.as_ref()?.as_array()?;
    Some(
        ids.iter()
            .filter_map(|id| id.as_str().and_then(|id| Uuid::parse_str(id).ok()))
            .collect(),
    )
}

/// `ids`, deduplicated, when each is a live project the viewer belongs to; a token may
/// only be limited to projects its user can see.
async fn member_projects<C: ConnectionTrait>(
    db: &C,
    viewer: &Viewer,
    ids: Vec<Uuid>,
) -> Result<Vec<Uuid>, AppError> {
    let ids: BTreeSet<Uuid> = ids.into_iter().collect();
    if ids.is_empty() {
        return Err(AppError::bad_input(
            "input.projectIds",
            "input.projectIds must name at least one project (null means all of them)",
        ));
    }
    if ids.len() > MAX_PROJECTS {
        return Err(AppError::bad_input(
            "input.projectIds",
            format!("input.projectIds may name at most {MAX_PROJECTS} projects"),
        ));
    }
    let live: Vec<Uuid> = projects::Entity::find()
        .filter(projects::Column::Id.is_in(ids.iter().copied()))
        .filter(projects::Column::DeletedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|project| project.id)
        .collect();
    let member_of = project_members::Entity::find()
        .filter(project_members::Column::UserId.eq(&viewer.user_id))
        .filter(project_members::Column::ProjectId.is_in(live))
        .count(db)
        .await?;
    if member_of != ids.len() as u64 {
        return Err(AppError::NotFound("project"));
    }
    Ok(ids.into_iter().collect())
}
