//! HS256 tokens: minting for `tasknest token`, the dev banner and tests (checking them is
//! the [`super::Verifier`]'s).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// The claims TaskNest reads. Other claims are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Display name; defaults to `sub` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Avatar URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Expiry, Unix seconds (required).
    pub exp: i64,
    /// Not before, Unix seconds (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Why a token was refused. The messages are safe to send to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature or algorithm is not accepted")]
    BadSignature,
    #[error("the token is malformed or lacks required claims")]
    Malformed,
    /// A claim holds text no database can store (U+0000); the field is `token.<claim>`.
    #[error("a claim of the token holds the NUL character")]
    BadClaim(&'static str),
    /// An API token that does not exist (any more), was revoked or has expired.
    #[error("the API token is unknown, revoked or expired")]
    UnknownApiToken,
    /// The token could not be checked (the database is unreachable); the cause is logged.
    #[error("the token cannot be checked right now")]
    Unavailable,
}

impl TokenError {
    /// The message as a static string, for error values that outlive the request.
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::BadSignature => "the token's signature or algorithm is not accepted",
            Self::Malformed => "the token is malformed or lacks required claims",
            Self::BadClaim(_) => "a claim of the token holds the NUL character (U+0000)",
            Self::UnknownApiToken => "the API token is unknown, revoked or expired",
            Self::Unavailable => "the token cannot be checked right now; try again",
        }
    }
}

/// Keys and validation rules for one HS256 secret.
pub struct JwtKeys {
    encoding: EncodingKey,
}

impl JwtKeys {
    /// Keys for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
        }
    }

    /// Signs a token for a user valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        name: &str,
        avatar: Option<&str>,
        ttl: Duration,
    ) -> anyhow::Result<String> {
        let now = unix_now();
        let claims = Claims {
            sub: sub.to_owned(),
            name: Some(name.to_owned()),
            avatar: avatar.map(str::to_owned),
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            nbf: None,
            iat: Some(now),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims (tests use this for expired or not-yet-valid tokens).
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::Verifier;
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn a_minted_token_verifies() {
        let keys = JwtKeys::new(SECRET);
        let token = keys
            .mint("alice", "Alice", None, Duration::from_secs(60))
            .unwrap();
        let viewer = Verifier::session_only(SECRET).verify(&token).await.unwrap();
        assert_eq!(viewer.user_id, "alice");
        assert_eq!(viewer.name, "Alice");
    }

    #[tokio::test]
    async fn a_token_past_the_leeway_is_expired() {
        let keys = JwtKeys::new(SECRET);
        let claims = Claims {
            sub: "a".into(),
            name: None,
            avatar: None,
            exp: unix_now() - 10,
            nbf: None,
            iat: None,
        };
        assert_eq!(
            Verifier::session_only(SECRET)
                .verify(&keys.sign(&claims).unwrap())
                .await,
            Err(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn a_token_from_another_secret_is_refused() {
        let other = JwtKeys::new(b"another-secret-another-secret-xx");
        let token = other.mint("a", "A", None, Duration::from_secs(60)).unwrap();
        assert_eq!(
            Verifier::session_only(SECRET).verify(&token).await,
            Err(TokenError::BadSignature)
        );
    }
}
