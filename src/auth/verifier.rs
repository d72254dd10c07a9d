//! Checking bearer tokens: HS256 ones signed with the server's own secret (development and
//! `tasknest token`) and, when `JWT_JWKS_URL` or `JWT_PUBLIC_KEY_FILE` is set, an identity
//! provider's. Each key verifies one algorithm only, chosen by the server (or pinned by the
//! key set), never by the token: `none`, an
//! HMAC token made with the provider's public key as its secret (algorithm confusion) and
//! any other algorithm are refused before a signature is looked at. `exp` is required,
//! `nbf` is checked, the leeway is 5 seconds, and a provider's `iss` and `aud` are checked
//! when configured. Which claims hold the user id, name and avatar is configurable.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::jwks::{Jwks, PinnedKey};
use super::verified::VerifiedTokens;
use super::{TokenError, Viewer};
use crate::config::Config;

/// Clock skew tolerated on `exp` and `nbf`, in seconds (the crate's default is 60).
pub const LEEWAY_SECS: u64 = 5;

/// A key and the only algorithm it verifies.
struct Key {
    decoding: DecodingKey,
    validation: Validation,
}

/// The rules every token meets: `exp` required, `nbf` checked, small leeway, and only
/// `algorithm`.
fn rules(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    validation
}

impl Key {
    fn new(decoding: DecodingKey, algorithm: Algorithm) -> Self {
        Self {
            decoding,
            validation: rules(algorithm),
        }
    }

    fn algorithm(&self) -> Option<Algorithm> {
        self.validation.algorithms.first().copied()
    }
}

/// Which claims make the viewer.
#[derive(Debug, Clone)]
pub struct ClaimNames {
    /// The user id's claim.
    pub user_id: String,
    /// Claims tried for the display name, in order.
    pub name: Vec<String>,
    /// Claims tried for the avatar URL, in order.
    pub avatar: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            user_id: "sub".into(),
            name: vec!["name".into(), "preferred_username".into(), "email".into()],
            avatar: vec!["picture".into(), "avatar".into()],
        }
    }
}

/// Checks tokens against the configured keys.
pub struct Verifier {
    session: Key,
    provider: Option<Key>,
    /// The provider's key set, when it publishes one.
    jwks: Option<Arc<Jwks>>,
    claims: ClaimNames,
    /// Tokens that verified, until they expire or their key changes.
    verified: VerifiedTokens,
}

impl Verifier {
    /// The server's HS256 `secret` alone, with the default claims.
    pub fn session_only(secret: &[u8]) -> Self {
        Self {
            session: Key::new(DecodingKey::from_secret(secret), Algorithm::HS256),
            provider: None,
            jwks: None,
            claims: ClaimNames::default(),
            verified: VerifiedTokens::default(),
        }
    }

    /// The keys and claims `config` names; a public key file that cannot be read or parsed
    /// stops the start with a message naming it.
    pub fn from_config(config: &Config, secret: &[u8]) -> anyhow::Result<Self> {
        let mut verifier = Self::session_only(secret);
        verifier.claims = ClaimNames {
            user_id: config.jwt_claim_user_id.clone(),
            name: config.jwt_claim_name.clone(),
            avatar: config.jwt_claim_avatar.clone(),
        };
        // Issuer and audience rules for the provider's tokens (the algorithm is the key's).
        let mut provider_rules = rules(Algorithm::RS256);
        if let Some(issuer) = &config.jwt_issuer {
            provider_rules.set_issuer(&[issuer]);
            provider_rules.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = &config.jwt_audience {
            provider_rules.set_audience(&[audience]);
            provider_rules.validate_aud = true;
            provider_rules.required_spec_claims.insert("aud".into());
        }
        if let Some(url) = &config.jwt_jwks_url {
            verifier.jwks = Some(Jwks::new(url, provider_rules.clone())?);
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|err| {
                anyhow::anyhow!("JWT_PUBLIC_KEY_FILE: cannot read {}: {err}", path.display())
            })?;
            let algorithm = config.jwt_public_key_alg;
            let decoding = public_key(&pem, algorithm).map_err(|err| {
                anyhow::anyhow!(
                    "JWT_PUBLIC_KEY_FILE: {} is not a {algorithm:?} public key in PEM: {err}",
                    path.display()
                )
            })?;
            let mut validation = provider_rules;
            validation.algorithms = vec![algorithm];
            verifier.provider = Some(Key {
                decoding,
                validation,
            });
        }
        Ok(verifier)
    }

