//! `database`: which database, how many connections, how long to wait for one, and whether
//! start-up applies pending migrations.

use std::time::Duration;

use super::reader::{ConfigError, Reader, SECOND, redact_url};

#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    pub auto_migrate: bool,
    /// How long a process that finds migrations pending waits for them (`SCHEMA_WAIT_SECONDS`)
    /// before it gives up; a server only waits without `AUTO_MIGRATE`.
    pub schema_wait: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .finish_non_exhaustive()
    }
}

impl DatabaseSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let url = r.string("DATABASE_URL", "sqlite://keel.db?mode=rwc");
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!(
                    "expected a sqlite:// or postgres:// URL, got {:?}",
                    redact_url(&url)
                ),
            ));
        }
        let max_connections = r.ranged("DATABASE_MAX_CONNECTIONS", 10, 1, 1000)? as u32;
        let min_connections = r.ranged("DATABASE_MIN_CONNECTIONS", 1, 0, 1000)? as u32;
        if min_connections > max_connections {
            return Err(ConfigError::new(
                "DATABASE_MIN_CONNECTIONS",
                format!("must not exceed DATABASE_MAX_CONNECTIONS ({max_connections})"),
            ));
        }
        Ok(Self {
            url,
            max_connections,
            min_connections,
            acquire_timeout: r.duration("DATABASE_ACQUIRE_TIMEOUT_SECONDS", SECOND, 5, 1, 300)?,
            connect_timeout: r.duration("DATABASE_CONNECT_TIMEOUT_SECONDS", SECOND, 5, 1, 300)?,
            auto_migrate: r.bool("AUTO_MIGRATE", true)?,
            schema_wait: r.duration("SCHEMA_WAIT_SECONDS", SECOND, 300, 0, 86_400)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<DatabaseSettings, ConfigError> {
        DatabaseSettings::read(&Reader::from_pairs(pairs))
    }

    #[test]
    fn embedded_default_is_a_sqlite_file() {
        let s = read(&[]).unwrap();
        assert_eq!(s.url, "sqlite://keel.db?mode=rwc");
        assert!(s.auto_migrate);
    }

    #[test]
    fn bad_values_name_the_variable() {
        assert_eq!(
            read(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            read(&[("AUTO_MIGRATE", "maybe")]).unwrap_err().var,
            "AUTO_MIGRATE"
        );
        assert_eq!(
            read(&[("DATABASE_MIN_CONNECTIONS", "20")]).unwrap_err().var,
            "DATABASE_MIN_CONNECTIONS"
        );
    }

    #[test]
    fn the_password_never_prints() {
        let s = read(&[("DATABASE_URL", "postgres://u:hunter2@db/keel")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
