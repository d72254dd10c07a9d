//! The log's transactions: a [`LogTxn`] is the only way to lock a project's log, to append
//! and to commit, and committing is what hands the appended events to the realtime side, so
//! no event is announced before its transaction committed and none committed goes
//! unannounced.

use std::sync::{Arc, Mutex};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, FromQueryResult, Statement,
    TransactionTrait,
};
use uuid::Uuid;

use super::log::{self, NewEvent, SeqLock};
use crate::entities::events;
use crate::state::DbStats;

/// Where committed events are announced (the realtime side: local rooms and the bus).
pub trait Announce: Send + Sync + 'static {
    /// Called once per event, after its transaction committed. Must not wait.
    fn committed(&self, row: events::Model);
}

/// Several listeners, each told in turn.
impl Announce for Vec<Arc<dyn Announce>> {
    fn committed(&self, row: events::Model) {
        if let Some((last, rest)) = self.split_last() {
            for announce in rest {
                announce.committed(row.clone());
            }
            last.committed(row);
        }
    }
}

/// The log's writer: begins transactions whose events are announced when they commit.
#[derive(Clone)]
pub struct EventLog {
    db: DatabaseConnection,
    announce: Arc<dyn Announce>,
    stats: Arc<DbStats>,
}

impl EventLog {
    /// A writer on `db` announcing to `announce`, counting its transactions in `stats`.
    pub fn new(db: DatabaseConnection, announce: Arc<dyn Announce>, stats: Arc<DbStats>) -> Self {
        Self {
            db,
            announce,
            stats,
        }
    }

    /// The database, for reads outside a write.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Begins a transaction that may append to the log.
    pub async fn begin(&self) -> Result<LogTxn, DbErr> {
        self.stats.record_transaction();
        Ok(LogTxn {
            txn: self.db.begin().await?,
            announce: self.announce.clone(),
            appended: Mutex::new(Vec::new()),
        })
    }
}

impl EventLog {
    /// Runs `call`: one statement that takes the log lock, appends at most one event and
    /// commits on its own (a server-side write function called outside any transaction;
    /// PostgreSQL only). By the time its answer is read its transaction has committed, so
    /// the event it returns is announced here. `None`: it appended nothing.
    pub async fn append_in_one_statement(
        &self,
        call: Statement,
    ) -> Result<Option<events::Model>, DbErr> {
        // The row is read straight from the answer: `Entity::find().from_raw_sql` would first
        // build a whole `SELECT` only to replace it (2–3% of a write's instructions).
        let row = match self.db.query_one_raw(call).await? {
            Some(answer) => Some(events::Model::from_query_result(&answer, "")?),
            None => None,
        };
        if let Some(row) = &row {
            self.announce.committed(row.clone());
        }
        Ok(row)
    }
}

/// A transaction that may append events. It reads and writes like the transaction it
/// wraps (through `Deref`), but only [`commit`](Self::commit) ends it successfully, and that
/// announces its events; dropping it rolls back and announces nothing.
#[must_use = "a log transaction does nothing unless committed"]
pub struct LogTxn {
    txn: DatabaseTransaction,
    announce: Arc<dyn Announce>,
    appended: Mutex<Vec<events::Model>>,
}

impl std::ops::Deref for LogTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// Queries run inside the transaction, exactly as on the transaction itself.
#[async_trait::async_trait]
impl ConnectionTrait for LogTxn {
    fn get_database_backend(&self) -> sea_orm::DbBackend {
        self.txn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: sea_orm::Statement) -> Result<sea_orm::ExecResult, DbErr> {
        self.txn.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        self.txn.execute_unprepared(sql).await
    }

    async fn query_one_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<sea_orm::QueryResult>, DbErr> {
        self.txn.query_one_raw(stmt).await
    }

    async fn query_all_raw(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        self.txn.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.txn.support_returning()
    }
}

