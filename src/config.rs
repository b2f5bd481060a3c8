//! Every setting Keel reads, with its default and its validation.
//!
//! Settings are read once, at start-up, from the process environment (after an optional `.env`
//! file). A bad value stops start-up with one line that names the variable and what is wrong with
//! it. Every default works for the embedded mode: SQLite, in-memory state and mail to the log.

use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr, time::Duration};

/// The development default for `SECRET_KEY`; production refuses to start with it.
pub const DEFAULT_SECRET_KEY: &str = "keel-development-secret-key-change-me-before-production";

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

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// STARTTLS on a plain connection.
    pub starttls: bool,
    /// Implicit TLS from the first byte (port 465 style).
    pub implicit_tls: bool,
    pub timeout: Duration,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("starttls", &self.starttls)
            .field("implicit_tls", &self.implicit_tls)
            .finish()
    }
}

#[derive(Clone)]
pub struct Settings {
    pub environment: Environment,
    pub project_name: String,
    pub host: IpAddr,
    pub port: u16,
    /// Empty, or a path like `/api` under which every route is nested.
    pub api_prefix: String,
    pub log_format: LogFormat,
    pub log_level: String,

    pub secret_key: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub verification_token_ttl: Duration,
    pub password_reset_token_ttl: Duration,
    pub deletion_token_ttl: Duration,
    /// Days between a confirmed deletion request and the permanent deletion.
    pub deletion_grace_period_days: u32,
    /// Days before the deletion at which a reminder is mailed, most distant first.
    pub deletion_reminder_days: Vec<u32>,
    /// Accounts deleted per transaction by the purge job.
    pub purge_batch_size: u64,
    pub max_sessions_per_user: u32,
    pub require_email_verification: bool,
    pub cookie_secure: bool,
    /// How many password hashes may run at once; the rest wait their turn off the runtime.
    pub password_hash_concurrency: usize,

    pub database_url: String,
    pub database_max_connections: u32,
    pub database_min_connections: u32,
    pub database_acquire_timeout: Duration,
    pub database_connect_timeout: Duration,
    pub auto_migrate: bool,

    pub first_superuser_email: Option<String>,
    pub first_superuser_username: String,
    pub first_superuser_password: Option<String>,

    pub frontend_url: String,
    pub smtp: Option<SmtpSettings>,
    pub from_email: String,
    pub from_name: String,

    /// How long the server waits for in-flight requests and jobs at shutdown.
    pub shutdown_timeout: Duration,

    /// Jobs go through RabbitMQ to `worker` processes; otherwise the server runs them itself.
    pub enable_rabbitmq: bool,
    pub rabbitmq_url: String,
    pub rabbitmq_queue: String,
    pub worker_concurrency: usize,
    pub worker_shutdown_timeout: Duration,
    /// Where a worker serves `/metrics` and `/health/live`; unset: not served.
    pub worker_metrics_addr: Option<std::net::SocketAddr>,
    pub job_max_attempts: i32,
    pub job_retry_base: Duration,
    pub job_retry_max: Duration,
    pub job_timeout: Duration,
    pub job_republish_after: Duration,

    pub enable_security_headers: bool,
    pub enable_hsts: bool,
    pub hsts_max_age: u64,
    pub hsts_include_subdomains: bool,
    pub hsts_preload: bool,
    pub enable_request_size_validation: bool,
    pub max_request_size: u64,
    pub enable_content_type_validation: bool,
    pub enable_security_event_logging: bool,
    /// Origins allowed to call the API from a browser; empty: no CORS headers at all.
    pub cors_origins: Vec<String>,

    /// Periodic jobs for the scheduler: (job name, cron expression with seconds).
    pub schedules: Vec<(String, cron::Schedule)>,

    /// Redis for the cache, rate limits, session revocation and WebSocket fan-out; without it
    /// each of those works in memory, per instance.
    pub enable_redis: bool,
    pub redis_url: String,
    /// Prepended to every Redis key, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Longest wait for one Redis command; past it the request goes on without Redis.
    pub redis_timeout: Duration,
    pub cache_ttl: Duration,

