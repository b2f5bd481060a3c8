//! The documented settings: `.env.example`, compiled in, is the catalog that `admin config
//! check` prints (a test keeps it complete: every variable the code reads is in it).

use super::reader::{Reader, redact_url};

const EXAMPLE: &str = include_str!("../../.env.example");

/// The settings of one OpenID Connect provider, `OIDC_<NAME>_<SUFFIX>` (written in lower case
/// here: they are parts of names, not settings of their own).
pub const PROVIDER_SUFFIXES: [&str; 5] = [
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "response_mode",
];

/// A setting as `.env.example` documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Documented {
    pub name: &'static str,
    /// The value written in `.env.example`; `None` where the line is commented out (the
    /// default is computed, or the setting is off while unset).
    pub default: Option<&'static str>,
}

/// Every setting in `.env.example`, in its order, without the example provider's
/// `OIDC_<NAME>_*` lines (those depend on `OIDC_PROVIDERS`).
pub fn documented() -> Vec<Documented> {
    let mut seen = std::collections::HashSet::new();
    EXAMPLE
        .lines()
        .filter_map(|line| {
            let (commented, line) = match line.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (name, value) = line.split_once('=')?;
            let well_formed = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            (well_formed && provider_setting(name).is_none()).then_some(Documented {
                name,
                default: (!commented).then_some(value),
            })
        })
        .filter(|d| seen.insert(d.name))
        .collect()
}

/// `Some(provider)` for a provider's own setting such as `OIDC_CORP_ISSUER`.
fn provider_setting(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("OIDC")?.strip_prefix('_')?;
    PROVIDER_SUFFIXES.iter().find_map(|suffix| {
        rest.strip_suffix(suffix.to_ascii_uppercase().as_str())
            .and_then(|p| p.strip_suffix('_'))
            .filter(|p| !p.is_empty())
    })
}

/// Whether a setting's value is a secret, never printed.
pub fn is_secret(name: &str) -> bool {
    matches!(
        name,
        "SECRET_KEY" | "MFA_ENCRYPTION_KEY" | "SMTP_PASSWORD" | "FIRST_SUPERUSER_PASSWORD"
    ) || provider_setting(name).is_some() && name.ends_with("SECRET")
}

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Environment,
    /// Read from the file its `_FILE` variable names.
    File(String),
    Default,
}

/// One setting as a process would see it, safe to print: secrets masked, passwords in URLs
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub name: String,
    /// What is set, or the documented default; `None` when unset without a written default.
    pub value: Option<String>,
    pub source: Source,
}

/// Every documented setting (and each configured provider's) with its value from `lookup`.
pub fn effective(lookup: impl Fn(&str) -> Option<String>) -> Vec<Effective> {
    let r = Reader::new(lookup);
    let mut names: Vec<(String, Option<&str>)> = documented()
        .into_iter()
        .map(|d| (d.name.to_string(), d.default))
        .collect();
    for provider in r
        .string("OIDC_PROVIDERS", "")
        .split(',')
        .map(|p| p.trim().to_ascii_uppercase())
        .filter(|p| !p.is_empty())
    {
        for suffix in PROVIDER_SUFFIXES {
            let suffix = suffix.to_ascii_uppercase();
            names.push((format!("OIDC_{provider}_{suffix}"), None));
        }
    }
    names
        .into_iter()
        .map(|(name, default)| {
            let (value, source) = match r.raw(&name) {
                Some(value) => (
                    Some(value),
                    r.file_of(&name).map_or(Source::Environment, Source::File),
                ),
                None => (default.map(str::to_string), Source::Default),
            };
            let value = value.map(|v| {
                if is_secret(&name) {
                    "********".to_string()
                } else if v.contains("://") && v.contains('@') {
                    redact_url(&v)
                } else {
                    v
                }
            });
            Effective {
                name,
                value,
                source,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_reads_env_example() {
        let names: Vec<&str> = documented().iter().map(|d| d.name).collect();
        assert_eq!(names.first(), Some(&"ENVIRONMENT"));
        assert!(names.contains(&"SECRET_KEY") && names.contains(&"COOKIE_SECURE"));
        assert!(!names.contains(&"OIDC_CORP_ISSUER") && !names.contains(&"OIDC_GOOGLE_CLIENT_ID"));
        let port = documented().into_iter().find(|d| d.name == "PORT").unwrap();
        assert_eq!(port.default, Some("8000"));
        let public = documented()
            .into_iter()
            .find(|d| d.name == "PUBLIC_URL")
            .unwrap();
        assert_eq!(public.default, None);
    }

    #[test]
    fn secrets_and_url_passwords_are_never_shown() {
        let settings = effective(|k| {
            match k {
                "SECRET_KEY" => Some("a-very-secret-key"),
                "DATABASE_URL" => Some("postgres://keel:hunter2@db/keel"),
                "OIDC_PROVIDERS" => Some("corp"),
                "OIDC_CORP_CLIENT_SECRET" => Some("shh"),
                "PORT" => Some("9000"),
                _ => None,
            }
            .map(str::to_string)
        });
        let get = |name: &str| settings.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!(get("SECRET_KEY").value.as_deref(), Some("********"));
        assert_eq!(
            get("DATABASE_URL").value.as_deref(),
            Some("postgres://keel:***@db/keel")
        );
        assert_eq!(
            get("OIDC_CORP_CLIENT_SECRET").value.as_deref(),
            Some("********")
        );
        assert_eq!(get("PORT").value.as_deref(), Some("9000"));
        assert_eq!(get("PORT").source, Source::Environment);
        assert_eq!(get("HOST").source, Source::Default);
        assert_eq!(get("HOST").value.as_deref(), Some("127.0.0.1"));
    }
}
