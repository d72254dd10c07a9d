use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Projects::Table)
                    .if_not_exists()
                    .col(uuid(Projects::Id).primary_key())
                    .col(string_len(Projects::Name, 255))
                    .col(text_null(Projects::Description))
                    // The per-project event counter: the next event takes last_seq + 1 under the
                    // row lock of this UPDATE, so seq never repeats or skips, even after pruning.
                    .col(big_integer(Projects::LastSeq).default(0))
                    .col(string_len(Projects::CreatedBy, 255))
                    .col(timestamp_with_time_zone(Projects::CreatedAt))
                    .col(timestamp_with_time_zone(Projects::UpdatedAt))
                    // Deleted projects keep their row so that their event log (and the
                    // PROJECT_DELETED event) stays readable by the realtime layer.
                    .col(timestamp_with_time_zone_null(Projects::DeletedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Projects::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Projects {
    Table,
    Id,
    Name,
    Description,
    LastSeq,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}
