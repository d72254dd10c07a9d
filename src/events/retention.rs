//! Pruning of events older than the retention. Numbers are never reused: the counter lives
//! on the project, so a cursor into pruned history reads as `CURSOR_EXPIRED`.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio_util::sync::CancellationToken;

use crate::entities::events;

/// How often pruning runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Deletes expired events (and mutation receipts) now and then every hour until `shutdown`.
pub async fn run(db: DatabaseConnection, retention: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(err) = prune(&db, retention).await {
            tracing::warn!(error = %err, "event pruning failed");
        }
        if let Err(err) = crate::idempotency::prune(&db).await {
            tracing::warn!(error = %err, "mutation receipt pruning failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Deletes events older than `retention`; returns how many.
pub async fn prune(db: &DatabaseConnection, retention: Duration) -> Result<u64, sea_orm::DbErr> {
    let Ok(age) = chrono::Duration::from_std(retention) else {
        return Ok(0);
    };
    let cutoff = Utc::now() - age;
    let result = events::Entity::delete_many()
        .filter(events::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?;
    if result.rows_affected > 0 {
        tracing::info!(deleted = result.rows_affected, "pruned expired events");
    }
    Ok(result.rows_affected)
}
