//! `jobs`: attempts, backoff and time limits of every job, the worker's concurrency and
//! metrics address, and the cron schedule of each periodic job.

use std::{net::SocketAddr, time::Duration};

use super::limits::{Limits, parse_queue_limits};
use super::reader::{ConfigError, DAY, MILLISECOND, Reader, SECOND};
use super::schedule::schedules;
pub use super::schedule::{Periodic, parse_cron};
use crate::queues::{DEFAULT_PRIORITY, JobKind, Queue};

#[derive(Debug, Clone)]
pub struct JobSettings {
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
    /// How often one query per worker asks which of its running jobs were cancelled.
    pub cancel_poll: Duration,
    /// Jobs one worker process (or the in-process worker) runs at once, per queue it serves.
    pub worker_concurrency: usize,
    /// `WORKER_CONCURRENCY_<QUEUE>` where set: a queue's own concurrency.
    pub queue_concurrency: Vec<(Queue, usize)>,
    /// The queues a `worker` serves (`WORKER_QUEUES`, default all); the in-process worker
    /// serves every queue.
    pub worker_queues: Vec<Queue>,
    pub worker_shutdown_timeout: Duration,
    /// Where a worker serves `/metrics` and `/health/live`; unset: not served.
    pub worker_metrics_addr: Option<SocketAddr>,
    /// Where the scheduler serves `/health/live` and `/health/ready`; unset: not served.
    pub scheduler_health_addr: Option<SocketAddr>,
    /// Every kind of job the application declares, in the order of its list.
    pub kinds: Vec<JobKind>,
    /// Periodic jobs for the scheduler, in the order of `kinds`; switched-off ones absent.
    pub schedules: Vec<Periodic>,
    /// How long succeeded (and revoked) jobs are kept after they finish.
    pub retention_success: Duration,
    /// How long failed jobs are kept after they finish.
    pub retention_failed: Duration,
    /// Rate and concurrency limits per queue and per concurrency key.
    pub limits: Limits,
}

impl JobSettings {
    /// The settings of the job system, for the kinds of job in `kinds`.
    pub fn read(r: &Reader, kinds: &[JobKind]) -> Result<Self, ConfigError> {
        let retry_base = r.duration("JOB_RETRY_BASE_MS", MILLISECOND, 2000, 1, 3_600_000)?;
        let retry_max = r.duration("JOB_RETRY_MAX_MS", MILLISECOND, 300_000, 1, 86_400_000)?;
        if retry_max < retry_base {
            return Err(ConfigError::new(
                "JOB_RETRY_MAX_MS",
                "must not be less than JOB_RETRY_BASE_MS",
            ));
        }
        let worker_metrics_addr = r.address("WORKER_METRICS_ADDR", "0.0.0.0:9091")?;
        let scheduler_health_addr = r.address("SCHEDULER_HEALTH_ADDR", "0.0.0.0:9092")?;
        // Handlers are async tasks: a slot costs a task, not a thread or a process. 16 keeps a
        // worker busy on short jobs, where 4 left it waiting on its own database round trips
        // (BENCHMARKS.md, "Against Celery").
        let worker_concurrency = r.ranged("WORKER_CONCURRENCY", 16, 1, 1000)? as usize;
        let mut queue_concurrency = Vec::new();
        for (queue, var) in [
            (Queue::Email, "WORKER_CONCURRENCY_EMAIL"),
            (Queue::Default, "WORKER_CONCURRENCY_DEFAULT"),
            (Queue::Maintenance, "WORKER_CONCURRENCY_MAINTENANCE"),
        ] {
            if r.raw(var).is_some() {
                queue_concurrency.push((queue, r.ranged(var, 16, 1, 1000)? as usize));
            }
        }
        let limits = Limits {
            queues: parse_queue_limits(&r.string("JOB_QUEUE_LIMITS", ""))
                .map_err(|e| ConfigError::new("JOB_QUEUE_LIMITS", e))?,
            key_concurrency: r.ranged("JOB_KEY_CONCURRENCY", 1, 1, 10_000)? as u32,
        };
        let worker_queues = Queue::parse_list(&r.string("WORKER_QUEUES", "all"))
            .map_err(|e| ConfigError::new("WORKER_QUEUES", e))?;
        Ok(Self {
            max_attempts: r.ranged("JOB_MAX_ATTEMPTS", 5, 1, 100)? as i32,
            retry_base,
            retry_max,
            timeout: r.duration("JOB_TIMEOUT_SECONDS", SECOND, 600, 1, 86_400)?,
            cancel_poll: Duration::from_millis(500),
            worker_concurrency,
            queue_concurrency,
            worker_queues,
            worker_shutdown_timeout: r.duration("WORKER_SHUTDOWN_TIMEOUT", SECOND, 30, 0, 3600)?,
            worker_metrics_addr,
            scheduler_health_addr,
            kinds: kinds.to_vec(),
            schedules: schedules(r, kinds)?,
            retention_success: r.span("JOB_RETENTION_SUCCESS", "7d", 3650 * DAY)?,
            retention_failed: r.span("JOB_RETENTION_FAILED", "30d", 3650 * DAY)?,
            limits,
        })
    }

