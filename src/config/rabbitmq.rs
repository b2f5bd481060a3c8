//! `rabbitmq`: whether jobs go through RabbitMQ to `worker` processes (otherwise the server
//! runs them itself), the broker and the queue.

use std::time::Duration;

use super::reader::{ConfigError, Reader, SECOND, redact_url};
use crate::queues::{Lane, Queue};

/// The kind of RabbitMQ queue Keel declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated (Raft), the type RabbitMQ recommends for data that must not be lost.
    Quorum,
    /// The single-node type of older deployments.
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

#[derive(Clone)]
pub struct RabbitSettings {
    pub enabled: bool,
    pub url: String,
    /// The prefix of every queue's name: `<queue>.<job queue>[.high|.low]` and
    /// `<queue>.<job queue>.dead`. Before queues existed, this was the one queue's name.
    pub queue: String,
    pub queue_type: QueueType,
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
            .field("queue_type", &self.queue_type)
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
        let queue_type = match r.string("RABBITMQ_QUEUE_TYPE", "quorum").trim() {
            t if t.eq_ignore_ascii_case("quorum") => QueueType::Quorum,
            t if t.eq_ignore_ascii_case("classic") => QueueType::Classic,
            other => {
                return Err(ConfigError::new(
                    "RABBITMQ_QUEUE_TYPE",
                    format!("expected quorum or classic, got {other:?}"),
                ));
            }
        };
        Ok(Self {
            enabled: r.bool("ENABLE_RABBITMQ", false)?,
            url,
            queue,
            queue_type,
            republish_after: r.duration("JOB_REPUBLISH_AFTER_SECONDS", SECOND, 300, 1, 86_400)?,
        })
    }

    /// The RabbitMQ queue of one priority lane of a job queue.
    pub fn lane_queue(&self, queue: Queue, lane: Lane) -> String {
        format!("{}.{queue}{}", self.queue, lane.suffix())
    }

    /// Where a job queue's messages go when their job failed for good.
    pub fn dead_letter_queue(&self, queue: Queue) -> String {
        format!("{}.{queue}.dead", self.queue)
    }

    /// Every RabbitMQ queue Keel uses, dead letters included.
    pub fn all_queues(&self) -> Vec<String> {
        Queue::ALL
            .into_iter()
            .flat_map(|q| {
                Lane::ALL
                    .map(|lane| self.lane_queue(q, lane))
                    .into_iter()
                    .chain([self.dead_letter_queue(q)])
            })
            .collect()
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
        assert_eq!(s.queue_type, QueueType::Quorum);
        assert_eq!(s.lane_queue(Queue::Email, Lane::Normal), "keel.jobs.email");
        assert_eq!(
            s.lane_queue(Queue::Default, Lane::High),
            "keel.jobs.default.high"
        );
        assert_eq!(s.dead_letter_queue(Queue::Email), "keel.jobs.email.dead");
        assert_eq!(s.all_queues().len(), 12);
    }

    #[test]
    fn queue_types_are_checked() {
        let s = read(&[("RABBITMQ_QUEUE_TYPE", "Classic")]).unwrap();
        assert_eq!(s.queue_type, QueueType::Classic);
        assert_eq!(
            read(&[("RABBITMQ_QUEUE_TYPE", "stream")]).unwrap_err().var,
            "RABBITMQ_QUEUE_TYPE"
        );
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
