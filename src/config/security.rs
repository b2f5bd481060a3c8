//! `security`: the response headers (HSTS among them), request size and content-type checks,
//! and security event logging.

use super::reader::{ConfigError, Reader};

#[derive(Debug, Clone)]
pub struct SecuritySettings {
    pub headers: bool,
    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub hsts: Option<String>,
    pub size_validation: bool,
    pub max_request_size: u64,
    pub content_type_validation: bool,
    pub event_logging: bool,
}

impl SecuritySettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let hsts = if r.bool("ENABLE_HSTS", false)? {
            let mut v = format!(
                "max-age={}",
                r.ranged("HSTS_MAX_AGE", 31_536_000, 0, 126_144_000)?
            );
            if r.bool("HSTS_INCLUDE_SUBDOMAINS", true)? {
                v.push_str("; includeSubDomains");
            }
            if r.bool("HSTS_PRELOAD", false)? {
                v.push_str("; preload");
            }
            Some(v)
        } else {
            None
        };
        Ok(Self {
            headers: r.bool("ENABLE_SECURITY_HEADERS", true)?,
            hsts,
            size_validation: r.bool("ENABLE_REQUEST_SIZE_VALIDATION", true)?,
            max_request_size: r.ranged("MAX_REQUEST_SIZE", 10_485_760, 1, 1 << 40)?,
            content_type_validation: r.bool("ENABLE_CONTENT_TYPE_VALIDATION", true)?,
            event_logging: r.bool("ENABLE_SECURITY_EVENT_LOGGING", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> SecuritySettings {
        SecuritySettings::read(&Reader::from_pairs(pairs)).unwrap()
    }

    #[test]
    fn hsts_is_off_until_asked_for() {
        assert_eq!(read(&[]).hsts, None);
        assert_eq!(
            read(&[("ENABLE_HSTS", "true")]).hsts.as_deref(),
            Some("max-age=31536000; includeSubDomains")
        );
        assert_eq!(
            read(&[
                ("ENABLE_HSTS", "true"),
                ("HSTS_MAX_AGE", "60"),
                ("HSTS_INCLUDE_SUBDOMAINS", "false"),
                ("HSTS_PRELOAD", "true"),
            ])
            .hsts
            .as_deref(),
            Some("max-age=60; preload")
        );
    }

    #[test]
    fn validation_is_on_by_default() {
        let s = read(&[]);
        assert!(s.headers && s.size_validation && s.content_type_validation);
        assert_eq!(s.max_request_size, 10_485_760);
    }
}
