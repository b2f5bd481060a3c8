//! Which queue each kind of job goes to, and the priority lanes inside a queue. A leaf module:
//! the settings (which queues a worker serves) and the job system both read it.
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

/// The one table of which job goes where; a job not listed goes to `default`. A test at the
/// composition point checks that it names exactly the registered handlers.
pub const ROUTES: [(&str, Queue); 8] = [
    ("send_email", Queue::Email),
    ("test_task", Queue::Default),
    ("process_data", Queue::Default),
    ("long_running", Queue::Default),
    ("purge_deleted_accounts", Queue::Maintenance),
    ("send_deletion_reminders", Queue::Maintenance),
    ("cleanup_expired_tokens", Queue::Maintenance),
    ("prune_jobs", Queue::Maintenance),
];

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Email, Queue::Default, Queue::Maintenance];

    /// The queue a job of this name goes to.
    pub fn of(job_name: &str) -> Self {
        ROUTES
            .iter()
            .find(|(name, _)| *name == job_name)
            .map_or(Queue::Default, |(_, queue)| *queue)
    }

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
    fn each_job_has_its_queue_and_unknown_ones_go_to_default() {
        assert_eq!(Queue::of("send_email"), Queue::Email);
        assert_eq!(Queue::of("process_data"), Queue::Default);
        assert_eq!(Queue::of("prune_jobs"), Queue::Maintenance);
        assert_eq!(Queue::of("something_new"), Queue::Default);
    }

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
