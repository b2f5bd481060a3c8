//! `websockets`: whether `/ws` is served, who may connect, and each connection's limits.

use std::time::Duration;

use super::reader::{ConfigError, Reader, SECOND};

#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    pub enabled: bool,
    pub require_auth: bool,
    pub max_message_bytes: usize,
    /// Messages a client may send per second (a burst of twice that is allowed).
    pub messages_per_second: u32,
    /// Messages waiting to be sent to one client; a client that falls further behind is cut off.
    pub send_queue: usize,
    pub ping_interval: Duration,
}

impl WebSocketSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        Ok(Self {
            enabled: r.bool("ENABLE_WEBSOCKETS", false)?,
            require_auth: r.bool("WS_REQUIRE_AUTH", false)?,
            max_message_bytes: r.ranged("WS_MAX_MESSAGE_BYTES", 65_536, 128, 16 << 20)? as usize,
            messages_per_second: r.ranged("WS_MESSAGES_PER_SECOND", 20, 1, 10_000)? as u32,
            send_queue: r.ranged("WS_SEND_QUEUE", 256, 1, 1_000_000)? as usize,
            ping_interval: r.duration("WS_PING_INTERVAL_SECONDS", SECOND, 30, 1, 3600)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_with_bounded_limits() {
        let s = WebSocketSettings::read(&Reader::from_pairs(&[])).unwrap();
        assert!(!s.enabled && !s.require_auth);
        assert_eq!(s.ping_interval, Duration::from_secs(30));
        assert_eq!(
            WebSocketSettings::read(&Reader::from_pairs(&[("WS_MAX_MESSAGE_BYTES", "1")]))
                .unwrap_err()
                .var,
            "WS_MAX_MESSAGE_BYTES"
        );
    }
}
