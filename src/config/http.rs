//! `http`: where the server listens, under which prefix, whom it lets call it from a browser
//! and which proxies it believes.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::reader::{ConfigError, Reader, SECOND};
use crate::net::TrustedProxies;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    /// Empty, or a path like `/api` under which every route is nested.
    pub api_prefix: String,
    /// How long the server waits for in-flight requests and jobs at shutdown.
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long the server keeps serving while readiness already fails, so load
    /// balancers take it out of rotation before the listener closes.
    pub shutdown_drain: Duration,
    /// Origins allowed to call the API from a browser; empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// The address browsers and mail readers reach this server at (`PUBLIC_URL`), without
    /// `API_PREFIX`: Keel's own pages and the callback URL given to sign-in providers.
    pub public_url: String,
    /// The operator console at `/console` (`ENABLE_CONSOLE`).
    pub console: bool,
    /// Where `/metrics` is served instead of beside the API (`METRICS_ADDR`), so that metrics
    /// need not be public; unset, the API's own port serves them.
    pub metrics_addr: Option<SocketAddr>,
}

impl HttpSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
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
                return Err(ConfigError::new(
                    "BACKEND_CORS_ORIGINS",
                    format!(
                        "expected comma-separated origins such as https://app.example.com, got {origin:?}"
                    ),
                ));
            }
        }
        let trusted_proxies =
            TrustedProxies::parse(&r.string("TRUSTED_PROXIES", "")).map_err(|message| {
                ConfigError::new(
                    "TRUSTED_PROXIES",
                    format!("expected comma-separated IP addresses or CIDR blocks: {message}"),
                )
            })?;
        let host: IpAddr = r.parse("HOST", IpAddr::from([127, 0, 0, 1]), "an IP address")?;
        let port = r.ranged("PORT", 8000, 0, 65535)? as u16;
        // Listening on every interface says nothing of the name people use: localhost then.
        let default_public = match host {
            h if h.is_unspecified() => format!("http://localhost:{port}"),
            IpAddr::V6(h) => format!("http://[{h}]:{port}"),
            IpAddr::V4(h) => format!("http://{h}:{port}"),
        };
        let public_url = r.string("PUBLIC_URL", &default_public);
        if !url::Url::parse(&public_url)
            .is_ok_and(|u| u.has_host() && matches!(u.scheme(), "http" | "https"))
        {
            return Err(ConfigError::new(
                "PUBLIC_URL",
                format!("expected an absolute http(s) URL, got {public_url:?}"),
            ));
        }
        Ok(Self {
            host,
            port,
            public_url: public_url.trim_end_matches('/').to_string(),
            console: r.bool("ENABLE_CONSOLE", true)?,
            metrics_addr: r.address("METRICS_ADDR", "0.0.0.0:9090")?,
            api_prefix: normalise_prefix(&r.string("API_PREFIX", ""))?,
            shutdown_timeout: r.duration("SHUTDOWN_TIMEOUT", SECOND, 30, 0, 3600)?,
            shutdown_drain: r.duration("SHUTDOWN_DRAIN_SECONDS", SECOND, 5, 0, 3600)?,
            cors_origins,
            trusted_proxies,
        })
    }
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
        return Err(ConfigError::new(
            "API_PREFIX",
            format!("expected a path such as /api, got {raw:?}"),
        ));
    }
    Ok(format!("/{trimmed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<HttpSettings, ConfigError> {
        HttpSettings::read(&Reader::from_pairs(pairs))
    }

    #[test]
    fn defaults_listen_on_loopback() {
        let s = read(&[]).unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(s.api_prefix, "");
        assert!(s.cors_origins.is_empty());
    }

    #[test]
    fn prefix_is_normalised() {
        assert_eq!(read(&[("API_PREFIX", "api/")]).unwrap().api_prefix, "/api");
        assert_eq!(read(&[("API_PREFIX", "/")]).unwrap().api_prefix, "");
        assert_eq!(
            read(&[("API_PREFIX", "/a b")]).unwrap_err().var,
            "API_PREFIX"
        );
    }

    #[test]
    fn origins_are_checked() {
        let s = read(&[(
            "BACKEND_CORS_ORIGINS",
            "https://app.example.com/, http://localhost:3000",
        )])
        .unwrap();
        assert_eq!(
            s.cors_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        assert_eq!(
            read(&[("BACKEND_CORS_ORIGINS", "app.example.com")])
                .unwrap_err()
                .var,
            "BACKEND_CORS_ORIGINS"
        );
        assert_eq!(read(&[("PORT", "eighty")]).unwrap_err().var, "PORT");
    }
}
