//! `auth`: the signing secret, how long each kind of token lives, the account rules (sessions,
//! verification, deletion's grace period) and the first superuser.

use std::time::Duration;

use super::reader::{ConfigError, DAY, HOUR, MINUTE, Reader};
use crate::values::{EmailAddress, FieldProblem, Password, Username};

/// The development default for `SECRET_KEY`; production refuses to start with it.
pub const DEFAULT_SECRET_KEY: &str = "keel-development-secret-key-change-me-before-production";

#[derive(Clone)]
pub struct AuthSettings {
    pub secret_key: String,
    /// Encrypts TOTP secrets at rest; `SECRET_KEY` serves when unset.
    pub mfa_encryption_key: Option<String>,
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
    /// Where the links in mails point (verification, reset, deletion): `FRONTEND_URL`, or
    /// Keel's own pages (`PUBLIC_URL` and `API_PREFIX`) when that is unset.
    pub frontend_url: String,
    /// Whether `FRONTEND_URL` was set (the links go to another app).
    pub external_frontend: bool,
    /// Created at start-up when no account has its email yet.
    pub first_superuser: Option<FirstSuperuser>,
}

/// Parsed like any account's fields: a configured `admin` / `password` stops start-up instead
/// of becoming the most privileged account.
#[derive(Clone)]
pub struct FirstSuperuser {
    pub email: EmailAddress,
    pub username: Username,
    pub password: Password,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and the superuser's password never reach a log line.
        f.debug_struct("AuthSettings")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field(
                "require_email_verification",
                &self.require_email_verification,
            )
            .field(
                "first_superuser",
                &self.first_superuser.as_ref().map(|s| &s.email),
            )
            .finish_non_exhaustive()
    }
}

impl AuthSettings {
    /// `own_pages`: where Keel serves its account pages, the links' default.
    pub fn read(r: &Reader, production: bool, own_pages: &str) -> Result<Self, ConfigError> {
        let secret_key = r.string("SECRET_KEY", DEFAULT_SECRET_KEY);
        if production && (secret_key == DEFAULT_SECRET_KEY || secret_key.len() < 32) {
            return Err(ConfigError::new(
                "SECRET_KEY",
                "production needs a random secret of at least 32 bytes (for example `openssl rand -hex 32`), not the development default",
            ));
        }
        if secret_key.len() < 16 {
            return Err(ConfigError::new(
                "SECRET_KEY",
                "must be at least 16 bytes long",
            ));
        }

        let mfa_encryption_key = r.raw("MFA_ENCRYPTION_KEY");
        if mfa_encryption_key.as_ref().is_some_and(|k| k.len() < 32) {
            return Err(ConfigError::new(
                "MFA_ENCRYPTION_KEY",
                "must be at least 32 bytes long (for example `openssl rand -hex 32`)",
            ));
        }

        let external_frontend = r.raw("FRONTEND_URL").is_some();
        let frontend_url = r.string("FRONTEND_URL", own_pages);
        if url::Url::parse(&frontend_url).is_err() {
            return Err(ConfigError::new(
                "FRONTEND_URL",
                format!("expected an absolute URL, got {frontend_url:?}"),
            ));
        }

        let deletion_grace_period_days =
            r.ranged("ACCOUNT_DELETION_GRACE_PERIOD_DAYS", 7, 0, 365)? as u32;
        let deletion_reminder_days = reminder_days(
            &r.string("ACCOUNT_DELETION_REMINDER_DAYS", "3,1"),
            deletion_grace_period_days,
        )?;

        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            secret_key,
            mfa_encryption_key,
            access_token_ttl: r.duration("ACCESS_TOKEN_EXPIRE_MINUTES", MINUTE, 15, 1, 24 * 60)?,
            refresh_token_ttl: r.duration("REFRESH_TOKEN_EXPIRE_DAYS", DAY, 30, 1, 365)?,
            verification_token_ttl: r.duration(
                "VERIFICATION_TOKEN_EXPIRE_HOURS",
                HOUR,
                24,
                1,
                24 * 30,
            )?,
            password_reset_token_ttl: r.duration(
                "PASSWORD_RESET_TOKEN_EXPIRE_MINUTES",
                MINUTE,
                60,
                1,
                24 * 60,
            )?,
            deletion_token_ttl: r.duration("DELETION_TOKEN_EXPIRE_HOURS", HOUR, 24, 1, 24 * 30)?,
            deletion_grace_period_days,
            deletion_reminder_days,
            purge_batch_size: r.ranged("ACCOUNT_PURGE_BATCH_SIZE", 100, 1, 10_000)?,
            max_sessions_per_user: r.ranged("MAX_SESSIONS_PER_USER", 5, 1, 1000)? as u32,
            require_email_verification: r.bool("REQUIRE_EMAIL_VERIFICATION", true)?,
            cookie_secure: r.bool("COOKIE_SECURE", production)?,
            password_hash_concurrency: r.ranged("PASSWORD_HASH_CONCURRENCY", cpus as u64, 1, 256)?
                as usize,
            frontend_url: frontend_url.trim_end_matches('/').to_string(),
            external_frontend,
            first_superuser: first_superuser(r)?,
        })
    }
}

