//! The `User` type and the `me` query.

use async_graphql::{Context, ID, Object, Result, SimpleObject};

use crate::auth;
use crate::entities::users;
use crate::events::UserSnapshot;

/// A person who can sign in and be a member of projects.
#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    /// The user's id: the `sub` claim of the user's tokens.
    pub id: ID,
    /// Display name (the id itself until the user first signs in).
    pub name: String,
    /// Avatar image URL, when the user's token provides one.
    pub avatar_url: Option<String>,
}

impl From<users::Model> for User {
    fn from(user: users::Model) -> Self {
        Self {
            id: user.id.into(),
            name: user.name,
            avatar_url: user.avatar_url,
        }
    }
}

impl From<UserSnapshot> for User {
    fn from(user: UserSnapshot) -> Self {
        Self {
            id: user.id.into(),
            name: user.name,
            avatar_url: user.avatar_url,
        }
    }
}

/// Queries about the signed-in user.
#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The user the request's token names.
    async fn me(&self, ctx: &Context<'_>) -> Result<User> {
        let viewer = auth::viewer(ctx)?;
        Ok(User {
            id: viewer.user_id.clone().into(),
            name: viewer.name.clone(),
            avatar_url: viewer.avatar_url.clone(),
        })
    }
}
