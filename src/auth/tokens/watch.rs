//! Watching one API token for the life of a connection (a WebSocket, a stream), so that
//! revoking it ends what it opened.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ApiTokens, Notice, TokenGrant};
use crate::auth::Viewer;

/// One connection's watch on its API token.
pub struct TokenWatch {
    grant: Arc<TokenGrant>,
    notices: broadcast::Receiver<Notice>,
    tokens: Arc<ApiTokens>,
    db: DatabaseConnection,
    /// A recheck was asked for and has not finished (the future may be dropped mid-way).
    recheck: bool,
}

impl ApiTokens {
    /// A watch for `viewer`'s token; `None` for a session (its expiry is the only end).
    pub fn watch(self: &Arc<Self>, db: &DatabaseConnection, viewer: &Viewer) -> Option<TokenWatch> {
        let grant = match &viewer.via {
            crate::auth::Via::ApiToken(grant) => grant.clone(),
            crate::auth::Via::Session => return None,
        };
        Some(TokenWatch {
            grant,
            notices: self.notices(),
            tokens: self.clone(),
            db: db.clone(),
            recheck: false,
        })
    }
}

impl TokenWatch {
    /// Resolves once the token is revoked (or, on a recheck, found unusable). Cancel-safe:
    /// a recheck interrupted by another branch is redone on the next call.
    pub async fn revoked(&mut self) {
        loop {
            if self.recheck {
                // Boxed: a rare query, whose state every connection's waiting future would
                // otherwise carry.
                if !Box::pin(self.tokens.still_valid(&self.db, &self.grant)).await {
                    return;
                }
                self.recheck = false;
            }
            match self.notices.recv().await {
                Ok(Notice::Revoked(id)) if id == self.grant.id => return,
                Ok(Notice::Revoked(_)) => {}
                Ok(Notice::Recheck) | Err(RecvError::Lagged(_)) => self.recheck = true,
                // The sender lives as long as the application: nothing more will come.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

/// [`TokenWatch::revoked`] for an optional watch: never resolves without one.
pub async fn revoked(watch: &mut Option<TokenWatch>) {
    match watch {
        Some(watch) => watch.revoked().await,
        None => std::future::pending().await,
    }
}
