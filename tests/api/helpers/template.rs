//! The migrated database every test database is copied from: made once per test binary
//! (its name carries the binary's identity, so a rebuilt binary with new migrations makes a
//! new one), by whichever test needs it first; older templates are removed then.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::OnceLock;

use tasknest::Config;

/// What identifies this build of the tests (and so of the migrations).
fn build_key() -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let exe = std::env::current_exe().expect("the test binary's path");
    let meta = std::fs::metadata(&exe).expect("the test binary");
    (meta.len(), meta.modified().ok()).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// `admin_url` with its database replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

/// Runs `work` to completion on a runtime of its own (the caller may be inside one).
fn on_own_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("template thread")
}

async fn migrate(url: &str) {
    let config = Config::for_tests(url, "template").expect("defaults");
    tasknest::db::migrate(&config)
        .await
        .expect("migrate the template database");
}

/// The template's file on SQLite.
pub fn sqlite() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("tasknest-template-{}.db", build_key()));
        if path.exists() {
            return path;
        }
        for old in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if old
                .file_name()
                .to_string_lossy()
                .starts_with("tasknest-template-")
            {
                let _ = std::fs::remove_file(old.path());
            }
        }
        // Migrated under a private name, then renamed: a concurrent run never copies a
        // half-made file.
        let partial = dir.join(format!("tasknest-partial-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", partial.display());
        on_own_runtime(async move { migrate(&url).await });
        std::fs::rename(&partial, &path).expect("publish the template");
        path
    })
}

/// The template database's name on PostgreSQL.
pub fn postgres(admin_url: &str) -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let admin_url = admin_url.to_owned();
        on_own_runtime(async move { make_postgres_template(&admin_url).await })
    })
}

async fn make_postgres_template(admin_url: &str) -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let name = format!("tasknest_template_{}", build_key());
    let admin = sea_orm::Database::connect(admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    let backend = admin.get_database_backend();
    let existing = admin
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT datname FROM pg_database WHERE datname LIKE 'tasknest\\_template\\_%'",
        ))
        .await
        .expect("list templates");
    let mut found = false;
    for row in existing {
        let other: String = row.try_get("", "datname").expect("datname");
        if other == name {
            found = true;
        } else {
            // Another build's template; one in use by a concurrent run stays.
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{other}\""))
                .await;
        }
    }
    if !found {
        // Migrated under a private name, then renamed into place: whoever renames first
        // wins, and the other drops its copy.
        let partial = format!("tasknest_partial_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{partial}\""))
            .await
            .expect("create the template database");
        migrate(&database_url(admin_url, &partial)).await;
        let renamed = admin
            .execute_unprepared(&format!(
                "ALTER DATABASE \"{partial}\" RENAME TO \"{name}\""
            ))
            .await;
        if renamed.is_err() {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{partial}\""))
                .await;
        }
    }
    admin.close().await.ok();
    name
}
