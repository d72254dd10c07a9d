use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(MutationReceipts::Table)
                    .if_not_exists()
                    .col(string_len(MutationReceipts::UserId, 255))
                    .col(string_len(MutationReceipts::ClientMutationId, 255))
                    // Which mutation on which target, so a reused id on another is refused.
                    .col(string_len(MutationReceipts::Operation, 128))
                    // The first answer, returned again to a retry.
                    .col(json(MutationReceipts::Response))
                    .col(timestamp_with_time_zone(MutationReceipts::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(MutationReceipts::UserId)
                            .col(MutationReceipts::ClientMutationId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_mutation_receipts_created_at")
                    .table(MutationReceipts::Table)
                    .col(MutationReceipts::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MutationReceipts::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum MutationReceipts {
    Table,
    UserId,
    ClientMutationId,
    Operation,
    Response,
    CreatedAt,
}
