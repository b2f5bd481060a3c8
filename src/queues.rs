//! The queues, what a kind of job declares (its queue, limits and schedule), and the priority
//! lanes inside a queue. A leaf module: the settings (which queues a worker serves, how each
//! kind is routed) and the job system both read it.
//!
//! A queue is a kind of work with workers of its own, so that a backlog of one (a million rows
//! of data processing) never delays another (a verification mail). On RabbitMQ each queue is
//! `<RABBITMQ_QUEUE>.<queue>` with its dead letters in `<RABBITMQ_QUEUE>.<queue>.dead`; the
//! in-process worker polls each queue with a concurrency of its own.

use std::fmt;

/// A queue: the kind of work a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// Mail: short, latency-sensitive, and what users wait for.
    Email,
    /// Work users submit: data processing, long-running tasks, test tasks.
    Default,
    /// Periodic housekeeping: purges, reminders, token clean-up, job pruning.
    Maintenance,
}

/// What the job system knows of a kind of job without running it: where it goes, how it is
/// tried, and, for a periodic job, the setting holding its schedule. Each kind declares it
/// beside its handler (the `Job` trait); the application's one list of jobs hands them to the
/// settings, which route, limit and schedule every job by it.
#[derive(Debug, Clone, Copy)]
pub struct JobKind {
    pub name: &'static str,
    pub queue: Queue,
    /// 0 to 9, 9 first; a submission may ask for another.
    pub priority: u8,
    /// Runs before it fails for good; `None`: `JOB_MAX_ATTEMPTS`.
    pub max_attempts: Option<u16>,
    /// How long one run may take; `None`: `JOB_TIMEOUT_SECONDS`.
    pub timeout: Option<std::time::Duration>,
    /// Set for a job the scheduler enqueues.
    pub schedule: Option<ScheduleSetting>,
}

/// A periodic job's schedule: the setting that holds its cron expression, the expression when
/// the setting is absent, and the payload of the run for a slot.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleSetting {
    pub setting: &'static str,
    pub default: &'static str,
    pub payload: fn(chrono::DateTime<chrono::Utc>) -> serde_json::Value,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Email, Queue::Default, Queue::Maintenance];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Default => "default",
            Self::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|q| q.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Parses a comma-separated list such as `email,default` (or `all`), without repeats, in
    /// the order of [`Queue::ALL`].
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(Self::ALL.to_vec());
        }
        let mut queues = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let queue = Self::parse(part).ok_or_else(|| {
                format!(
                    "unknown queue {part:?}; the queues are {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })?;
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        if queues.is_empty() {
            return Err("expected at least one queue, such as email,default".into());
        }
        queues.sort();
        Ok(queues)
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Priorities run from 0 to 9; 9 runs first.
pub const MAX_PRIORITY: u8 = 9;
pub const DEFAULT_PRIORITY: u8 = 5;

/// A priority lane of a queue on RabbitMQ: quorum queues on RabbitMQ 3.x order nothing by
/// priority, so each queue has three lanes (0–3, 4–6, 7–9) and a worker takes from the highest
/// lane first; among the deliveries a worker holds, the exact priority decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Low,
    Normal,
    High,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::High, Lane::Normal, Lane::Low];

    pub fn of(priority: u8) -> Self {
        match priority {
            0..=3 => Self::Low,
            4..=6 => Self::Normal,
            _ => Self::High,
        }
    }

    /// What the RabbitMQ queue's name adds: nothing for the normal lane (so the queue most
    /// jobs travel through is plainly `<RABBITMQ_QUEUE>.<queue>`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Low => ".low",
            Self::Normal => "",
            Self::High => ".high",
        }
    }

    /// The priority a delivery without one is taken to have.
    pub fn priority(self) -> u8 {
        match self {
            Self::Low => 2,
            Self::Normal => DEFAULT_PRIORITY,
            Self::High => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lists_parse() {
        assert_eq!(
            Queue::parse_list("default, email,email").unwrap(),
            vec![Queue::Email, Queue::Default]
        );
        assert_eq!(Queue::parse_list("all").unwrap(), Queue::ALL.to_vec());
        assert!(Queue::parse_list("mail").unwrap_err().contains("email"));
        assert!(Queue::parse_list(" , ").is_err());
    }

    #[test]
    fn lanes_split_the_priorities() {
        assert_eq!(Lane::of(0), Lane::Low);
        assert_eq!(Lane::of(3), Lane::Low);
        assert_eq!(Lane::of(DEFAULT_PRIORITY), Lane::Normal);
        assert_eq!(Lane::of(7), Lane::High);
        assert_eq!(Lane::of(MAX_PRIORITY), Lane::High);
        for lane in Lane::ALL {
            assert_eq!(Lane::of(lane.priority()), lane);
        }
    }
}