impl LogTxn {
    /// Locks the project's log for this transaction and reserves the next seq. `None` when
    /// the project does not exist or was deleted.
    pub async fn lock_project(&self, project_id: Uuid) -> Result<Option<SeqLock>, DbErr> {
        log::lock_project(&self.txn, project_id).await
    }

    /// Writes the event under `lock`. Consumes the lock: one event per reserved seq.
    pub async fn append(&self, lock: SeqLock, event: NewEvent) -> Result<(), DbErr> {
        let row = log::append(&self.txn, lock, event).await?;
        self.appended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(row);
        Ok(())
    }

    /// Commits, then announces the appended events in order.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await?;
        let appended = self
            .appended
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        for row in appended {
            self.announce.committed(row);
        }
        Ok(())
    }

    /// Rolls back: reserved seqs are given back and nothing is announced.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::events::EventKind;
    use crate::entities::{projects, users};
    use chrono::Utc;
    use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};

    /// Records what was announced.
    #[derive(Default)]
    struct Announced(Mutex<Vec<i64>>);

    impl Announce for Announced {
        fn committed(&self, row: events::Model) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(row.seq);
        }
    }

    impl Announced {
        fn seqs(&self) -> Vec<i64> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    /// A migrated SQLite database with one user and one project.
    async fn database() -> (tempfile::TempDir, DatabaseConnection, Uuid) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let config = crate::Config::for_tests(url, "secret").expect("defaults");
        crate::db::migrate(&config).await.expect("migrate");
        let db = crate::db::connect(&config, 1, None).await.expect("connect");
        let now = Utc::now();
        users::ActiveModel {
            id: Set("u".into()),
            name: Set("U".into()),
            avatar_url: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&db)
        .await
        .expect("user");
        let project = projects::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set("P".into()),
            description: Set(None),
            last_seq: Set(0),
            created_by: Set("u".into()),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&db)
        .await
        .expect("project");
        (dir, db, project.id)
    }

    /// A transaction that appended one event and is still open.
    async fn one_event(log: &EventLog, project: Uuid) -> LogTxn {
        let txn = log.begin().await.expect("begin");
        let lock = txn
            .lock_project(project)
            .await
            .expect("lock")
            .expect("live");
        txn.append(
            lock,
            NewEvent::new(
                EventKind::ProjectUpdated,
                crate::events::log::Actor {
                    user_id: "u".into(),
                    via: Default::default(),
                    token_name: None,
                },
            ),
        )
        .await
        .expect("append");
        txn
    }

    async fn stored(db: &DatabaseConnection) -> u64 {
        events::Entity::find().count(db).await.expect("count")
    }

    #[tokio::test]
    async fn events_are_announced_only_once_their_transaction_committed() {
        let (_dir, db, project) = database().await;
        let announced = Arc::new(Announced::default());
        let log = EventLog::new(db.clone(), announced.clone(), Default::default());

        let txn = one_event(&log, project).await;
        assert!(announced.seqs().is_empty(), "nothing before the commit");
        txn.commit().await.expect("commit");
        assert_eq!(announced.seqs(), vec![1]);
        assert_eq!(stored(&db).await, 1, "announced events are in the log");
    }

    #[tokio::test]
    async fn a_transaction_dropped_or_rolled_back_announces_nothing_and_gives_its_seq_back() {
        let (_dir, db, project) = database().await;
        let announced = Arc::new(Announced::default());
        let log = EventLog::new(db.clone(), announced.clone(), Default::default());
        {
            let _txn = one_event(&log, project).await;
            // Dropped: an early return or a `?` in a service.
        }
        let txn = one_event(&log, project).await;
        txn.rollback().await.expect("rollback");
        assert!(announced.seqs().is_empty());
        assert_eq!(stored(&db).await, 0);

        let txn = one_event(&log, project).await;
        txn.commit().await.expect("commit");
        assert_eq!(announced.seqs(), vec![1], "the seq was given back: no gap");
    }
}
