//! Keeps the `users` table in step with token claims without a write per request.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, Set};

use super::Viewer;
use crate::entities::users;

/// Entries kept before the cache is cleared; it only saves writes, so forgetting is safe.
const CACHE_LIMIT: usize = 10_000;

/// Upserts user rows from claims, skipping the write when this instance already wrote the
/// same name and avatar.
#[derive(Default)]
pub struct UserDirectory {
    seen: Mutex<HashMap<String, (String, Option<String>)>>,
}

impl UserDirectory {
    /// Creates or refreshes the viewer's user row.
    pub async fn ensure<C: ConnectionTrait>(&self, db: &C, viewer: &Viewer) -> Result<(), DbErr> {
        if viewer.grant().is_some() {
            // An API token carries no claims: its user's row is what it was read from.
            return Ok(());
        }
        let current = (viewer.name.clone(), viewer.avatar_url.clone());
        if self.lock().get(&viewer.user_id) == Some(&current) {
            return Ok(());
        }
        let now = Utc::now();
        let row = users::ActiveModel {
            id: Set(viewer.user_id.clone()),
            name: Set(viewer.name.clone()),
            avatar_url: Set(viewer.avatar_url.clone()),
            created_at: Set(now),
            updated_at: Set(now),
        };
        users::Entity::insert(row)
            .on_conflict(
                OnConflict::column(users::Column::Id)
                    .update_columns([
                        users::Column::Name,
                        users::Column::AvatarUrl,
                        users::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        let mut seen = self.lock();
        if seen.len() >= CACHE_LIMIT {
            seen.clear();
        }
        seen.insert(viewer.user_id.clone(), current);
        Ok(())
    }

    /// Makes sure a user row exists for an id that may never have signed in (added as a
    /// member by id): its name is the id until the user's own token refreshes it.
    pub async fn ensure_placeholder<C: ConnectionTrait>(
        &self,
        db: &C,
        user_id: &str,
    ) -> Result<(), DbErr> {
        let now = Utc::now();
        let row = users::ActiveModel {
            id: Set(user_id.to_owned()),
            name: Set(user_id.to_owned()),
            avatar_url: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        users::Entity::insert(row)
            .on_conflict_do_nothing_on([users::Column::Id])
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<String>)>> {
        // A poisoned cache is still a valid cache: it holds only what was fully written.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}
