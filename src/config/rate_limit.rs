//! `rate_limit`: whether requests are rate limited, and what happens when Redis cannot be asked.

use super::reader::{ConfigError, Reader};

#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// When Redis cannot be asked: let requests through (true) or refuse them with 503.
    pub fail_open: bool,
}

impl RateLimitSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        Ok(Self {
            enabled: r.bool("ENABLE_RATE_LIMITING", true)?,
            fail_open: r.bool("RATE_LIMIT_FAIL_OPEN", true)?,
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
        let s = RateLimitSettings::read(&Reader::from_pairs(&[("RATE_LIMIT_FAIL_OPEN", "no")]))
            .unwrap();
        assert!(!s.fail_open);
    }
}
