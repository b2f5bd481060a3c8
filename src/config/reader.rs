//! Reading one variable at a time: trimmed, empty meaning absent, every failure naming the
//! variable. Sections get a `Reader` so they can be parsed (and tested) without the process
//! environment.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

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
///
/// Any setting `NAME` may instead be read from the file that `NAME_FILE` names (Docker and
/// Kubernetes secrets are files); setting both is an error. A reader that `collects` records
/// each invalid value and goes on with the default, so that one pass finds every invalid
/// setting (`admin config check`); otherwise the first invalid value is the error.
pub struct Reader<'a> {
    lookup: Lookup<'a>,
    collects: bool,
    problems: std::cell::RefCell<Vec<ConfigError>>,
    /// Variables taken as unset after a section refused them (collecting only).
    masked: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl<'a> Reader<'a> {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
            collects: false,
            problems: Default::default(),
            masked: Default::default(),
        }
    }

    /// A reader that records invalid values (see `problems`) instead of failing on the first.
    pub fn collecting(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            collects: true,
            ..Self::new(lookup)
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

    /// Records a problem, once per variable.
    pub fn record(&self, problem: ConfigError) {
        let mut problems = self.problems.borrow_mut();
        if !problems.iter().any(|p| p.var == problem.var) {
            problems.push(problem);
        }
    }

    /// The problems recorded so far, in the order they were found.
    pub fn problems(&self) -> Vec<ConfigError> {
        self.problems
            .borrow()
            .iter()
            .map(|p| ConfigError::new(&p.var, p.message.clone()))
            .collect()
    }

    /// `problem` as the error, or (collecting) recorded, with `default` to go on with.
    fn invalid<T>(&self, problem: ConfigError, default: T) -> Result<T, ConfigError> {
        if self.collects {
            self.record(problem);
            Ok(default)
        } else {
            Err(problem)
        }
    }

    fn looked_up(&self, var: &str) -> Option<String> {
        if self.masked.borrow().contains(var) {
            return None;
        }
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The variable's value (trimmed; empty is absent), or the contents of the file its
    /// `_FILE` variable names. A problem with the file is recorded, and the setting absent.
    pub fn raw(&self, var: &str) -> Option<String> {
        let file_var = format!("{var}_FILE");
        match (self.looked_up(var), self.looked_up(&file_var)) {
            (value, None) => value,
            (Some(_), Some(_)) => {
                self.record(ConfigError::new(
                    var,
                    format!("set either {var} or {file_var}, not both"),
                ));
                None
            }
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(contents) => Some(contents.trim().to_string()).filter(|v| !v.is_empty()),
                Err(e) => {
                    self.record(ConfigError::new(
                        &file_var,
                        format!("cannot read {path:?}: {e}"),
                    ));
                    None
                }
            },
        }
    }

    /// Where the value of `var` comes from: `Some(path)` when it is read from a file.
    pub fn file_of(&self, var: &str) -> Option<String> {
        self.looked_up(&format!("{var}_FILE"))
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
            Some(v) => match v.parse::<T>() {
                Ok(value) => Ok(value),
                Err(e) => self.invalid(
                    ConfigError::new(var, format!("{what} expected, got {v:?} ({e})")),
                    default,
                ),
            },
        }
    }

    /// A socket address, when set.
    pub fn address(&self, var: &str, example: &str) -> Result<Option<SocketAddr>, ConfigError> {
        match self.raw(var) {
            None => Ok(None),
            Some(v) => match v.parse() {
                Ok(addr) => Ok(Some(addr)),
                Err(_) => self.invalid(
                    ConfigError::new(
                        var,
                        format!("expected an address such as {example}, got {v:?}"),
                    ),
                    None,
                ),
            },
        }
    }

    pub fn bool(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(var) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => self.invalid(
                    ConfigError::new(var, format!("expected true or false, got {v:?}")),
                    default,
                ),
            },
        }
    }

    pub fn ranged(&self, var: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let value = self.parse(var, default, "a whole number")?;
        if value < min || value > max {
            return self.invalid(
                ConfigError::new(var, format!("must be between {min} and {max}, got {value}")),
                default,
            );
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

    /// Reads a section. Collecting, a problem the section itself finds (two settings that
    /// disagree, a value its own rules refuse) is recorded and the section read again with
    /// that variable taken as unset, so that the invalid values after it are found too. Only
    /// the section's first such problem is recorded: a later one may be the unset variable's
    /// doing (an email without its password). `None` when the section cannot be read.
    pub fn section<T>(
        &self,
        read: impl Fn(&Self) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        let mut first = true;
        loop {
            match read(self) {
                Ok(section) => return Ok(first.then_some(section)),
                Err(problem) if !self.collects => return Err(problem),
                Err(problem) => {
                    let unset_again = self.masked.borrow_mut().insert(problem.var.clone());
                    if first {
                        self.record(problem);
                        first = false;
                    }
                    if !unset_again {
                        return Ok(None);
                    }
                }
            }
        }
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
        let fallback = parse_span(default).unwrap_or_default();
        let raw = self.string(var, default);
        let span = match parse_span(&raw) {
            Ok(span) => span,
            Err(e) => return self.invalid(ConfigError::new(var, e), fallback),
        };
        if span > max {
            return self.invalid(
                ConfigError::new(
                    var,
                    format!(
                        "must be at most {} days, got {raw:?}",
                        max.as_secs() / 86_400
                    ),
                ),
                fallback,
            );
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
    fn a_setting_can_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("keel-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cr3t-from-a-file\n").unwrap();
        let path = secret.display().to_string();
        let r = Reader::from_pairs(&[("SECRET_KEY_FILE", &path)]);
        assert_eq!(r.raw("SECRET_KEY").as_deref(), Some("s3cr3t-from-a-file"));
        assert_eq!(r.file_of("SECRET_KEY"), Some(path.clone()));
        assert!(r.problems().is_empty());
        // Both at once is refused; a file that cannot be read names the _FILE variable.
        let r = Reader::from_pairs(&[("SECRET_KEY", "x"), ("SECRET_KEY_FILE", &path)]);
        assert_eq!(r.raw("SECRET_KEY"), None);
        assert_eq!(r.problems()[0].var, "SECRET_KEY");
        let r = Reader::from_pairs(&[("SECRET_KEY_FILE", "/nonexistent/keel-secret")]);
        assert_eq!(r.raw("SECRET_KEY"), None);
        let problems = r.problems();
        assert_eq!(problems[0].var, "SECRET_KEY_FILE");
        assert!(
            problems[0].message.contains("cannot read"),
            "{}",
            problems[0]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_collecting_reader_goes_on_with_defaults() {
        let lookup = |k: &str| match k {
            "A" => Some("x".to_string()),
            "B" => Some("7".to_string()),
            "C" => Some("soon".to_string()),
            _ => None,
        };
        let r = Reader::collecting(lookup);
        assert!(r.bool("A", true).unwrap());
        assert_eq!(r.ranged("B", 5, 1, 6).unwrap(), 5);
        assert_eq!(r.span("C", "1d", DAY).unwrap(), DAY);
        let vars: Vec<String> = r.problems().into_iter().map(|p| p.var).collect();
        assert_eq!(vars, ["A", "B", "C"]);
        // A strict reader fails on the first.
        assert_eq!(Reader::new(lookup).bool("A", true).unwrap_err().var, "A");
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
