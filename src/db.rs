//! Database connection and migrations, the same for PostgreSQL and SQLite.

use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, Select, SqliteTransactionMode, SqlxPostgresConnector,
    TransactionOptions, TransactionTrait,
    sqlx::{
        ConnectOptions as _, Connection as _,
        postgres::{PgConnectOptions, PgPoolOptions},
        sqlite::{SqliteJournalMode, SqliteSynchronous},
    },
};

use crate::config::{DatabaseSettings, redact_url};

/// The pool every part of Keel shares; the one database type code outside the domain names.
pub type Connection = DatabaseConnection;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to the database at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("migration failed: {0}")]
    Migrate(DbErr),
    #[error("cannot take the migration lock: {0}")]
    Lock(String),
    #[error(
        "{} database migration(s) pending ({}); apply them with `admin migrate` (or start the server with AUTO_MIGRATE=true)",
        .0.len(),
        .0.join(", ")
    )]
    Pending(Vec<String>),
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

/// A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out
/// (a server restart or an idle timeout may have closed it meanwhile); one in steady use is
/// not, which saves a round trip on every checkout under load.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Like `connect`, but a PostgreSQL pool opens its first connection when first used instead of
/// before returning (which costs the TLS handshake the URL negotiates, ~90 ms here): for a
/// server that listens meanwhile. `wait_connected` is the check `connect` makes.
pub async fn connect_lazy(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    if is_sqlite(&settings.url) {
        return connect(settings).await;
    }
    let options = pg_options(settings)?;
    let pool = pg_pool_options(settings).connect_lazy_with(options);
    Ok(traced(SqlxPostgresConnector::from_sqlx_postgres_pool(pool)))
}

/// Waits for a connection to the database, within `DATABASE_CONNECT_TIMEOUT`.
pub async fn wait_connected(
    db: &DatabaseConnection,
    settings: &DatabaseSettings,
) -> Result<(), DbError> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    let pool = db.get_postgres_connection_pool();
    tokio::time::timeout(settings.connect_timeout, pool.acquire())
        .await
        .map_err(|_| connect_error(settings, &"no answer within DATABASE_CONNECT_TIMEOUT"))?
        .map_err(|e| connect_error(settings, &e))?;
    Ok(())
}

/// Why the database at `settings.url` cannot be reached, without its password.
fn connect_error(settings: &DatabaseSettings, e: &dyn std::fmt::Display) -> DbError {
    DbError::Connect {
        target: describe_target(&settings.url),
        reason: strip_secrets(&e.to_string(), &settings.url),
    }
}

fn pg_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = settings
        .url
        .parse()
        .map_err(|e: sea_orm::sqlx::Error| connect_error(settings, &e))?;
    Ok(options.disable_statement_logging())
}

fn pg_pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    connect_plain(settings).await.map(traced)
}

/// With traces on, each statement run inside a traced request or job is a span of its own.
fn traced(mut db: DatabaseConnection) -> DatabaseConnection {
    if crate::telemetry::otel::installed() {
        db.set_metric_callback(crate::telemetry::otel::record_query);
    }
    db
}

