//! Every setting Keel reads, with its default and its validation.
//!
//! Settings are read once, at start-up, from the process environment (after an optional `.env`
//! file). A bad value stops start-up with one line that names the variable and what is wrong with
//! it. Every default works for the embedded mode: SQLite, in-memory state and mail to the log.

use std::{collections::HashMap, str::FromStr};

use crate::queues::JobKind;

mod auth;
pub mod catalog;
mod database;
mod http;
mod jobs;
pub mod limits;
mod mail;
mod oidc;
mod rabbitmq;
mod rate_limit;
mod reader;
mod redis;
mod schedule;
mod security;
mod websockets;

pub use auth::{AuthSettings, DEFAULT_SECRET_KEY, FirstSuperuser};
pub use database::DatabaseSettings;
pub use http::HttpSettings;
pub use jobs::{JobSettings, Periodic, parse_cron};
pub use mail::{MailSettings, SmtpSettings};
pub use oidc::{OIDC_LOGIN_CODE_TTL, OidcProvider, OidcSettings, ResponseMode};
pub use rabbitmq::{QueueType, RabbitSettings};
pub use rate_limit::{Budget, Budgets, RateLimitSettings, parse_budget};
pub use reader::{ConfigError, Reader, parse_span, redact_url};
pub use redis::RedisSettings;
pub use security::SecuritySettings;
pub use websockets::WebSocketSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "development" | "dev" | "local" => Ok(Self::Development),
            "test" | "testing" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            _ => Err("expected one of development, test, production".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err("expected json or pretty".into()),
        }
    }
}

/// Every setting, one section per concern. Each section is parsed (and tested) in its own file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub project_name: String,
    pub log_format: LogFormat,
    pub log_level: String,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub oidc: OidcSettings,
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub jobs: JobSettings,
    pub rabbitmq: RabbitSettings,
    pub redis: RedisSettings,
    pub rate_limit: RateLimitSettings,
    pub security: SecuritySettings,
    pub websockets: WebSocketSettings,
}

impl Settings {
    /// Loads `.env` (when present) into the environment, then reads the settings from it.
    /// `jobs` are the kinds of job the application declares (`keel::app::kinds()`): how they
    /// are routed and limited, and which schedules there are to read.
    pub fn from_env(jobs: &[JobKind]) -> Result<Self, ConfigError> {
        Self::check_env(jobs).map_err(first)
    }

    /// Like `from_env`, with every invalid setting rather than the first.
    pub fn check_env(jobs: &[JobKind]) -> Result<Self, Vec<ConfigError>> {
        // A missing .env is the normal case; a malformed one is a configuration error.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(vec![ConfigError::new(".env", e.to_string())]);
        }
        Self::check(|k| std::env::var(k).ok(), jobs)
    }

    /// Builds settings from explicit values; anything absent takes its default.
    pub fn from_map(map: &HashMap<String, String>, jobs: &[JobKind]) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| map.get(k).cloned(), jobs)
    }

    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        jobs: &[JobKind],
    ) -> Result<Self, ConfigError> {
        Self::check(lookup, jobs).map_err(first)
    }

    /// Reads every setting and finds every invalid one: the settings, or each problem in the
    /// order of the sections.
    pub fn check(
        lookup: impl Fn(&str) -> Option<String>,
        jobs: &[JobKind],
    ) -> Result<Self, Vec<ConfigError>> {
        let r = Reader::collecting(lookup);
        let built = Self::read(&r, jobs);
        let problems = r.problems();
        match built {
            Ok(Some(settings)) if problems.is_empty() => Ok(settings),
            Err(problem) => Err(vec![problem]),
            _ if problems.is_empty() => Err(vec![ConfigError::new(
                "configuration",
                "a section could not be read",
            )]),
            _ => Err(problems),
        }
    }

    /// Every section; with a collecting reader, a section whose own checks fail is `None` and
    /// its problem recorded, and the other sections are still read.
    fn read(r: &Reader, kinds: &[JobKind]) -> Result<Option<Self>, ConfigError> {
        let environment: Environment =
            r.parse("ENVIRONMENT", Environment::Development, "an environment")?;
        let http = r.section(HttpSettings::read)?;
        // Without FRONTEND_URL, the links in mails open Keel's own pages.
        let own_pages = http.as_ref().map_or_else(
            || "http://127.0.0.1:8000".to_string(),
            |h| format!("{}{}", h.public_url, h.api_prefix),
        );
        let production = environment == Environment::Production;
        let auth = r.section(|r| AuthSettings::read(r, production, &own_pages))?;
        let frontend = auth.as_ref().map_or(own_pages, |a| a.frontend_url.clone());
        let oidc = r.section(|r| OidcSettings::read(r, &frontend))?;
        let project_name = r.string("PROJECT_NAME", "Keel");
        let log_format = r.parse("LOG_FORMAT", LogFormat::Pretty, "a log format")?;
        let log_level = r.string("LOG_LEVEL", "info");
        let database = r.section(DatabaseSettings::read)?;
        let mail = r.section(MailSettings::read)?;
        let jobs = r.section(|r| JobSettings::read(r, kinds))?;
        let rabbitmq = r.section(RabbitSettings::read)?;
        let redis = r.section(RedisSettings::read)?;
        let rate_limit = r.section(RateLimitSettings::read)?;
        let security = r.section(SecuritySettings::read)?;
        let websockets = r.section(WebSocketSettings::read)?;
        Ok((|| {
            Some(Settings {
                environment,
                project_name,
                log_format,
                log_level,
                http: http?,
                auth: auth?,
                oidc: oidc?,
                database: database?,
                mail: mail?,
                jobs: jobs?,
                rabbitmq: rabbitmq?,
                redis: redis?,
                rate_limit: rate_limit?,
                security: security?,
                websockets: websockets?,
            })
        })())
    }

    /// For the binaries: the settings, or each invalid setting on a line of its own on stderr
    /// and exit code 2.
    pub fn load_or_exit(jobs: &[JobKind]) -> Self {
        match Self::check_env(jobs) {
            Ok(settings) => settings,
            Err(problems) => {
                for problem in problems {
                    eprintln!("{problem}");
                }
                std::process::exit(2);
            }
        }
    }
}