    /// The declared kind of job called `name`.
    pub fn kind(&self, name: &str) -> Option<&JobKind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// The queue a job of this name goes to: its kind's, or `default` for a name no kind has.
    pub fn queue_of(&self, name: &str) -> Queue {
        self.kind(name).map_or(Queue::Default, |k| k.queue)
    }

    /// The priority a job of this name gets unless its submission asks for another.
    pub fn priority_of(&self, name: &str) -> u8 {
        self.kind(name).map_or(DEFAULT_PRIORITY, |k| k.priority)
    }

    /// How often a job of this name runs before it fails for good.
    pub fn max_attempts_of(&self, name: &str) -> i32 {
        self.kind(name)
            .and_then(|k| k.max_attempts)
            .map_or(self.max_attempts, i32::from)
            .max(1)
    }

    /// How long one run of a job of this name may take.
    pub fn timeout_of(&self, name: &str) -> Duration {
        self.kind(name)
            .and_then(|k| k.timeout)
            .unwrap_or(self.timeout)
    }

    /// The periodic kinds, in the order of `kinds`, whether switched on or not.
    pub fn periodic_kinds(&self) -> impl Iterator<Item = &JobKind> {
        self.kinds.iter().filter(|k| k.schedule.is_some())
    }

    /// How many jobs of `queue` one worker runs at once.
    pub fn concurrency(&self, queue: Queue) -> usize {
        self.queue_concurrency
            .iter()
            .find(|(q, _)| *q == queue)
            .map_or(self.worker_concurrency, |(_, n)| *n)
    }

    /// Each of `queues` with its concurrency.
    pub fn serving(&self, queues: &[Queue]) -> Vec<(Queue, usize)> {
        queues.iter().map(|q| (*q, self.concurrency(*q))).collect()
    }

    /// Exponential backoff with jitter: base × 2^(attempt−1), capped, then scaled by 0.75–1.25 so
    /// that jobs failing together do not retry together.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 30) as u32 - 1;
        let raw = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.retry_max);
        raw.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }
}