async fn connect_plain(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbError> {
    let failed = |e: &dyn std::fmt::Display| connect_error(settings, e);
    if !is_sqlite(&settings.url) {
        let pool = pg_pool_options(settings).connect_with(pg_options(settings)?);
        let pool = tokio::time::timeout(settings.connect_timeout, pool)
            .await
            .map_err(|_| failed(&"no answer within DATABASE_CONNECT_TIMEOUT"))?
            .map_err(|e| failed(&e))?;
        return Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool));
    }
    let mut options = ConnectOptions::new(settings.url.clone());
    options
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(settings.connect_timeout)
        .sqlx_logging(false)
        // A pooled SQLite connection is a file handle that cannot go stale, so checking it out
        // skips the ping that guards network connections: one round trip to the connection's
        // thread less per query or transaction.
        .test_before_acquire(false)
        // On every SQLite connection: WAL lets readers proceed while one writer commits, and the
        // busy timeout makes writers queue for the lock instead of failing with SQLITE_BUSY.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(options).await.map_err(|e| failed(&e))
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// A raw statement written with PostgreSQL's numbered parameters (`$1`, `$2`, …) for either
/// back end: SQLite numbers its own `?1`, `?2`, … (the SQL must hold no other `$`).
pub fn numbered_statement(
    backend: sea_orm::DbBackend,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> sea_orm::Statement {
    let sql = if backend == sea_orm::DbBackend::Sqlite {
        sql.replace('$', "?")
    } else {
        sql.to_string()
    };
    sea_orm::Statement::from_sql_and_values(backend, sql, values)
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

/// Applies every pending migration, under the migration lock.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbError> {
    migrate_reporting(db, |_| {}).await.map(|_| ())
}

/// Applies the pending migrations one at a time under the migration lock, telling `applied`
/// each one's name as it is in; returns how many were applied. Any number of processes may
/// call it at once: one applies them, the others wait for it and then find nothing to do.
pub async fn migrate_reporting(
    db: &DatabaseConnection,
    mut applied: impl FnMut(&str),
) -> Result<usize, DbError> {
    let lock = MigrationLock::take(db).await?;
    let mut count = 0;
    for name in pending_migrations(db).await? {
        Migrator::up(db, Some(1)).await.map_err(DbError::Migrate)?;
        applied(&name);
        count += 1;
    }
    lock.release().await;
    Ok(count)
}

/// Reverts the last `steps` applied migrations, newest first, under the migration lock,
/// telling `reverted` each one's name; returns how many were reverted.
pub async fn rollback_reporting(
    db: &DatabaseConnection,
    steps: usize,
    mut reverted: impl FnMut(&str),
) -> Result<usize, DbError> {
    let lock = MigrationLock::take(db).await?;
    let applied = applied_migrations(db).await?;
    let mut count = 0;
    for migration in applied.iter().rev().take(steps) {
        Migrator::down(db, Some(1))
            .await
            .map_err(DbError::Migrate)?;
        reverted(&migration.name);
        count += 1;
    }
    lock.release().await;
    Ok(count)
}

/// Refuses a schema older than this build.
pub async fn require_migrated(db: &DatabaseConnection) -> Result<(), DbError> {
    wait_for_schema(db, Duration::ZERO).await
}

/// Waits until no migration this build knows is pending, up to `within` (`SCHEMA_WAIT_SECONDS`):
/// a worker or scheduler that starts beside the server (or before the migration job) on a new
/// release waits for the migrations instead of exiting. Says what it waits for, every ten
/// seconds.
pub async fn wait_for_schema(db: &DatabaseConnection, within: Duration) -> Result<(), DbError> {
    let started = std::time::Instant::now();
    let mut said: Option<std::time::Instant> = None;
    loop {
        let pending = pending_migrations(db).await?;
        if pending.is_empty() {
            if said.is_some() {
                tracing::info!("the database schema is current; starting");
            }
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= within {
            return Err(DbError::Pending(pending));
        }
        if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            tracing::info!(
                pending = %pending.join(", "),
                waited_s = waited.as_secs(),
                limit_s = within.as_secs(),
                "waiting for {} migration(s) to be applied (by `admin migrate` or a server with AUTO_MIGRATE=true)",
                pending.len()
            );
            said = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(500).min(within - waited)).await;
    }
}

/// One migration this database has applied.
#[derive(Debug, Clone)]
pub struct AppliedMigration {
    pub name: String,
    /// Seconds since the epoch.
    pub applied_at: i64,
}

/// Where migration records live (sea-orm-migration's default table).
const MIGRATIONS_TABLE: &str = "seaql_migrations";

/// The migrations this database has applied, oldest first. Reads only: a database no
/// migration has touched has no table yet (and none is created here, so a check running beside
/// a migration cannot race it).
pub async fn applied_migrations(db: &DatabaseConnection) -> Result<Vec<AppliedMigration>, DbError> {
    let manager = migration::SchemaManager::new(db);
    if !manager
        .has_table(MIGRATIONS_TABLE)
        .await
        .map_err(DbError::Migrate)?
    {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT version, applied_at FROM {MIGRATIONS_TABLE} ORDER BY version"),
        ))
        .await
        .map_err(DbError::Migrate)?;
    rows.iter()
        .map(|row| {
            Ok(AppliedMigration {
                name: row.try_get("", "version")?,
                applied_at: row.try_get("", "applied_at")?,
            })
        })
        .collect::<Result<_, DbErr>>()
        .map_err(DbError::Migrate)
}

/// Lists the migrations this build knows that the database has not applied, in order.
pub async fn pending_migrations(db: &DatabaseConnection) -> Result<Vec<String>, DbError> {
    let applied: std::collections::HashSet<String> = applied_migrations(db)
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    Ok(Migrator::migrations()
        .iter()
        .map(|m| m.name().to_string())
        .filter(|name| !applied.contains(name))
        .collect())
}

/// PostgreSQL's advisory lock key for migrations: "keelmigr" in ASCII.
const MIGRATION_LOCK_KEY: i64 = 0x6b65_656c_6d69_6772;

/// Held while one process changes the schema, so that servers starting together (each with
/// `AUTO_MIGRATE`) and `admin migrate` never apply migrations at once. A session-level
/// advisory lock on a connection of its own, taken out of the pool: should the process die,
/// the connection closes and the lock goes with it. SQLite needs none (one file, one writer).
struct MigrationLock(Option<sea_orm::sqlx::PgConnection>);

impl MigrationLock {
    async fn take(db: &DatabaseConnection) -> Result<Self, DbError> {
        if db.get_database_backend() != sea_orm::DbBackend::Postgres {
            return Ok(Self(None));
        }
        let lock_error = |e: sea_orm::sqlx::Error| DbError::Lock(e.to_string());
        let mut conn = db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(lock_error)?
            .detach();
        let took: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(lock_error)?;
        if !took {
            tracing::info!("another process is applying migrations; waiting for it to finish");
            sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut conn)
                .await
                .map_err(lock_error)?;
        }
        Ok(Self(Some(conn)))
    }

    /// Closing the lock's own connection ends its session, and so releases the lock.
    async fn release(self) {
        if let Some(conn) = self.0 {
            let _ = conn.close().await;
        }
    }
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

/// Connections the pool holds, and how many of them are idle.
pub fn pool_stats(db: &DatabaseConnection) -> (u32, usize) {
    match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    }
}

/// One page of a longer list, and how long the whole list is.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Rows in the whole list.
    pub total: u64,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
        }
    }
}

/// Page `page` (from 1) of `size` rows of `query`, with the length of the whole list. A page
/// past the end is empty, and not asked for: its offset could overflow the database's.
pub async fn page<E>(
    query: Select<E>,
    db: &DatabaseConnection,
    page: u64,
    size: u64,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromQueryResult + Send + Sync,
{
    let paginator = query.paginate(db, size.max(1));
    let total = paginator.num_items().await?;
    let past_end = page
        .saturating_sub(1)
        .checked_mul(size)
        .is_none_or(|offset| offset >= total);
    let items = if past_end {
        Vec::new()
    } else {
        paginator.fetch_page(page.saturating_sub(1)).await?
    };
    Ok(Page { items, total })
}
