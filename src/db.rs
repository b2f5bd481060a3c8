//! Database connection and migrations, the same for PostgreSQL and SQLite.

use migration::{Migrator, MigratorTrait};
use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};

use crate::config::{Settings, redact_url};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("migration failed: {0}")]
    Migrate(DbErr),
}

/// Where a database URL points, without user or password: safe for any message.
pub fn describe_target(url: &str) -> String {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return format!("sqlite file {}", path.split('?').next().unwrap_or(path));
    }
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => redact_url(url),
    }
}

pub async fn connect(settings: &Settings) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(settings.database_url.clone());
    options
        .max_connections(settings.database_max_connections)
        .min_connections(settings.database_min_connections)
        .acquire_timeout(settings.database_acquire_timeout)
        .connect_timeout(settings.database_connect_timeout)
        .sqlx_logging(false)
        // A pooled SQLite connection is a file handle that cannot go stale, so checking it out
        // skips the ping that guards network connections: one round trip to the connection's
        // thread less per query or transaction. PostgreSQL connections keep the check.
        .test_before_acquire(!is_sqlite(&settings.database_url))
        // On every SQLite connection: WAL lets readers proceed while one writer commits, and the
        // busy timeout makes writers queue for the lock instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(options)
        .await
        .map_err(|e| DbError::Connect {
            target: describe_target(&settings.database_url),
            reason: strip_secrets(&e.to_string(), &settings.database_url),
        })
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// Starts a transaction that will write. On SQLite it takes the write lock up front (`BEGIN
/// IMMEDIATE`): a deferred transaction that reads first and writes later cannot wait for the lock
/// once another writer has committed, and fails with SQLITE_BUSY instead. PostgreSQL ignores it.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    Migrator::up(db, None).await.map_err(DbError::Migrate)
}

/// Lists the migrations not applied yet.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbError> {
    Ok(Migrator::get_pending_migrations(db)
        .await
        .map_err(DbError::Migrate)?
        .iter()
        .map(|m| m.name().to_string())
        .collect())
}

fn strip_secrets(message: &str, url: &str) -> String {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    {
        Some(pw) if !pw.is_empty() => message.replace(&pw, "***"),
        _ => message.to_string(),
    }
}