    pub enable_rate_limiting: bool,
    /// When Redis cannot be asked: let requests through (true) or refuse them with 503.
    pub rate_limit_fail_open: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::net::TrustedProxies,

    pub enable_websockets: bool,
    pub ws_require_auth: bool,
    pub ws_max_message_bytes: usize,
    /// Messages a client may send per second (a burst of twice that is allowed).
    pub ws_messages_per_second: u32,
    /// Messages waiting to be sent to one client; a client that falls further behind is cut off.
    pub ws_send_queue: usize,
    pub ws_ping_interval: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log line, even at debug level.
        f.debug_struct("Settings")
            .field("environment", &self.environment)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("api_prefix", &self.api_prefix)
            .field("database", &redact_url(&self.database_url))
            .field("smtp", &self.smtp)
            .field("enable_rabbitmq", &self.enable_rabbitmq)
            .field("rabbitmq", &redact_url(&self.rabbitmq_url))
            .field("enable_redis", &self.enable_redis)
            .field("redis", &redact_url(&self.redis_url))
            .finish_non_exhaustive()
    }
}

/// A start-up configuration problem: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Reads variables through a lookup function so tests can build settings without touching the
/// process environment.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    fn raw(&self, var: &'static str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: FromStr>(&self, var: &'static str, default: T, what: &str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v.parse::<T>().map_err(|e| ConfigError {
                var,
                message: format!("{what} expected, got {v:?} ({e})"),
            }),
        }
    }

    fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError {
                    var,
                    message: format!("expected true or false, got {v:?}"),
                }),
            },
        }
    }

    fn ranged(
        &self,
        var: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = self.parse(var, default, "a whole number")?;
        if value < min || value > max {
            return Err(ConfigError {
                var,
                message: format!("must be between {min} and {max}, got {value}"),
            });
        }
        Ok(value)
    }
}

