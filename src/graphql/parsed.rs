//! Parsed documents, kept by their text. A client sends the same few documents over and over
//! (an app's queries, mutations and subscriptions differ in their variables, not their
//! text), and parsing one costs far more than copying its parsed form: about 30 µs against
//! 1 µs for a small `updateTask`, whose parse was 28% of the server's instructions per write
//! (callgrind; README, "sixth pass"). GraphQL Yoga and
//! graphql-java keep such a cache for the same reason.
//!
//! Only the parse is kept. Everything that depends on the request (the document limits,
//! validation against the schema, the variables) still runs on every request, so a cached
//! document is checked exactly as a freshly parsed one. Documents that do not parse are not
//! kept: execution reports their error as before.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::Request;
use async_graphql::parser::parse_query;
use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;

/// Distinct documents kept; the least recently used goes first. An app has tens to a few
/// hundred documents.
pub const CAPACITY: usize = 512;
/// Longer documents are parsed every time, so that the cache's memory stays bounded
/// (`CAPACITY` × this, plus their parsed form) whatever clients send.
pub const MAX_CACHED_BYTES: usize = 8 * 1024;

/// The cache, shared by every transport of an instance.
pub struct ParsedDocuments {
    documents: Mutex<LruCache<String, Arc<ExecutableDocument>>>,
    hits: Counter,
    misses: Counter,
}

impl ParsedDocuments {
    /// An empty cache counting its `hits` and `misses` (a miss is a document parsed here).
    pub fn new(hits: Counter, misses: Counter) -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            documents: Mutex::new(LruCache::new(capacity)),
            hits,
            misses,
        }
    }

    /// A request for `query`, already parsed when the document parses.
    pub fn request(&self, query: String) -> Request {
        let parsed = self.parse(&query);
        let mut request = Request::new(query);
        if let Some(document) = parsed {
            request.set_parsed_query(document);
        }
        request
    }

    /// The parsed form of `query`: a copy of the kept one, or parsed now (and kept when it
    /// is short enough). `None` when it does not parse.
    fn parse(&self, query: &str) -> Option<ExecutableDocument> {
        let cacheable = query.len() <= MAX_CACHED_BYTES;
        if cacheable && let Some(document) = self.lock().get(query).cloned() {
            self.hits.inc();
            return Some(ExecutableDocument::clone(&document));
        }
        let document = parse_query(query).ok()?;
        if cacheable {
            self.misses.inc();
            self.lock()
                .put(query.to_owned(), Arc::new(document.clone()));
        }
        Some(document)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ExecutableDocument>>> {
        // The cache holds no invariant a panic could break halfway.
        self.documents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Documents kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no document is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ParsedDocuments {
        ParsedDocuments::new(Counter::default(), Counter::default())
    }

    #[test]
    fn a_document_seen_before_is_copied_not_parsed_again() {
        let cache = cache();
        let query = "query($id: ID!) { task(id: $id) { id title } }";
        let mut first = cache.request(query.to_owned());
        let mut second = cache.request(query.to_owned());
        assert_eq!((cache.hits.get(), cache.misses.get()), (1, 1));
        assert_eq!(cache.len(), 1);
        let expected = parse_query(query).expect("parses");
        for request in [&mut first, &mut second] {
            assert_eq!(request.query, query);
            let parsed = request.parsed_query().expect("parsed");
            assert_eq!(format!("{parsed:?}"), format!("{expected:?}"));
        }
    }

    #[test]
    fn a_document_that_does_not_parse_is_left_to_execution_and_not_kept() {
        let cache = cache();
        let mut request = cache.request("query { task(".to_owned());
        assert!(cache.is_empty());
        assert_eq!((cache.hits.get(), cache.misses.get()), (0, 0));
        assert!(
            request.parsed_query().is_err(),
            "execution reports the error"
        );
    }

    #[test]
    fn long_documents_are_parsed_every_time_and_not_kept() {
        let cache = cache();
        let padding = "#".repeat(MAX_CACHED_BYTES);
        let query = format!("{padding}\n{{ __typename }}");
        let mut request = cache.request(query.clone());
        cache.request(query);
        assert!(cache.is_empty());
        assert_eq!((cache.hits.get(), cache.misses.get()), (0, 0));
        assert!(request.parsed_query().is_ok());
    }

    #[test]
    fn the_least_recently_used_document_goes_first_when_full() {
        let cache = cache();
        let query = |i: usize| format!("query Q{i} {{ __typename }}");
        for i in 0..CAPACITY {
            cache.request(query(i));
        }
        cache.request(query(0)); // used again: now the most recent
        cache.request(query(CAPACITY)); // pushes out Q1, the least recent
        assert_eq!(cache.len(), CAPACITY);
        let misses = cache.misses.get();
        cache.request(query(0));
        assert_eq!(cache.misses.get(), misses, "Q0 was kept");
        cache.request(query(1));
        assert_eq!(cache.misses.get(), misses + 1, "Q1 was parsed again");
    }
}
