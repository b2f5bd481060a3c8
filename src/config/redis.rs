//! `redis`: Redis for the cache, rate limits, session revocation and WebSocket fan-out (without
//! it each of those works in memory, per instance), and how long cached pages live.

use std::time::Duration;

use super::reader::{ConfigError, MILLISECOND, Reader, SECOND, redact_url};

#[derive(Clone)]
pub struct RedisSettings {
    pub enabled: bool,
    pub url: String,
    /// Prepended to every Redis key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis command; past it the request goes on without Redis.
    pub timeout: Duration,
    /// How long a cached user page lives (in Redis or in memory); zero: no caching.
    pub cache_ttl: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("enabled", &self.enabled)
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

impl RedisSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let url = r.string("REDIS_URL", "redis://127.0.0.1:6379/0");
        if fred::types::config::Config::from_url(&url).is_err() {
            return Err(ConfigError::new(
                "REDIS_URL",
                format!(
                    "expected redis://[:PASSWORD@]HOST:PORT/DB (or rediss://), got {}",
                    redact_url(&url)
                ),
            ));
        }
        Ok(Self {
            enabled: r.bool("ENABLE_REDIS", false)?,
            url,
            key_prefix: r.string("REDIS_KEY_PREFIX", "keel:"),
            timeout: r.duration("REDIS_TIMEOUT_MS", MILLISECOND, 250, 10, 60_000)?,
            cache_ttl: r.duration("CACHE_TTL_SECONDS", SECOND, 60, 0, 86_400)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<RedisSettings, ConfigError> {
        RedisSettings::read(&Reader::from_pairs(pairs))
    }

    #[test]
    fn off_by_default_and_checked_when_set() {
        let s = read(&[]).unwrap();
        assert!(!s.enabled);
        assert_eq!(s.key_prefix, "keel:");
        assert_eq!(
            read(&[("REDIS_URL", "localhost")]).unwrap_err().var,
            "REDIS_URL"
        );
        assert_eq!(
            read(&[("CACHE_TTL_SECONDS", "0")]).unwrap().cache_ttl,
            Duration::ZERO
        );
        let s = read(&[("REDIS_URL", "redis://:hunter2@cache:6379/0")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
