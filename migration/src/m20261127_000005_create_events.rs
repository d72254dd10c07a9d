use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261127_000002_create_projects::Projects;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Events::Id))
                    .col(uuid(Events::ProjectId))
                    .col(big_integer(Events::Seq))
                    .col(string_len(Events::Kind, 32))
                    .col(uuid_null(Events::TaskId))
                    .col(string_len(Events::ActorId, 255))
                    // {"changes": {...}|null, "task": {...}|null, "users": [...]}: everything a
                    // subscriber selects, so that delivering an event needs no further reads.
                    .col(json(Events::Payload))
                    .col(string_len_null(Events::ClientMutationId, 255))
                    .col(timestamp_with_time_zone(Events::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Events::Table, Events::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Unique per project: a second writer that somehow got the same seq fails its
        // transaction instead of forking the log. Also the index for range reads.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("uq_events_project_seq")
                    .table(Events::Table)
                    .col(Events::ProjectId)
                    .col(Events::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A task's history, for the three-way merge of stale updates.
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_events_task")
                    .table(Events::Table)
                    .col(Events::TaskId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Events {
    Table,
    Id,
    ProjectId,
    Seq,
    Kind,
    TaskId,
    ActorId,
    Payload,
    ClientMutationId,
    CreatedAt,
}
