//! Safe retries: the same user sending the same mutation with the same `clientMutationId`
//! again (after a dropped response) gets the first answer back, and nothing happens twice.
//! Receipts are kept for [`RECEIPT_TTL`].
//!
//! A write looks its receipt up after taking the project's log lock, so two copies of one
//! mutation racing each other are serialized and the second finds the first's receipt; the
//! receipt of an applied change is written in the change's own transaction.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entities::mutation_receipts;
use crate::error::AppError;

/// How long a receipt answers retries.
pub const RECEIPT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The first answer to (`user_id`, `client_mutation_id`), when there is one for `operation`.
/// The same id on another operation is `BAD_USER_INPUT`.
pub async fn lookup<T: DeserializeOwned, C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    client_mutation_id: &str,
    operation: &str,
) -> Result<Option<T>, AppError> {
    let Some(receipt) =
        mutation_receipts::Entity::find_by_id((user_id.to_owned(), client_mutation_id.to_owned()))
            .one(db)
            .await?
    else {
        return Ok(None);
    };
    if receipt.operation != operation {
        return Err(AppError::bad_input(
            "clientMutationId",
            "this clientMutationId was already used for another mutation",
        ));
    }
    let answer = serde_json::from_value(receipt.response)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("undecodable mutation receipt: {e}")))?;
    Ok(Some(answer))
}

/// Records the first answer. A receipt already there (a racing copy) wins.
pub async fn record<T: Serialize, C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    client_mutation_id: &str,
    operation: &str,
    answer: &T,
) -> Result<(), AppError> {
    let response = serde_json::to_value(answer).map_err(anyhow::Error::from)?;
    mutation_receipts::Entity::insert(mutation_receipts::ActiveModel {
        user_id: Set(user_id.to_owned()),
        client_mutation_id: Set(client_mutation_id.to_owned()),
        operation: Set(operation.to_owned()),
        response: Set(response),
        created_at: Set(Utc::now()),
    })
    .on_conflict_do_nothing_on([
        mutation_receipts::Column::UserId,
        mutation_receipts::Column::ClientMutationId,
    ])
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Deletes receipts older than [`RECEIPT_TTL`].
pub async fn prune<C: ConnectionTrait>(db: &C) -> Result<u64, sea_orm::DbErr> {
    let cutoff = Utc::now() - chrono::Duration::from_std(RECEIPT_TTL).unwrap_or_default();
    Ok(mutation_receipts::Entity::delete_many()
        .filter(mutation_receipts::Column::CreatedAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
}
