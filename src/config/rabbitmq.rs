//! `rabbitmq`: whether jobs go through RabbitMQ to `worker` processes (otherwise the server
//! runs them itself), the broker and the queue.

use std::time::Duration;

use super::reader::{ConfigError, Reader, SECOND, redact_url};

#[derive(Clone)]
pub struct RabbitSettings {
    pub enabled: bool,
    pub url: String,
    pub queue: String,
    /// A published-but-unstarted job older than this is published again (covers a relay that
    /// died between marking a row and publishing it); duplicates are skipped by the runner.
    pub republish_after: Duration,
}

impl std::fmt::Debug for RabbitSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSettings")
            .field("enabled", &self.enabled)
            .field("url", &redact_url(&self.url))
            .field("queue", &self.queue)
            .field("republish_after", &self.republish_after)
            .finish()
    }
}

impl RabbitSettings {
    pub fn read(r: &Reader) -> Result<Self, ConfigError> {
        let url = r.string("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(ConfigError::new(
                "RABBITMQ_URL",
                format!(
                    "expected an amqp:// or amqps:// URL, got {:?}",
                    redact_url(&url)
                ),
            ));
        }
        let queue = r.string("RABBITMQ_QUEUE", "keel.jobs");
        if queue.len() > 200
            || !queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        {
            return Err(ConfigError::new(
                "RABBITMQ_QUEUE",
                format!("expected up to 200 letters, digits and . _ - :, got {queue:?}"),
            ));
        }
        Ok(Self {
            enabled: r.bool("ENABLE_RABBITMQ", false)?,
            url,
            queue,
            republish_after: r.duration("JOB_REPUBLISH_AFTER_SECONDS", SECOND, 300, 1, 86_400)?,
        })
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<RabbitSettings, ConfigError> {
        RabbitSettings::read(&Reader::from_pairs(pairs))
    }

    #[test]
    fn off_by_default_with_a_local_broker() {
        let s = read(&[]).unwrap();
        assert!(!s.enabled);
        assert_eq!(s.queue, "keel.jobs");
        assert_eq!(s.dead_letter_queue(), "keel.jobs.dead");
    }

    #[test]
    fn urls_and_queue_names_are_checked() {
        assert_eq!(
            read(&[("RABBITMQ_URL", "http://x")]).unwrap_err().var,
            "RABBITMQ_URL"
        );
        assert_eq!(
            read(&[("RABBITMQ_QUEUE", "a queue")]).unwrap_err().var,
            "RABBITMQ_QUEUE"
        );
        let s = read(&[("RABBITMQ_URL", "amqp://u:hunter2@mq:5672/%2f")]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