    /// Keeps the provider's key set fresh until `shutdown` (nothing without `JWT_JWKS_URL`).
    pub fn start(&self, shutdown: CancellationToken) {
        if let Some(jwks) = &self.jwks {
            jwks.start(shutdown);
        }
    }

    /// Why the provider's keys are unavailable, when a key set is configured and they are.
    pub fn problem(&self) -> Option<String> {
        self.jwks.as_ref().and_then(|jwks| jwks.problem())
    }

    /// Whether a provider's key set is configured.
    pub fn uses_jwks(&self) -> bool {
        self.jwks.is_some()
    }

    /// Checks a token and returns the viewer it names.
    pub async fn verify(&self, token: &str) -> Result<Viewer, TokenError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(viewer) = self.verified.get(token, now, || self.current_key(token)) {
            return Ok(viewer);
        }
        let (viewer, key) = self.verify_fully(token).await?;
        self.verified.put(token, &viewer, key);
        Ok(viewer)
    }

    /// The provider's key that `token` names, as the key set holds it now.
    fn current_key(&self, token: &str) -> Option<Arc<PinnedKey>> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid;
        self.jwks.as_ref()?.cached(kid.as_deref())
    }

    /// Checks the signature and claims; also returns the key set's key that verified it.
    async fn verify_fully(
        &self,
        token: &str,
    ) -> Result<(Viewer, Option<Arc<PinnedKey>>), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // The token's `alg` only selects among the server's keys; each key checks its own.
        let fixed = [Some(&self.session), self.provider.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.algorithm() == Some(header.alg));
        let (claims, key) = match (fixed, &self.jwks) {
            (Some(key), _) => (decode(token, &key.decoding, &key.validation)?, None),
            (None, Some(jwks)) => {
                let pinned = jwks
                    .key(header.kid.as_deref())
                    .await
                    .ok_or(TokenError::BadSignature)?;
                if pinned.algorithm() != Some(header.alg) {
                    return Err(TokenError::BadSignature);
                }
                (
                    decode(token, &pinned.key, &pinned.validation)?,
                    Some(pinned),
                )
            }
            (None, None) => return Err(TokenError::BadSignature),
        };
        Ok((viewer_from(&claims, &self.claims)?, key))
    }
}

fn decode(
    token: &str,
    key: &DecodingKey,
    validation: &Validation,
) -> Result<Map<String, Value>, TokenError> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|err| classify(err.kind()))
}

/// Parses a PEM public key for `algorithm`.
fn public_key(pem: &[u8], algorithm: Algorithm) -> jsonwebtoken::errors::Result<DecodingKey> {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience => TokenError::BadSignature,
        _ => TokenError::Malformed,
    }
}

/// The first of `names` that holds a non-empty string; a NUL in it is refused as `field`.
fn text_claim(
    claims: &Map<String, Value>,
    names: &[String],
    field: &'static str,
) -> Result<Option<String>, TokenError> {
    for name in names {
        if let Some(text) = claims.get(name).and_then(Value::as_str) {
            if text.contains('\0') {
                return Err(TokenError::BadClaim(field));
            }
            let text = text.trim();
            if !text.is_empty() {
                return Ok(Some(text.to_owned()));
            }
        }
    }
    Ok(None)
}

/// The viewer a verified token's claims name.
pub(super) fn viewer_from(
    claims: &Map<String, Value>,
    names: &ClaimNames,
) -> Result<Viewer, TokenError> {
    let user_id = text_claim(claims, std::slice::from_ref(&names.user_id), "token.sub")?
        .filter(|id| id.chars().count() <= 255 && !id.chars().any(char::is_control))
        .ok_or(TokenError::Malformed)?;
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(TokenError::Malformed)?;
    let name = text_claim(claims, &names.name, "token.name")?.unwrap_or_else(|| user_id.clone());
    let avatar_url = text_claim(claims, &names.avatar, "token.avatar")?.filter(|a| a.len() <= 2048);
    Ok(Viewer {
        name: name.chars().take(255).collect(),
        user_id,
        avatar_url,
        expires_at,
        via: super::Via::Session,
    })
}