impl Settings {
    /// Loads `.env` (when present) into the environment, then reads the settings from it.
    pub fn from_env() -> Result<Self, ConfigError> {
        // A missing .env is the normal case; a malformed one is a configuration error.
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            return Err(ConfigError {
                var: ".env",
                message: e.to_string(),
            });
        }
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Builds settings from explicit values; anything absent takes its default.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| map.get(k).cloned())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let r = Reader { lookup: &lookup };
        let environment: Environment =
            r.parse("ENVIRONMENT", Environment::Development, "an environment")?;
        let production = environment == Environment::Production;

        let secret_key = r.string("SECRET_KEY", DEFAULT_SECRET_KEY);
        if production && (secret_key == DEFAULT_SECRET_KEY || secret_key.len() < 32) {
            return Err(ConfigError {
                var: "SECRET_KEY",
                message: "production needs a random secret of at least 32 bytes (for example `openssl rand -hex 32`), not the development default".into(),
            });
        }
        if secret_key.len() < 16 {
            return Err(ConfigError {
                var: "SECRET_KEY",
                message: "must be at least 16 bytes long".into(),
            });
        }

        let api_prefix = normalise_prefix(&r.string("API_PREFIX", ""))?;
        let frontend_url = r.string("FRONTEND_URL", "http://localhost:3000");
        if url::Url::parse(&frontend_url).is_err() {
            return Err(ConfigError {
                var: "FRONTEND_URL",
                message: format!("expected an absolute URL, got {frontend_url:?}"),
            });
        }

        let database_url = r.string("DATABASE_URL", "sqlite://keel.db?mode=rwc");
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError {
                var: "DATABASE_URL",
                message: format!(
                    "expected a sqlite:// or postgres:// URL, got {:?}",
                    redact_url(&database_url)
                ),
            });
        }

        let smtp = match r.raw("SMTP_HOST") {
            None => None,
            Some(host) => {
                let implicit_tls = r.bool("SMTP_SSL", false)?;
                let starttls = r.bool("SMTP_TLS", !implicit_tls)?;
                if implicit_tls && starttls {
                    return Err(ConfigError {
                        var: "SMTP_TLS",
                        message: "SMTP_TLS (STARTTLS) and SMTP_SSL (implicit TLS) exclude each other; set one".into(),
                    });
                }
                let default_port = if implicit_tls { 465 } else { 587 };
                Some(SmtpSettings {
                    host,
                    port: r.ranged("SMTP_PORT", default_port, 1, 65535)? as u16,
                    username: r.raw("SMTP_USERNAME"),
                    password: r.raw("SMTP_PASSWORD"),
                    starttls,
                    implicit_tls,
                    timeout: Duration::from_secs(r.ranged("SMTP_TIMEOUT_SECONDS", 10, 1, 300)?),
                })
            }
        };

        let from_email = r.string("FROM_EMAIL", "noreply@example.com");
        if from_email.parse::<lettre::Address>().is_err() {
            return Err(ConfigError {
                var: "FROM_EMAIL",
                message: format!("expected an email address, got {from_email:?}"),
            });
        }

        let first_superuser_email = r.raw("FIRST_SUPERUSER_EMAIL");
        let first_superuser_password = r.raw("FIRST_SUPERUSER_PASSWORD");
        if first_superuser_email.is_some() != first_superuser_password.is_some() {
            return Err(ConfigError {
                var: "FIRST_SUPERUSER_PASSWORD",
                message: "FIRST_SUPERUSER_EMAIL and FIRST_SUPERUSER_PASSWORD go together; set both or neither".into(),
            });
        }
        let first_superuser_username = r.string("FIRST_SUPERUSER_USERNAME", "superuser");
        if let (Some(email), Some(password)) = (&first_superuser_email, &first_superuser_password) {
            check_first_superuser(email, &first_superuser_username, password)?;
        }

        let rabbitmq_url = r.string("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        if !(rabbitmq_url.starts_with("amqp://") || rabbitmq_url.starts_with("amqps://")) {
            return Err(ConfigError {
                var: "RABBITMQ_URL",
                message: format!(
                    "expected an amqp:// or amqps:// URL, got {:?}",
                    redact_url(&rabbitmq_url)
                ),
            });
        }
        let rabbitmq_queue = r.string("RABBITMQ_QUEUE", "keel.jobs");
        if rabbitmq_queue.len() > 200
            || !rabbitmq_queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        {
            return Err(ConfigError {
                var: "RABBITMQ_QUEUE",
                message: format!(
                    "expected up to 200 letters, digits and . _ - :, got {rabbitmq_queue:?}"
                ),
            });
        }
        let job_retry_base =
            Duration::from_millis(r.ranged("JOB_RETRY_BASE_MS", 2000, 1, 3_600_000)?);
        let job_retry_max =
            Duration::from_millis(r.ranged("JOB_RETRY_MAX_MS", 300_000, 1, 86_400_000)?);
        if job_retry_max < job_retry_base {
            return Err(ConfigError {
                var: "JOB_RETRY_MAX_MS",
                message: "must not be less than JOB_RETRY_BASE_MS".into(),
            });
        }

        let cors_origins: Vec<String> = r
            .string("BACKEND_CORS_ORIGINS", "")
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        for origin in &cors_origins {
            let valid = origin == "*"
                || url::Url::parse(origin)
                    .is_ok_and(|u| u.has_host() && matches!(u.scheme(), "http" | "https"));
            if !valid {
                return Err(ConfigError {
                    var: "BACKEND_CORS_ORIGINS",
                    message: format!(
                        "expected comma-separated origins such as https://app.example.com, got {origin:?}"
                    ),
                });
            }
        }

        let deletion_grace_period_days =
            r.ranged("ACCOUNT_DELETION_GRACE_PERIOD_DAYS", 7, 0, 365)? as u32;
        let deletion_reminder_days = {
            let raw = r.string("ACCOUNT_DELETION_REMINDER_DAYS", "3,1");
            let mut days = Vec::new();
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.parse::<u32>() {
                    Ok(d) if d >= 1 && d <= deletion_grace_period_days.max(1) => days.push(d),
                    _ => {
                        return Err(ConfigError {
                            var: "ACCOUNT_DELETION_REMINDER_DAYS",
                            message: format!(
                                "expected comma-separated whole days between 1 and the grace period ({deletion_grace_period_days}), got {raw:?}"
                            ),
                        });
                    }
                }
            }
            days.sort_unstable_by(|a, b| b.cmp(a));
            days.dedup();
            days
        };

        // Each periodic job's cron expression (with seconds); `off` turns it off.
        let mut schedules = Vec::new();
        for crate::jobs::schedule::PeriodicJob {
            name: job,
            setting: var,
            default,
        } in crate::jobs::schedule::PERIODIC
        {
            let expression = r.string(var, default);
            if expression.trim().eq_ignore_ascii_case("off") {
                continue;
            }
            let schedule = crate::jobs::schedule::parse(&expression).map_err(|e| ConfigError {
                var,
                message: format!(
                    "expected a cron expression `sec min hour day month weekday` (or `off`), got {expression:?}: {e}"
                ),
            })?;
            schedules.push((job.to_string(), schedule));
        }

        let redis_url = r.string("REDIS_URL", "redis://127.0.0.1:6379/0");
        if fred::types::config::Config::from_url(&redis_url).is_err() {
            return Err(ConfigError {
                var: "REDIS_URL",
                message: format!(
                    "expected redis://[:PASSWORD@]HOST:PORT/DB (or rediss://), got {}",
                    redact_url(&redis_url)
                ),
            });
        }
        let trusted_proxies = crate::net::TrustedProxies::parse(&r.string("TRUSTED_PROXIES", ""))
            .map_err(|message| ConfigError {
            var: "TRUSTED_PROXIES",
            message: format!("expected comma-separated IP addresses or CIDR blocks: {message}"),
        })?;

        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let max_connections = r.ranged("DATABASE_MAX_CONNECTIONS", 10, 1, 1000)? as u32;
        let min_connections = r.ranged("DATABASE_MIN_CONNECTIONS", 1, 0, 1000)? as u32;
        if min_connections > max_connections {
            return Err(ConfigError {
                var: "DATABASE_MIN_CONNECTIONS",
                message: format!("must not exceed DATABASE_MAX_CONNECTIONS ({max_connections})"),
            });
        }

        Ok(Settings {
            environment,
            project_name: r.string("PROJECT_NAME", "Keel"),
            host: r.parse("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address")?,
            port: r.ranged("PORT", 8000, 0, 65535)? as u16,
            api_prefix,
            log_format: r.parse("LOG_FORMAT", LogFormat::Pretty, "a log format")?,
            log_level: r.string("LOG_LEVEL", "info"),
            secret_key,
            access_token_ttl: Duration::from_secs(
                60 * r.ranged("ACCESS_TOKEN_EXPIRE_MINUTES", 15, 1, 24 * 60)?,
            ),
            refresh_token_ttl: Duration::from_secs(
                86_400 * r.ranged("REFRESH_TOKEN_EXPIRE_DAYS", 30, 1, 365)?,
            ),
            verification_token_ttl: Duration::from_secs(
                3600 * r.ranged("VERIFICATION_TOKEN_EXPIRE_HOURS", 24, 1, 24 * 30)?,
            ),
            password_reset_token_ttl: Duration::from_secs(
                60 * r.ranged("PASSWORD_RESET_TOKEN_EXPIRE_MINUTES", 60, 1, 24 * 60)?,
            ),
            deletion_token_ttl: Duration::from_secs(
                3600 * r.ranged("DELETION_TOKEN_EXPIRE_HOURS", 24, 1, 24 * 30)?,
            ),
            deletion_grace_period_days,
            deletion_reminder_days,
            purge_batch_size: r.ranged("ACCOUNT_PURGE_BATCH_SIZE", 100, 1, 10_000)?,
            max_sessions_per_user: r.ranged("MAX_SESSIONS_PER_USER", 5, 1, 1000)? as u32,
            require_email_verification: r.bool("REQUIRE_EMAIL_VERIFICATION", true)?,
            cookie_secure: r.bool("COOKIE_SECURE", production)?,
            password_hash_concurrency: r.ranged("PASSWORD_HASH_CONCURRENCY", cpus as u64, 1, 256)?
                as usize,
            database_url,
            database_max_connections: max_connections,
            database_min_connections: min_connections,
            database_acquire_timeout: Duration::from_secs(r.ranged(
                "DATABASE_ACQUIRE_TIMEOUT_SECONDS",
                5,
                1,
                300,
            )?),
            database_connect_timeout: Duration::from_secs(r.ranged(
                "DATABASE_CONNECT_TIMEOUT_SECONDS",
                5,
                1,
                300,
            )?),
            auto_migrate: r.bool("AUTO_MIGRATE", true)?,
            first_superuser_email,
            first_superuser_username,
            first_superuser_password,
            frontend_url: frontend_url.trim_end_matches('/').to_string(),
            smtp,
            from_email,
            from_name: r.string("FROM_NAME", "Keel"),
            shutdown_timeout: Duration::from_secs(r.ranged("SHUTDOWN_TIMEOUT", 30, 0, 3600)?),
            enable_rabbitmq: r.bool("ENABLE_RABBITMQ", false)?,
            rabbitmq_url,
            rabbitmq_queue,
            worker_concurrency: r.ranged("WORKER_CONCURRENCY", 4, 1, 1000)? as usize,
            worker_shutdown_timeout: Duration::from_secs(r.ranged(
                "WORKER_SHUTDOWN_TIMEOUT",
                30,
                0,
                3600,
            )?),
            job_max_attempts: r.ranged("JOB_MAX_ATTEMPTS", 5, 1, 100)? as i32,
            job_retry_base,
            job_retry_max,
            job_timeout: Duration::from_secs(r.ranged("JOB_TIMEOUT_SECONDS", 600, 1, 86_400)?),
            job_republish_after: Duration::from_secs(r.ranged(
                "JOB_REPUBLISH_AFTER_SECONDS",
                300,
                1,
                86_400,
            )?),
            worker_metrics_addr: match r.raw("WORKER_METRICS_ADDR") {
                None => None,
                Some(v) => Some(v.parse().map_err(|_| ConfigError {
                    var: "WORKER_METRICS_ADDR",
                    message: format!("expected an address such as 0.0.0.0:9091, got {v:?}"),
                })?),
            },
            enable_security_headers: r.bool("ENABLE_SECURITY_HEADERS", true)?,
            enable_hsts: r.bool("ENABLE_HSTS", false)?,
            hsts_max_age: r.ranged("HSTS_MAX_AGE", 31_536_000, 0, 126_144_000)?,
            hsts_include_subdomains: r.bool("HSTS_INCLUDE_SUBDOMAINS", true)?,
            hsts_preload: r.bool("HSTS_PRELOAD", false)?,
            enable_request_size_validation: r.bool("ENABLE_REQUEST_SIZE_VALIDATION", true)?,
            max_request_size: r.ranged("MAX_REQUEST_SIZE", 10_485_760, 1, 1 << 40)?,
            enable_content_type_validation: r.bool("ENABLE_CONTENT_TYPE_VALIDATION", true)?,
            enable_security_event_logging: r.bool("ENABLE_SECURITY_EVENT_LOGGING", true)?,
            cors_origins,
            schedules,
            enable_redis: r.bool("ENABLE_REDIS", false)?,
            redis_url,
            redis_key_prefix: r.string("REDIS_KEY_PREFIX", "keel:"),
            redis_timeout: Duration::from_millis(r.ranged("REDIS_TIMEOUT_MS", 250, 10, 60_000)?),
            cache_ttl: Duration::from_secs(r.ranged("CACHE_TTL_SECONDS", 60, 0, 86_400)?),
            enable_rate_limiting: r.bool("ENABLE_RATE_LIMITING", true)?,
            rate_limit_fail_open: r.bool("RATE_LIMIT_FAIL_OPEN", true)?,
            trusted_proxies,
            enable_websockets: r.bool("ENABLE_WEBSOCKETS", false)?,
            ws_require_auth: r.bool("WS_REQUIRE_AUTH", false)?,
            ws_max_message_bytes: r.ranged("WS_MAX_MESSAGE_BYTES", 65_536, 128, 16 << 20)? as usize,
            ws_messages_per_second: r.ranged("WS_MESSAGES_PER_SECOND", 20, 1, 10_000)? as u32,
            ws_send_queue: r.ranged("WS_SEND_QUEUE", 256, 1, 1_000_000)? as usize,
            ws_ping_interval: Duration::from_secs(r.ranged(
                "WS_PING_INTERVAL_SECONDS",
                30,
                1,
                3600,
            )?),
        })
    }

    /// For the binaries: the settings, or the one-line error on stderr and exit code 2.
    pub fn load_or_exit() -> Self {
        match Self::from_env() {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
}

/// The first superuser is held to every account rule, like any account: a configured
/// `admin` / `password` stops start-up instead of becoming the most privileged account.
fn check_first_superuser(email: &str, username: &str, password: &str) -> Result<(), ConfigError> {
    use crate::accounts::validation::{normalise_email, validate_password, validate_username};
    let messages = |problems: Vec<crate::accounts::validation::FieldProblem>| {
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Err(p) = normalise_email(email) {
        return Err(ConfigError {
            var: "FIRST_SUPERUSER_EMAIL",
            message: p.message,
        });
    }
    if let Err(p) = validate_username(username) {
        return Err(ConfigError {
            var: "FIRST_SUPERUSER_USERNAME",
            message: messages(p),
        });
    }
    if let Err(p) = validate_password("password", password) {
        return Err(ConfigError {
            var: "FIRST_SUPERUSER_PASSWORD",
            message: messages(p),
        });
    }
    Ok(())
}

fn normalise_prefix(raw: &str) -> Result<String, ConfigError> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let ok = trimmed.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    if !ok {
        return Err(ConfigError {
            var: "API_PREFIX",
            message: format!("expected a path such as /api, got {raw:?}"),
        });
    }
    Ok(format!("/{trimmed}"))
}

/// Hides the password of a connection URL, for logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_map(&map)
    }

    #[test]
    fn defaults_are_embedded() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.database_url, "sqlite://keel.db?mode=rwc");
        assert!(s.smtp.is_none());
        assert!(s.require_email_verification);
        assert_eq!(s.api_prefix, "");
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
            settings(&[("AUTO_MIGRATE", "maybe")]).unwrap_err().var,
            "AUTO_MIGRATE"
        );
        assert_eq!(
            settings(&[("DATABASE_URL", "mysql://x")]).unwrap_err().var,
            "DATABASE_URL"
        );
        assert_eq!(
            settings(&[("API_PREFIX", "/a b")]).unwrap_err().var,
            "API_PREFIX"
        );
    }

    #[test]
    fn the_first_superuser_follows_the_account_rules() {
        let ok = [
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
        ];
        assert!(settings(&ok).is_ok());
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = ok.to_vec();
            pairs.push(extra);
            settings(&pairs).unwrap_err().var
        };
        assert_eq!(
            with(("FIRST_SUPERUSER_USERNAME", "admin")),
            "FIRST_SUPERUSER_USERNAME"
        );
        assert_eq!(
            with(("FIRST_SUPERUSER_PASSWORD", "password")),
            "FIRST_SUPERUSER_PASSWORD"
        );
        assert_eq!(
            with(("FIRST_SUPERUSER_EMAIL", "nobody")),
            "FIRST_SUPERUSER_EMAIL"
        );
    }

    #[test]
    fn production_refuses_weak_secret() {
        assert_eq!(
            settings(&[("ENVIRONMENT", "production")]).unwrap_err().var,
            "SECRET_KEY"
        );
        assert_eq!(
            settings(&[
                ("ENVIRONMENT", "production"),
                ("SECRET_KEY", "short-but-not-default")
            ])
            .unwrap_err()
            .var,
            "SECRET_KEY"
        );
        let s = settings(&[
            ("ENVIRONMENT", "production"),
            ("SECRET_KEY", &"x".repeat(32)),
        ])
        .unwrap();
        assert!(s.cookie_secure);
    }

    #[test]
    fn prefix_is_normalised() {
        assert_eq!(
            settings(&[("API_PREFIX", "api/")]).unwrap().api_prefix,
            "/api"
        );
        assert_eq!(settings(&[("API_PREFIX", "/")]).unwrap().api_prefix, "");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
