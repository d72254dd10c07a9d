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
                    .table(Webhooks::Table)
                    .if_not_exists()
                    .col(uuid(Webhooks::Id).primary_key())
                    .col(uuid(Webhooks::ProjectId))
                    .col(string_len(Webhooks::Url, 2048))
                    // Comma-separated event kinds.
                    .col(string_len(Webhooks::EventKinds, 512))
                    .col(string_len_null(Webhooks::Description, 1000))
                    // Signing secrets must be usable, so they are kept as they are (`whsec_…`).
                    .col(string_len(Webhooks::Secret, 100))
                    .col(string_len_null(Webhooks::PreviousSecret, 100))
                    .col(timestamp_with_time_zone_null(Webhooks::PreviousSecretUntil))
                    .col(boolean(Webhooks::Enabled))
                    .col(string_len_null(Webhooks::DisabledReason, 500))
                    .col(string_len(Webhooks::CreatedBy, 255))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .col(timestamp_with_time_zone(Webhooks::UpdatedAt))
                    // The last seq delivered (or skipped as unwanted).
                    .col(big_integer(Webhooks::Cursor))
                    // Bumped by each replay, so replayed messages get new ids.
                    .col(integer(Webhooks::Generation).default(0))
                    // Failed attempts at the event after `cursor`.
                    .col(integer(Webhooks::Attempt).default(0))
                    .col(timestamp_with_time_zone_null(Webhooks::FailingSince))
                    .col(timestamp_with_time_zone_null(Webhooks::NextAttemptAt))
                    // The instance delivering it, until when.
                    .col(uuid_null(Webhooks::LeaseOwner))
                    .col(timestamp_with_time_zone_null(Webhooks::LeaseUntil))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Webhooks::Table, Webhooks::ProjectId)
                            .to(Projects::Table, Projects::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_webhooks_project_id")
                    .table(Webhooks::Table)
                    .col(Webhooks::ProjectId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookDeliveries::Id))
                    .col(uuid(WebhookDeliveries::WebhookId))
                    .col(big_integer(WebhookDeliveries::Seq))
                    .col(integer(WebhookDeliveries::Attempt))
                    .col(string_len(WebhookDeliveries::MessageId, 100))
                    .col(integer_null(WebhookDeliveries::StatusCode))
                    .col(integer_null(WebhookDeliveries::DurationMs))
                    .col(string_len_null(WebhookDeliveries::Error, 500))
                    .col(timestamp_with_time_zone(WebhookDeliveries::At))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::NextAttemptAt,
                    ))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDeliveries::Table, WebhookDeliveries::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_webhook_deliveries_webhook_id")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::WebhookId)
                    .col(WebhookDeliveries::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookRedeliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(WebhookRedeliveries::Id))
                    .col(uuid(WebhookRedeliveries::WebhookId))
                    .col(big_integer(WebhookRedeliveries::Seq))
                    .col(timestamp_with_time_zone(WebhookRedeliveries::RequestedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookRedeliveries::Table, WebhookRedeliveries::WebhookId)
                            .to(Webhooks::Table, Webhooks::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookRedeliveries::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            Webhooks::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
pub enum Webhooks {
    Table,
    Id,
    ProjectId,
    Url,
    EventKinds,
    Description,
    Secret,
    PreviousSecret,
    PreviousSecretUntil,
    Enabled,
    DisabledReason,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    Cursor,
    Generation,
    Attempt,
    FailingSince,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
}

#[derive(DeriveIden)]
pub enum WebhookDeliveries {
    Table,
    Id,
    WebhookId,
    Seq,
    Attempt,
    MessageId,
    StatusCode,
    DurationMs,
    Error,
    At,
    NextAttemptAt,
}

#[derive(DeriveIden)]
pub enum WebhookRedeliveries {
    Table,
    Id,
    WebhookId,
    Seq,
    RequestedAt,
}
