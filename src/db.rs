//! Database connection and migrations, the same for PostgreSQL and SQLite.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

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
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| DbError::Connect {
            target: describe_target(&settings.database_url),
            reason: strip_secrets(&e.to_string(), &settings.database_url),
        })?;
    if settings.database_url.starts_with("sqlite") {
        // WAL lets readers proceed while one writer commits; the busy timeout makes concurrent
        // writers queue instead of failing with SQLITE_BUSY.
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA busy_timeout=5000",
            "PRAGMA foreign_keys=ON",
        ] {
            db.execute_unprepared(pragma)
                .await
                .map_err(|e| DbError::Connect {
                    target: describe_target(&settings.database_url),
                    reason: e.to_string(),
                })?;
        }
    }
    Ok(db)
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