fn reminder_days(raw: &str, grace_period_days: u32) -> Result<Vec<u32>, ConfigError> {
    let mut days = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(d) if d >= 1 && d <= grace_period_days.max(1) => days.push(d),
            _ => {
                return Err(ConfigError::new(
                    "ACCOUNT_DELETION_REMINDER_DAYS",
                    format!(
                        "expected comma-separated whole days between 1 and the grace period ({grace_period_days}), got {raw:?}"
                    ),
                ));
            }
        }
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    Ok(days)
}

/// The first superuser is held to every account rule, like any account.
fn first_superuser(r: &Reader) -> Result<Option<FirstSuperuser>, ConfigError> {
    let email = r.raw("FIRST_SUPERUSER_EMAIL");
    let password = r.raw("FIRST_SUPERUSER_PASSWORD");
    let username = r.string("FIRST_SUPERUSER_USERNAME", "superuser");
    let (email, password) = match (email, password) {
        (None, None) => return Ok(None),
        (Some(email), Some(password)) => (email, password),
        _ => {
            return Err(ConfigError::new(
                "FIRST_SUPERUSER_PASSWORD",
                "FIRST_SUPERUSER_EMAIL and FIRST_SUPERUSER_PASSWORD go together; set both or neither",
            ));
        }
    };
    let messages = |problems: Vec<FieldProblem>| {
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let email = EmailAddress::parse(&email)
        .map_err(|p| ConfigError::new("FIRST_SUPERUSER_EMAIL", p.message))?;
    let username = Username::parse(&username)
        .map_err(|p| ConfigError::new("FIRST_SUPERUSER_USERNAME", messages(p)))?;
    let password = Password::parse("password", password)
        .map_err(|p| ConfigError::new("FIRST_SUPERUSER_PASSWORD", messages(p)))?;
    Ok(Some(FirstSuperuser {
        email,
        username,
        password,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<AuthSettings, ConfigError> {
        AuthSettings::read(&Reader::from_pairs(pairs), false, "http://localhost:8000")
    }

    #[test]
    fn the_first_superuser_follows_the_account_rules() {
        let ok = [
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
        ];
        assert!(read(&ok).unwrap().first_superuser.is_some());
        let with = |extra: (&'static str, &'static str)| {
            let mut pairs = ok.to_vec();
            pairs.push(extra);
            read(&pairs).unwrap_err().var
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
        assert_eq!(read(&ok[..1]).unwrap_err().var, "FIRST_SUPERUSER_PASSWORD");
    }

    #[test]
    fn production_refuses_weak_secret() {
        let production = |pairs: &[(&str, &str)]| {
            AuthSettings::read(&Reader::from_pairs(pairs), true, "http://localhost:8000")
        };
        assert_eq!(production(&[]).unwrap_err().var, "SECRET_KEY");
        assert_eq!(
            production(&[("SECRET_KEY", "short-but-not-default")])
                .unwrap_err()
                .var,
            "SECRET_KEY"
        );
        let s = production(&[("SECRET_KEY", &"x".repeat(32))]).unwrap();
        assert!(s.cookie_secure);
        assert!(!read(&[]).unwrap().cookie_secure);
    }

    #[test]
    fn reminders_are_sorted_and_within_the_grace_period() {
        let s = read(&[("ACCOUNT_DELETION_REMINDER_DAYS", "1, 3,3")]).unwrap();
        assert_eq!(s.deletion_reminder_days, [3, 1]);
        assert_eq!(
            read(&[("ACCOUNT_DELETION_REMINDER_DAYS", "9")])
                .unwrap_err()
                .var,
            "ACCOUNT_DELETION_REMINDER_DAYS"
        );
        assert_eq!(
            read(&[("ACCESS_TOKEN_EXPIRE_MINUTES", "2")])
                .unwrap()
                .access_token_ttl,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = read(&[
            ("SECRET_KEY", "a-secret-that-must-not-print"),
            ("FIRST_SUPERUSER_EMAIL", "root@example.com"),
            ("FIRST_SUPERUSER_PASSWORD", "SuperSecret123!"),
        ])
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("must-not-print") && !printed.contains("SuperSecret"));
    }
}
