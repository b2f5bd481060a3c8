//! `rate_limit`: whether requests are rate limited, each limit's budget, and what happens when
//! Redis cannot be asked.

use std::time::Duration;

use super::reader::{ConfigError, Reader, parse_span};

/// `limit` requests per `period`: a burst of `limit`, then one every `period / limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub period: Duration,
}

impl Budget {
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    /// The period in words, for messages: `minute`, `15 minutes`, `90 seconds`.
    pub fn period_words(&self) -> String {
        let secs = self.period.as_secs();
        for (unit, size) in [
            ("day", 86_400),
            ("hour", 3600),
            ("minute", 60),
            ("second", 1),
        ] {
            if secs.is_multiple_of(size) {
                return match secs / size {
                    1 => unit.to_string(),
                    n => format!("{n} {unit}s"),
                };
            }
        }
        format!("{secs} seconds")
    }
}

/// Parses `5/minute`, `100/hour`, `3/second`, `1000/day` or a span: `5/15m`, `10/90s`.
pub fn parse_budget(raw: &str) -> Result<Budget, String> {
    let shape = || format!("expected a limit like 5/minute, 100/hour or 5/15m, got {raw:?}");
    let (limit, period) = raw.trim().split_once('/').ok_or_else(shape)?;
    let limit: u32 = limit.trim().parse().map_err(|_| shape())?;
    let period = match period.trim() {
        "second" | "sec" | "s" => Duration::from_secs(1),
        "minute" | "min" | "m" => Duration::from_secs(60),
        "hour" | "h" => Duration::from_secs(3600),
        "day" | "d" => Duration::from_secs(86_400),
        span => parse_span(span).map_err(|_| shape())?,
    };
    if limit == 0 || period < Duration::from_secs(1) || period > Duration::from_secs(86_400) {
        return Err(format!(
            "{raw:?}: the limit must be at least 1, the period between 1 second and 1 day"
        ));
    }
    if u128::from(limit) > period.as_millis() {
        return Err(format!("{raw:?}: at most one request per millisecond"));
    }
    Ok(Budget { limit, period })
}

/// Each limit's budget (the "Rate limits" table of docs/configuration.md): per client address, except
/// `login_failures`, per account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub login: Budget,
    pub register: Budget,
    pub verification: Budget,
    pub password_reset: Budget,
    pub deletion: Budget,
    pub mfa: Budget,
    pub oidc: Budget,
    pub default: Budget,
    pub login_failures: Budget,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            login: Budget::per_minute(5),
            register: Budget::per_minute(3),
            verification: Budget::per_minute(3),
            password_reset: Budget::per_minute(3),
            deletion: Budget::per_minute(3),
            mfa: Budget::per_minute(10),
            oidc: Budget::per_minute(20),
            default: Budget::per_minute(100),
            // Failed logins for one account, from whatever addresses: 5, then one every 3
            // minutes.
            login_failures: Budget {
                limit: 5,
                period: Duration::from_secs(15 * 60),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// When Redis cannot be asked: let requests through (true) or refuse them with 503.
    pub fail_open: bool,
    pub budgets: Budgets,
}

impl RateLimitSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let defaults = Budgets::default();
        let budget = |var: &str, default: Budget| -> Result<Budget, ConfigError> {
            match r.raw(var) {
                None => Ok(default),
                Some(raw) => parse_budget(&raw).map_err(|e| ConfigError::new(var, e)),
            }
        };
        Ok(Self {
            enabled: r.bool("ENABLE_RATE_LIMITING", true)?,
            fail_open: r.bool("RATE_LIMIT_FAIL_OPEN", true)?,
            budgets: Budgets {
                login: budget("RATE_LIMIT_LOGIN", defaults.login)?,
                register: budget("RATE_LIMIT_REGISTER", defaults.register)?,
                verification: budget("RATE_LIMIT_VERIFICATION", defaults.verification)?,
                password_reset: budget("RATE_LIMIT_PASSWORD_RESET", defaults.password_reset)?,
                deletion: budget("RATE_LIMIT_DELETION", defaults.deletion)?,
                mfa: budget("RATE_LIMIT_MFA", defaults.mfa)?,
                oidc: budget("RATE_LIMIT_OIDC", defaults.oidc)?,
                default: budget("RATE_LIMIT_DEFAULT", defaults.default)?,
                login_failures: budget("RATE_LIMIT_LOGIN_FAILURES", defaults.login_failures)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_and_failing_open_by_default() {
        let s = RateLimitSettings::read(&Reader::from_pairs(&[])).unwrap();
        assert!(s.enabled && s.fail_open);
        assert_eq!(s.budgets, Budgets::default());
        let s = RateLimitSettings::read(&Reader::from_pairs(&[("RATE_LIMIT_FAIL_OPEN", "no")]))
            .unwrap();
        assert!(!s.fail_open);
    }

    #[test]
    fn budgets_are_a_count_per_period() {
        assert_eq!(parse_budget("5/minute"), Ok(Budget::per_minute(5)));
        assert_eq!(
            parse_budget(" 100 / hour "),
            Ok(Budget {
                limit: 100,
                period: Duration::from_secs(3600)
            })
        );
        let fifteen = parse_budget("5/15m").unwrap();
        assert_eq!(fifteen.period, Duration::from_secs(900));
        assert_eq!(fifteen.period_words(), "15 minutes");
        assert_eq!(Budget::per_minute(5).period_words(), "minute");
        for bad in [
            "5",
            "five/minute",
            "0/minute",
            "5/fortnight",
            "5/2d",
            "2000/second",
        ] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
        let s = RateLimitSettings::read(&Reader::from_pairs(&[
            ("RATE_LIMIT_LOGIN", "10/hour"),
            ("RATE_LIMIT_LOGIN_FAILURES", "3/1h"),
        ]))
        .unwrap();
        assert_eq!(s.budgets.login.limit, 10);
        assert_eq!(s.budgets.login_failures.period, Duration::from_secs(3600));
        assert_eq!(
            RateLimitSettings::read(&Reader::from_pairs(&[("RATE_LIMIT_MFA", "lots")]))
                .unwrap_err()
                .var,
            "RATE_LIMIT_MFA"
        );
    }
}
