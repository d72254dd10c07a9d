//! An identity provider's signing keys from its JWKS URL, so that keys change without a
//! restart. The set is cached for its `Cache-Control: max-age` (clamped to 5 s … 1 h; 5 min
//! when absent) and refreshed in the background before that runs out; when a refresh fails
//! the old keys serve until their time is up, then none do (a key the provider removed must
//! stop working). A token naming an unknown `kid` triggers a refetch at most once per
//! [`MIN_REFETCH`], so forged `kid`s cannot make TaskNest hammer the provider, while a
//! rotated key works at once. Each key is pinned to one algorithm: its `alg`, or the one its
//! type implies; symmetric (`oct`) and encryption keys are never used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio_util::sync::CancellationToken;

/// Shortest time between two fetches triggered by unknown `kid`s, and the shortest cache.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Longest time a fetched set is trusted.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a set is trusted when the provider does not say.
const DEFAULT_AGE: Duration = Duration::from_secs(300);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A verification key and its rules, built once per fetch: the provider's issuer and
/// audience, and the one algorithm the key verifies.
pub struct PinnedKey {
    pub key: DecodingKey,
    pub validation: Validation,
}

impl PinnedKey {
    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.validation.algorithms.first().copied()
    }
}

#[derive(Default)]
struct Cache {
    /// Keys by `kid` (a key without one is stored under the empty string).
    keys: HashMap<String, Arc<PinnedKey>>,
    /// When the keys stop being trusted.
    trusted_until: Option<Instant>,
    /// The last fetch attempt, successful or not.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, while it is the latest news.
    failure: Option<String>,
}

/// The provider's key set.
pub struct Jwks {
    url: String,
    /// Issuer, audience and time rules every key's validation starts from.
    rules: Validation,
    client: reqwest::Client,
    cache: Mutex<Cache>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// A key set fetched from `url` (nothing is fetched until [`start`](Self::start)); its
    /// keys check tokens by `rules` (the algorithm is each key's own).
    pub fn new(url: &str, rules: Validation) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(Arc::new(Self {
            url: url.to_owned(),
            rules,
            client,
            cache: Mutex::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fetches now and keeps the set fresh until `shutdown`; a provider that is down at
    /// start delays nothing.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        let jwks = self.clone();
        tokio::spawn(async move {
            let mut retry = Duration::from_secs(1);
            loop {
                let wait = match jwks.refresh().await {
                    Ok(age) => {
                        retry = Duration::from_secs(1);
                        // Refresh a little before the set runs out.
                        age.mul_f64(0.8)
                    }
                    Err(()) => {
                        retry = (retry * 2).min(MIN_REFETCH * 6);
                        retry
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }

    /// Why the keys are unavailable, if they are (for `/readyz`).
    pub fn problem(&self) -> Option<String> {
        let cache = self.cache();
        let trusted = cache.trusted_until.is_some_and(|t| t > Instant::now());
        match (&cache.failure, trusted) {
            (Some(failure), _) => Some(failure.clone()),
            (None, false) => Some("keys not fetched yet".to_owned()),
            (None, true) => None,
        }
    }

    /// The key a token names, refetching once per [`MIN_REFETCH`] when its `kid` is unknown.
    pub async fn key(&self, kid: Option<&str>) -> Option<Arc<PinnedKey>> {
        if let Some(key) = self.cached(kid) {
            return Some(key);
        }
        let due = self
            .cache()
            .last_attempt
            .is_none_or(|at| at.elapsed() >= MIN_REFETCH);
        if due {
            let _ = self.refresh().await;
        }
        self.cached(kid)
    }

    /// The key the set holds under `kid` now, without fetching; `None` once it is no longer
    /// trusted.
    pub(super) fn cached(&self, kid: Option<&str>) -> Option<Arc<PinnedKey>> {
        let cache = self.cache();
        if cache.trusted_until.is_none_or(|t| t <= Instant::now()) {
            return None;
        }
        cache.keys.get(kid.unwrap_or_default()).cloned()
    }

    /// Fetches the set (one fetch at a time; a caller that waited for another's fetch uses
    /// it). Returns how long the new set is trusted.
    async fn refresh(&self) -> Result<Duration, ()> {
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        {
            let cache = self.cache();
            if let (Some(at), Some(until)) = (cache.last_attempt, cache.trusted_until)
                && at >= started
                && cache.failure.is_none()
            {
                return Ok(until.saturating_duration_since(Instant::now()));
            }
        }
        let fetched = self.fetch().await;
        let mut cache = self.cache();
        cache.last_attempt = Some(Instant::now());
        match fetched {
            Ok((keys, age)) => {
                if cache.failure.take().is_some() || cache.trusted_until.is_none() {
                    tracing::info!(keys = keys.len(), "JWKS fetched");
                }
                cache.keys = keys;
                cache.trusted_until = Some(Instant::now() + age);
                Ok(age)
            }
            Err(reason) => {
                tracing::warn!(url = %self.url, %reason, "cannot fetch the JWKS; provider tokens fail until it answers");
                cache.failure = Some(reason);
                Err(())
            }
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<PinnedKey>>, Duration), String> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|err| format!("JWKS request failed: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("JWKS answered HTTP {}", response.status().as_u16()));
        }
        let age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_AGE)
            .clamp(MIN_REFETCH, MAX_AGE);
        let set: JwkSet = response
            .json()
            .await
            .map_err(|err| format!("JWKS is not a JSON key set: {err}"))?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone().unwrap_or_default();
                pin(jwk, &self.rules).map(|key| (kid, Arc::new(key)))
            })
            .collect();
        Ok((keys, age))
    }
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        (name.eq_ignore_ascii_case("max-age"))
            .then(|| seconds.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

/// A signing key of the set with the one algorithm it may verify; `None` for keys that
/// must not verify anything (symmetric, encryption, unknown or inconsistent ones).
fn pin(jwk: &Jwk, rules: &Validation) -> Option<PinnedKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let algorithm = match jwk.common.key_algorithm {
        None => implied,
        Some(declared) => {
            let declared = Algorithm::try_from(declared).ok()?;
            let same_family = matches!(
                (declared, implied),
                (
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512,
                    Algorithm::RS256
                ) | (Algorithm::ES256, Algorithm::ES256)
                    | (Algorithm::ES384, Algorithm::ES384)
                    | (Algorithm::EdDSA, Algorithm::EdDSA)
            );
            if !same_family {
                return None;
            }
            declared
        }
    };
    let mut validation = rules.clone();
    validation.algorithms = vec![algorithm];
    Some(PinnedKey {
        key: DecodingKey::from_jwk(jwk).ok()?,
        validation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn symmetric_keys_in_a_set_are_never_used() {
        let jwk: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"
        }))
        .expect("a JWK");
        assert!(pin(&jwk, &Validation::new(Algorithm::RS256)).is_none());
    }
}
