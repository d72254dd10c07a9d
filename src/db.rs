//! Database connection and migrations.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::DbStats;

/// Key of the PostgreSQL advisory lock held while migrating, so that instances starting
/// together migrate one after the other (sea-orm-migration takes no lock itself).
const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_6e65_7374; // "tasknest"

/// A pooled connection idle at least this long is pinged before it is handed out; one used
/// more recently is handed out as is. The pool's default pings on every checkout, which is
/// a second round trip to PostgreSQL before each statement, the one-statement writes
/// included. A connection that broke within this window fails its one statement with
/// `INTERNAL` and is replaced, as in any outage.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Opens the pool. SQLite files are created when missing and run in WAL mode.
pub async fn connect(
    config: &Config,
    max_connections: u32,
    stats: Option<(Arc<DbStats>, Arc<Metrics>)>,
) -> anyhow::Result<DatabaseConnection> {
    let mut db = Database::connect(options(config, max_connections))
        .await
        .with_context(|| {
            format!(
                "cannot open the database at {}",
                redact(&config.database_url)
            )
        })?;
    if let Some((stats, metrics)) = stats {
        db.set_metric_callback(move |info| {
            stats.record_statement();
            metrics.statement_ran(info.elapsed);
        });
    }
    Ok(db)
}

/// The pool's settings.
fn options(config: &Config, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(config.database_url.clone());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(config.database_acquire_timeout)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
    if config.is_postgres() {
        options.max_connections(max_connections).min_connections(1);
    } else {
        options.map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    }
    options
}

/// Applies pending migrations. On PostgreSQL this holds an advisory lock on its own
/// single-connection pool, because a session lock must be taken and released on the same
/// connection.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = connect(config, 1, None).await?;
    if config.is_postgres() {
        let backend = db.get_database_backend();
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "SELECT pg_advisory_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await
        .context("cannot take the migration lock")?;
        let result = Migrator::up(&db, None).await;
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "SELECT pg_advisory_unlock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await
        .context("cannot release the migration lock")?;
        result.context("migration failed")?;
    } else {
        Migrator::up(&db, None).await.context("migration failed")?;
    }
    db.close().await.ok();
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_connections_are_pinged_only_after_being_idle() {
        let config = Config::for_tests("postgres://u@127.0.0.1/db", "s").expect("config");
        let options = options(&config, 4);
        // A checkout of a connection in use is no round trip of its own.
        assert!(!options.get_test_before_acquire());
        assert_eq!(
            options.get_test_before_acquire_if_idle_for(),
            Some(PING_IF_IDLE_FOR)
        );
    }
}