/// The first of several problems (there is always one).
fn first(mut problems: Vec<ConfigError>) -> ConfigError {
    if problems.is_empty() {
        ConfigError::new("configuration", "invalid")
    } else {
        problems.swap_remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(
            |k| {
                pairs
                    .iter()
                    .find(|(p, _)| *p == k)
                    .map(|(_, v)| v.to_string())
            },
            &[],
        )
    }

    #[test]
    fn defaults_are_embedded() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.http.port, 8000);
        assert_eq!(s.database.url, "sqlite://keel.db?mode=rwc");
        assert!(s.mail.smtp.is_none());
        assert!(s.auth.require_email_verification);
        assert!(!s.rabbitmq.enabled && !s.redis.enabled && !s.websockets.enabled);
        // The mail links open Keel's own pages.
        assert_eq!(s.http.public_url, "http://127.0.0.1:8000");
        assert_eq!(s.auth.frontend_url, "http://127.0.0.1:8000");
        assert!(!s.auth.external_frontend);
    }

    #[test]
    fn links_follow_the_public_url_and_prefix_unless_a_frontend_is_set() {
        let s = settings(&[
            ("HOST", "0.0.0.0"),
            ("PORT", "9000"),
            ("API_PREFIX", "/api"),
        ])
        .unwrap();
        assert_eq!(s.http.public_url, "http://localhost:9000");
        assert_eq!(s.auth.frontend_url, "http://localhost:9000/api");
        let s = settings(&[("PUBLIC_URL", "https://keel.example.com/")]).unwrap();
        assert_eq!(s.auth.frontend_url, "https://keel.example.com");
        let s = settings(&[("FRONTEND_URL", "https://app.example.com")]).unwrap();
        assert_eq!(s.auth.frontend_url, "https://app.example.com");
        assert!(s.auth.external_frontend);
        assert_eq!(
            settings(&[("PUBLIC_URL", "keel")]).unwrap_err().var,
            "PUBLIC_URL"
        );
    }

    #[test]
    fn every_invalid_setting_is_found_in_one_pass() {
        let problems = Settings::check(
            |k| {
                match k {
                    "PORT" => Some("eighty"),
                    "BACKEND_CORS_ORIGINS" => Some("not an origin"),
                    "JOB_MAX_ATTEMPTS" => Some("0"),
                    "REDIS_TIMEOUT_MS" => Some("soon"),
                    "ENABLE_HSTS" => Some("maybe"),
                    _ => None,
                }
                .map(str::to_string)
            },
            &[],
        )
        .unwrap_err();
        let vars: Vec<&str> = problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(
            vars,
            [
                "BACKEND_CORS_ORIGINS",
                "PORT",
                "JOB_MAX_ATTEMPTS",
                "REDIS_TIMEOUT_MS",
                "ENABLE_HSTS"
            ]
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = settings(&[("PORT", "eighty")]).unwrap_err();
        assert_eq!(e.var, "PORT");
        assert!(
            e.to_string().starts_with("invalid configuration: PORT:"),
            "{e}"
        );
        assert_eq!(
            settings(&[("ENVIRONMENT", "staging")]).unwrap_err().var,
            "ENVIRONMENT"
        );
        assert_eq!(
            settings(&[("ENVIRONMENT", "production")]).unwrap_err().var,
            "SECRET_KEY"
        );
    }
}
