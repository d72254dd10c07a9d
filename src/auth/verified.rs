//! Tokens verified before, by their exact text. A client sends the same token with every
//! request until it renews it, and checking its signature again each time costs 41k
//! instructions for the server's own HS256 (7% of an `updateTask`, callgrind), and more for a
//! provider's RS256 or ES256. Envoy's JWT filter keeps the same cache.
//!
//! An entry is served only while it would still verify the same way:
//! - before the token's `exp` (without the leeway: the last seconds go through the full
//!   check, which applies it);
//! - for a provider's token, while the key that verified it is still the one the key set
//!   holds under its `kid`: a refetched, rotated or expired key set sends it through the
//!   full check again, so a key the provider withdrew stops working as soon as the server
//!   learns of it.
//!
//! Tokens that fail are never kept; API tokens (`tn_…`, checked against the database, and
//! revocable) never come here.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::Viewer;
use super::jwks::PinnedKey;

/// Tokens kept; the least recently used goes first.
pub const CAPACITY: usize = 4096;
/// Longer tokens are checked every time, so that the cache's memory stays bounded.
pub const MAX_CACHED_BYTES: usize = 4096;

struct Entry {
    viewer: Viewer,
    /// The provider's key that verified it (`None`: a key fixed for the process's life).
    key: Option<Arc<PinnedKey>>,
}

/// The cache, one per verifier.
pub struct VerifiedTokens {
    entries: Mutex<LruCache<String, Entry>>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }
}

impl VerifiedTokens {
    /// The viewer `token` named when it was verified, if it still holds at `now` (Unix
    /// seconds) and, for a provider's token, `current_key` is the key that verified it.
    pub fn get(
        &self,
        token: &str,
        now: i64,
        current_key: impl FnOnce() -> Option<Arc<PinnedKey>>,
    ) -> Option<Viewer> {
        // Copied out so that the key check (a header decode, the key set's own lock) runs
        // without holding this cache.
        let (viewer, key) = {
            let mut entries = self.lock();
            let entry = entries.get(token)?;
            (entry.viewer.clone(), entry.key.clone())
        };
        let key_holds = match &key {
            None => true,
            Some(key) => current_key().is_some_and(|current| Arc::ptr_eq(key, &current)),
        };
        if now < viewer.expires_at && key_holds {
            return Some(viewer);
        }
        self.lock().pop(token);
        None
    }

    /// Keeps `token`, just verified by `key` (`None`: the server's own secret or a key
    /// file).
    pub fn put(&self, token: &str, viewer: &Viewer, key: Option<Arc<PinnedKey>>) {
        if token.len() > MAX_CACHED_BYTES {
            return;
        }
        let entry = Entry {
            viewer: viewer.clone(),
            key,
        };
        self.lock().put(token.to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Entry>> {
        // The cache holds no invariant a panic could break halfway.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Via;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    fn viewer(expires_at: i64) -> Viewer {
        Viewer {
            user_id: "alice".into(),
            name: "Alice".into(),
            avatar_url: None,
            expires_at,
            via: Via::Session,
        }
    }

    fn key() -> Arc<PinnedKey> {
        Arc::new(PinnedKey {
            key: DecodingKey::from_secret(b"k"),
            validation: Validation::new(Algorithm::RS256),
        })
    }

    #[test]
    fn a_token_is_served_from_the_cache_until_its_expiry_and_not_after() {
        let cache = VerifiedTokens::default();
        cache.put("t", &viewer(1_000), None);
        assert_eq!(cache.get("t", 999, || None), Some(viewer(1_000)));
        assert_eq!(
            cache.get("t", 1_000, || None),
            None,
            "expired: checked again"
        );
        assert_eq!(cache.get("t", 999, || None), None, "and no longer kept");
        assert_eq!(cache.get("other", 0, || None), None);
    }

    #[test]
    fn a_providers_token_is_served_only_while_its_key_is_the_current_one() {
        let cache = VerifiedTokens::default();
        let verified_with = key();
        cache.put("t", &viewer(1_000), Some(verified_with.clone()));
        assert!(cache.get("t", 0, || Some(verified_with.clone())).is_some());
        // The key set was refetched (a rotation, or the same key fetched again).
        assert!(cache.get("t", 0, || Some(key())).is_none());
        cache.put("t", &viewer(1_000), Some(verified_with.clone()));
        // The key set no longer holds the kid, or is no longer trusted.
        assert!(cache.get("t", 0, || None).is_none());
    }

    #[test]
    fn long_tokens_are_not_kept() {
        let cache = VerifiedTokens::default();
        let token = "x".repeat(MAX_CACHED_BYTES + 1);
        cache.put(&token, &viewer(1_000), None);
        assert_eq!(cache.get(&token, 0, || None), None);
    }
}