/// An optional listening address such as `example`.
#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn periodic(name: &'static str, setting: &'static str, default: &'static str) -> JobKind {
        JobKind {
            name,
            queue: Queue::Maintenance,
            priority: DEFAULT_PRIORITY,
            max_attempts: None,
            timeout: None,
            schedule: Some(crate::queues::ScheduleSetting {
                setting,
                default,
                payload: |slot| serde_json::json!({"scheduled_for": slot}),
            }),
        }
    }

    /// Kinds shaped as the application's: a mail job with limits of its own, four periodic ones.
    fn kinds() -> Vec<JobKind> {
        vec![
            JobKind {
                name: "send_email",
                queue: Queue::Email,
                priority: 7,
                max_attempts: Some(8),
                timeout: Some(Duration::from_secs(60)),
                schedule: None,
            },
            periodic(
                "purge_deleted_accounts",
                "SCHEDULE_PURGE_DELETED_ACCOUNTS",
                "0 0 * * * *",
            ),
            periodic(
                "send_deletion_reminders",
                "SCHEDULE_DELETION_REMINDERS",
                "0 30 * * * *",
            ),
            periodic(
                "cleanup_expired_tokens",
                "SCHEDULE_CLEANUP_EXPIRED_TOKENS",
                "0 30 3 * * *",
            ),
            periodic("prune_jobs", "SCHEDULE_PRUNE_JOBS", "0 15 * * * *"),
        ]
    }

    fn read(pairs: &[(&str, &str)]) -> Result<JobSettings, ConfigError> {
        JobSettings::read(&Reader::from_pairs(pairs), &kinds())
    }

    #[test]
    fn every_periodic_job_is_scheduled_by_default() {
        let s = read(&[]).unwrap();
        let jobs: Vec<_> = s.schedules.iter().map(|p| p.job).collect();
        assert_eq!(
            jobs,
            [
                "purge_deleted_accounts",
                "send_deletion_reminders",
                "cleanup_expired_tokens",
                "prune_jobs"
            ]
        );
        assert_eq!(s.max_attempts, 5);
        let slot = "2026-11-29T11:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            (s.schedules[0].payload)(slot),
            serde_json::json!({"scheduled_for": "2026-11-29T11:00:00Z"})
        );
    }

    #[test]
    fn each_kind_has_its_queue_and_limits_and_unknown_ones_the_defaults() {
        let s = read(&[("JOB_MAX_ATTEMPTS", "3"), ("JOB_TIMEOUT_SECONDS", "90")]).unwrap();
        assert_eq!(s.queue_of("send_email"), Queue::Email);
        assert_eq!(s.queue_of("prune_jobs"), Queue::Maintenance);
        assert_eq!(s.queue_of("something_new"), Queue::Default);
        assert_eq!(s.priority_of("send_email"), 7);
        assert_eq!(s.priority_of("something_new"), DEFAULT_PRIORITY);
        assert_eq!(s.max_attempts_of("send_email"), 8);
        assert_eq!(s.max_attempts_of("prune_jobs"), 3);
        assert_eq!(s.timeout_of("send_email"), Duration::from_secs(60));
        assert_eq!(s.timeout_of("something_new"), Duration::from_secs(90));
        assert_eq!(s.periodic_kinds().count(), 4);
    }

    #[test]
    fn schedules_can_be_switched_off_or_changed() {
        let s = read(&[
            ("SCHEDULE_DELETION_REMINDERS", "off"),
            ("SCHEDULE_CLEANUP_EXPIRED_TOKENS", "*/5 * * * * *"),
        ])
        .unwrap();
        let jobs: Vec<_> = s.schedules.iter().map(|p| p.job).collect();
        assert_eq!(
            jobs,
            [
                "purge_deleted_accounts",
                "cleanup_expired_tokens",
                "prune_jobs"
            ]
        );
        assert_eq!(s.schedules[1].schedule.source(), "*/5 * * * * *");
        assert_eq!(
            read(&[("SCHEDULE_PURGE_DELETED_ACCOUNTS", "hourly")])
                .unwrap_err()
                .var,
            "SCHEDULE_PURGE_DELETED_ACCOUNTS"
        );
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().unwrap()
    }

    fn next_three(p: &Periodic, after: &str) -> Vec<String> {
        p.upcoming(at(after))
            .take(3)
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn five_field_lines_and_a_time_zone() {
        let s = read(&[
            ("SCHEDULE_PRUNE_JOBS", "0 3 * * *"),
            ("SCHEDULER_TIMEZONE", "Europe/Berlin"),
        ])
        .unwrap();
        let prune = s.schedules.iter().find(|p| p.job == "prune_jobs").unwrap();
        assert_eq!(prune.expression, "0 3 * * *");
        // 03:00 in Berlin: 02:00 UTC in winter, 01:00 UTC once summer time starts.
        assert_eq!(
            next_three(prune, "2026-03-27T12:00:00Z"),
            [
                "2026-03-28T02:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T01:00:00+00:00"
            ]
        );
        assert_eq!(
            read(&[("SCHEDULER_TIMEZONE", "Mars/Olympus")])
                .unwrap_err()
                .var,
            "SCHEDULER_TIMEZONE"
        );
        assert_eq!(
            read(&[("SCHEDULE_PRUNE_JOBS", "0 3 * *")]).unwrap_err().var,
            "SCHEDULE_PRUNE_JOBS"
        );
    }

    #[test]
    fn daylight_saving_neither_skips_nor_repeats_a_firing() {
        let s = read(&[
            ("SCHEDULE_PRUNE_JOBS", "30 2 * * *"),
            ("SCHEDULER_TIMEZONE", "Europe/Berlin"),
        ])
        .unwrap();
        let prune = s.schedules.iter().find(|p| p.job == "prune_jobs").unwrap();
        // 2026-03-29 has no 02:30 in Berlin (02:00 jumps to 03:00): it fires as the gap ends.
        assert_eq!(
            next_three(prune, "2026-03-28T12:00:00Z"),
            [
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00",
                "2026-03-31T00:30:00+00:00"
            ]
        );
        // 2026-10-25 shows 02:30 twice (03:00 falls back to 02:00): it fires once, the first.
        assert_eq!(
            next_three(prune, "2026-10-24T12:00:00Z"),
            [
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00",
                "2026-10-27T01:30:00+00:00"
            ]
        );
        // Asked between the two 02:30s, the second is not a firing either.
        assert_eq!(
            prune.next_after(at("2026-10-25T00:45:00Z")).unwrap(),
            at("2026-10-26T01:30:00Z")
        );
    }

    #[test]
    fn workers_serve_every_queue_with_its_concurrency() {
        let s = read(&[]).unwrap();
        assert_eq!(s.worker_queues, Queue::ALL.to_vec());
        assert_eq!(s.concurrency(Queue::Email), 16);
        let s = read(&[
            ("WORKER_QUEUES", "default,email"),
            ("WORKER_CONCURRENCY", "8"),
            ("WORKER_CONCURRENCY_EMAIL", "2"),
        ])
        .unwrap();
        assert_eq!(s.worker_queues, vec![Queue::Email, Queue::Default]);
        assert_eq!(
            s.serving(&s.worker_queues),
            vec![(Queue::Email, 2), (Queue::Default, 8)]
        );
        assert_eq!(
            read(&[("WORKER_QUEUES", "mail")]).unwrap_err().var,
            "WORKER_QUEUES"
        );
        assert_eq!(
            read(&[("WORKER_CONCURRENCY_DEFAULT", "0")])
                .unwrap_err()
                .var,
            "WORKER_CONCURRENCY_DEFAULT"
        );
    }

    #[test]
    fn finished_jobs_are_kept_a_week_or_a_month() {
        let s = read(&[]).unwrap();
        assert_eq!(s.retention_success, 7 * DAY);
        assert_eq!(s.retention_failed, 30 * DAY);
        let s = read(&[("JOB_RETENTION_SUCCESS", "12h")]).unwrap();
        assert_eq!(s.retention_success, Duration::from_secs(12 * 3600));
        assert_eq!(
            read(&[("JOB_RETENTION_FAILED", "30")]).unwrap_err().var,
            "JOB_RETENTION_FAILED"
        );
    }

    #[test]
    fn backoff_bounds_are_consistent() {
        assert_eq!(
            read(&[("JOB_RETRY_BASE_MS", "5000"), ("JOB_RETRY_MAX_MS", "1000")])
                .unwrap_err()
                .var,
            "JOB_RETRY_MAX_MS"
        );
        assert_eq!(
            read(&[("WORKER_METRICS_ADDR", "nine")]).unwrap_err().var,
            "WORKER_METRICS_ADDR"
        );
    }
}
