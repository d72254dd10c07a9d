//! TaskNest's schema, one migration per file (`DeriveMigrationName` names each after its file).
//!
//! The schema is the same on SQLite and PostgreSQL: ids of projects and tasks are UUIDs,
//! user ids are the JWT `sub`, times are UTC timestamps, enums are stored as short strings.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_users;
mod m20261127_000002_create_projects;
mod m20261127_000003_create_project_members;
mod m20261127_000004_create_tasks;
mod m20261127_000005_create_events;
mod m20261127_000006_create_mutation_receipts;
mod m20261201_000007_create_api_tokens;
mod m20261201_000008_add_event_actor_via;
mod m20261202_000009_create_webhooks;
mod m20261202_000010_task_write_functions;
mod m20261207_000011_users_json_plan;

/// Runs `sql` on PostgreSQL and does nothing on SQLite: for the server-side functions that
/// only the PostgreSQL write path calls.
async fn on_postgres(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == sea_orm_migration::sea_orm::DatabaseBackend::Postgres {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

/// Applies TaskNest's migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_users::Migration),
            Box::new(m20261127_000002_create_projects::Migration),
            Box::new(m20261127_000003_create_project_members::Migration),
            Box::new(m20261127_000004_create_tasks::Migration),
            Box::new(m20261127_000005_create_events::Migration),
            Box::new(m20261127_000006_create_mutation_receipts::Migration),
            Box::new(m20261201_000007_create_api_tokens::Migration),
            Box::new(m20261201_000008_add_event_actor_via::Migration),
            Box::new(m20261202_000009_create_webhooks::Migration),
            Box::new(m20261202_000010_task_write_functions::Migration),
            Box::new(m20261207_000011_users_json_plan::Migration),
        ]
    }
}
