use sea_orm_migration::{prelude::*, schema::*};

use crate::m20261127_000001_create_users::Users;
use crate::m20261127_000002_create_projects::Projects;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(uuid(Tasks::Id).primary_key())
                    .col(uuid(Tasks::ProjectId))
                    .col(string_len(Tasks::Title, 1024))
                    .col(text(Tasks::Description))
                    .col(string_len(Tasks::Status, 16))
                    .col(double(Tasks::Position))
                    .col(integer(Tasks::Priority))
                    .col(timestamp_with_time_zone_null(Tasks::DueAt))
                    .col(string_len_null(Tasks::AssigneeId, 255))
                    .col(integer(Tasks::Version))
                    .col(string_len(Tasks::CreatedBy, 255))
                    .col(string_len(Tasks::UpdatedBy, 255))
                    .col(timestamp_with_time_zone(Tasks::CreatedAt))
                    .col(timestamp_with_time_zone(Tasks::UpdatedAt))
                    // Tombstone: a deleted task keeps its row so that a later write to it is a
                    // TASK_DELETED conflict rather than NOT_FOUND.
                    .col(timestamp_with_time_zone_null(Tasks::DeletedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Tasks::Table, Tasks::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Tasks::Table, Tasks::AssigneeId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // Project.tasks pages by (position, id).
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_tasks_project_position")
                    .table(Tasks::Table)
                    .col(Tasks::ProjectId)
                    .col(Tasks::Position)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tasks::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
pub enum Tasks {
    Table,
    Id,
    ProjectId,
    Title,
    Description,
    Status,
    Position,
    Priority,
    DueAt,
    AssigneeId,
    Version,
    CreatedBy,
    UpdatedBy,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}
