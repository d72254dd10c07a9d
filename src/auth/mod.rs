//! Authentication: JWT claims, token minting and checking, the `Viewer` of a request, and
//! the user rows kept in step with the claims.

mod directory;
mod jwks;
mod jwt;
mod verifier;

pub use directory::UserDirectory;
pub use jwt::{Claims, JwtKeys, TokenError, unix_now};
pub use verifier::{ClaimNames, LEEWAY_SECS, Verifier};

use async_graphql::Context;

use crate::error::AppError;

/// The authenticated user a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// The token's `sub`, the user's id.
    pub user_id: String,
    /// Display name from the token.
    pub name: String,
    /// Avatar URL from the token.
    pub avatar_url: Option<String>,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
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
