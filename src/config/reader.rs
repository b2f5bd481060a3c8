//! Reading one variable at a time: trimmed, empty meaning absent, every failure naming the
//! variable. Sections get a `Reader` so they can be parsed (and tested) without the process
//! environment.

use std::{fmt, str::FromStr, time::Duration};

/// A start-up configuration problem: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    /// Most names are fixed; a provider's (`OIDC_GOOGLE_CLIENT_ID`) is made from its name.
    pub var: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &str, message: impl Into<String>) -> Self {
        Self {
            var: var.to_string(),
            message: message.into(),
        }
    }
}

/// Finds a variable's value, if it has one.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Looks variables up through a function, so tests can build settings without touching the
/// process environment.
pub struct Reader<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// A reader over fixed pairs, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Reader<'static> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Reader::new(move |k| map.get(k).cloned())
    }

    pub fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn string(&self, var: &str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    pub fn parse<T: FromStr>(&self, var: &str, default: T, what: &str) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => v
                .parse::<T>()
                .map_err(|e| ConfigError::new(var, format!("{what} expected, got {v:?} ({e})"))),
        }
    }

    pub fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    var,
                    format!("expected true or false, got {v:?}"),
                )),
            },
        }
    }

    pub fn ranged(&self, var: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value = self.parse(var, default, "a whole number")?;
        if value < min || value > max {
            return Err(ConfigError::new(
                var,
                format!("must be between {min} and {max}, got {value}"),
            ));
        }
        Ok(value)
    }

    /// A whole number of `unit`s (seconds, minutes, …) as a duration.
    pub fn duration(
        &self,
        var: &str,
        unit: Duration,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<Duration, ConfigError> {
        let n = self.ranged(var, default, min, max)?;
        Ok(unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
    }
}

/// A span written with its unit: `90s`, `15m`, `12h`, `7d`.
pub fn parse_span(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{raw:?} has no unit; write it like 90s, 15m, 12h or 7d"))?;
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} does not start with a whole number"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {raw:?}; use s, m, h or d"
            ));
        }
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long"))
}

impl Reader<'_> {
    /// A span like `7d`, at most `max`.
    pub fn span(&self, var: &str, default: &str, max: Duration) -> Result<Duration, ConfigError> {
        let raw = self.string(var, default);
        let span = parse_span(&raw).map_err(|e| ConfigError::new(var, e))?;
        if span > max {
            return Err(ConfigError::new(
                var,
                format!(
                    "must be at most {} days, got {raw:?}",
                    max.as_secs() / 86_400
                ),
            ));
        }
        Ok(span)
    }
}

pub const SECOND: Duration = Duration::from_secs(1);
pub const MILLISECOND: Duration = Duration::from_millis(1);
pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);

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

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn empty_is_absent_and_bad_values_name_the_variable() {
        let r = Reader::from_pairs(&[("A", "  "), ("B", "x"), ("C", "70")]);
        assert_eq!(r.ranged("A", 5, 1, 10).unwrap(), 5);
        assert_eq!(r.bool("B", true).unwrap_err().var, "B");
        assert!(
            r.ranged("C", 5, 1, 10)
                .unwrap_err()
                .to_string()
                .starts_with("invalid configuration: C:")
        );
        assert_eq!(r.duration("C", MINUTE, 1, 1, 100).unwrap(), 70 * MINUTE);
    }

    #[test]
    fn spans_carry_their_unit() {
        assert_eq!(parse_span("7d"), Ok(7 * DAY));
        assert_eq!(parse_span("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_span(" 90m "), Ok(90 * MINUTE));
        assert!(parse_span("7").is_err() && parse_span("d").is_err() && parse_span("7w").is_err());
        let r = Reader::from_pairs(&[("KEEP", "400d")]);
        assert_eq!(r.span("KEEP", "1d", 365 * DAY).unwrap_err().var, "KEEP");
        assert_eq!(r.span("ABSENT", "12h", DAY).unwrap(), 12 * HOUR);
    }
}
