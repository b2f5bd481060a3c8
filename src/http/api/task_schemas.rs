//! The schemas of `/system/background-tasks`: a task's state and queue as clients see them,
//! what submissions take, and what the task endpoints answer.

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use uuid::Uuid;

use super::models::PageMetadata;
use crate::jobs::{JobStatus, JobView, Queue};

/// A task's state, as Celery names them.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "UPPERCASE")]
pub enum TaskState {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl From<JobStatus> for TaskState {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => Self::Pending,
            JobStatus::Started => Self::Started,
            JobStatus::Retry => Self::Retry,
            JobStatus::Success => Self::Success,
            JobStatus::Failure => Self::Failure,
            JobStatus::Revoked => Self::Revoked,
        }
    }
}

impl From<TaskState> for JobStatus {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => Self::Pending,
            TaskState::Started => Self::Started,
            TaskState::Retry => Self::Retry,
            TaskState::Success => Self::Success,
            TaskState::Failure => Self::Failure,
            TaskState::Revoked => Self::Revoked,
        }
    }
}

/// `waiting_for`, present only while a limit holds the task back: the limit it waits for
/// (`JOB_QUEUE_LIMITS`, `JOB_KEY_CONCURRENCY`). It has not started and uses no attempt
/// meanwhile.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum TaskWait {
    /// Its queue's rate: it starts at the time reserved for it (`run_at`).
    RateLimit,
    /// Its queue's concurrency: it starts once fewer of its queue run.
    QueueConcurrencyLimit,
    /// Its `concurrency_key`'s: it starts once fewer tasks with its key run.
    KeyConcurrencyLimit,
}

impl From<crate::jobs::Held> for TaskWait {
    fn from(h: crate::jobs::Held) -> Self {
        match h {
            crate::jobs::Held::Rate => Self::RateLimit,
            crate::jobs::Held::QueueConcurrency => Self::QueueConcurrencyLimit,
            crate::jobs::Held::KeyConcurrency => Self::KeyConcurrencyLimit,
        }
    }
}

/// The queue a task runs in: each has workers of its own, so a backlog in one never delays
/// another.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum TaskQueue {
    /// Mail.
    Email,
    /// Submitted work: data processing, long-running and test tasks.
    Default,
    /// Periodic housekeeping.
    Maintenance,
}

impl From<Queue> for TaskQueue {
    fn from(q: Queue) -> Self {
        match q {
            Queue::Email => Self::Email,
            Queue::Default => Self::Default,
            Queue::Maintenance => Self::Maintenance,
        }
    }
}

impl From<TaskQueue> for Queue {
    fn from(q: TaskQueue) -> Self {
        match q {
            TaskQueue::Email => Self::Email,
            TaskQueue::Default => Self::Default,
            TaskQueue::Maintenance => Self::Maintenance,
        }
    }
}

fn queue_of(row: &JobView) -> TaskQueue {
    Queue::parse(&row.queue).unwrap_or(Queue::Default).into()
}

#[derive(Object, Debug)]
pub struct TestTaskRequest {
    /// Echoed back in the task's result.
    #[oai(validator(max_length = 10000))]
    pub message: String,
    /// Make the first N attempts fail, to watch retries (and, past the attempt limit, the
    /// dead-letter queue) at work.
    #[oai(nullable, validator(minimum(value = "0"), maximum(value = "100")))]
    pub fail_attempts: Option<u32>,
}

#[derive(Object, Debug)]
pub struct SendEmailRequest {
    pub to: String,
    #[oai(validator(min_length = 1, max_length = 998))]
    pub subject: String,
    /// Plain text; also sent as the HTML part, escaped.
    #[oai(validator(max_length = 100000))]
    pub body: String,
}

#[derive(Object, Debug)]
pub struct TaskAccepted {
    pub task_id: Uuid,
    pub task_name: String,
    pub status: TaskState,
    pub queue: TaskQueue,
    /// 0 to 9; within its queue a higher priority starts first.
    pub priority: i32,
    /// When it may start: now, or later with `countdown` or `eta`.
    pub run_at: DateTime<Utc>,
    /// True when an unfinished task already held the `unique_key`: this is that task, and
    /// nothing new was queued.
    pub duplicate: bool,
}

impl TaskAccepted {
    /// An unfinished task that already holds the submission's unique key.
    pub(super) fn of(row: JobView) -> Self {
        Self {
            task_id: row.id,
            queue: queue_of(&row),
            task_name: row.name,
            status: row.status.into(),
            priority: row.priority,
            run_at: row.run_at,
            duplicate: true,
        }
    }
}

#[derive(Object, Debug)]
pub struct TaskInfo {
    pub task_id: Uuid,
    pub task_name: String,
    pub status: TaskState,
    pub queue: TaskQueue,
    /// 0 to 9; within its queue a higher priority starts first. Retries keep it.
    pub priority: i32,
    /// When it may start (its next attempt's time while in RETRY).
    pub run_at: DateTime<Utc>,
    /// What the handler last reported of its progress while it ran, such as
    /// `{"current": 3, "total": 10}` (written at most once a second).
    #[oai(nullable)]
    pub progress: Option<Value>,
    /// The handler's result, once it succeeded.
    #[oai(nullable)]
    pub result: Option<Value>,
    /// The last failure's message.
    #[oai(nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    /// The task's input, with secrets masked as `***`: values under keys naming a password,
    /// secret, token, key or credential, and the token of any `token=` link in a text.
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The `X-Request-Id` of the request that submitted it (or of the job that did): the
    /// server's and the worker's log lines about it carry the same id.
    #[oai(nullable)]
    pub request_id: Option<String>,
    /// The OpenTelemetry trace the task runs in (the submitting request's, with traces on).
    #[oai(nullable)]
    pub trace_id: Option<String>,
    /// At most `JOB_KEY_CONCURRENCY` tasks with this key run at once.
    #[oai(nullable)]
    pub concurrency_key: Option<String>,
    // Documented on `TaskWait` (a field's own words would wrap its `$ref` in an `allOf`,
    // which client generators refuse for an enum).
    #[oai(skip_serializing_if_is_none)]
    pub waiting_for: Option<TaskWait>,
}

impl From<JobView> for TaskInfo {
    fn from(j: JobView) -> Self {
        Self {
            task_id: j.id,
            status: j.status.into(),
            queue: queue_of(&j),
            priority: j.priority,
            run_at: j.run_at,
            progress: j.progress,
            task_name: j.name,
            result: j.result,
            error: j.error,
            attempts: j.attempts,
            payload: j.payload,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            request_id: j.request_id,
            trace_id: j.trace_id,
            concurrency_key: j.concurrency_key,
            waiting_for: j.waiting_for.map(Into::into),
        }
    }
}

/// One queue's figures.
#[derive(Object, Debug)]
pub struct QueueInfo {
    /// `email`, `default` or `maintenance`.
    pub queue: String,
    /// Due now and not started.
    pub waiting: u64,
    /// Waiting for a later time (`countdown`, `eta`, a retry's backoff).
    pub scheduled: u64,
    pub running: u64,
    /// Failed for good (kept for `JOB_RETENTION_FAILED`).
    pub failed: u64,
    /// Finished (succeeded, failed or cancelled) in the last 60 seconds.
    pub finished_last_minute: u64,
    /// How long the longest-waiting due task has been due.
    #[oai(nullable)]
    pub oldest_waiting_seconds: Option<f64>,
}

impl From<crate::jobs::stats::QueueStats> for QueueInfo {
    fn from(q: crate::jobs::stats::QueueStats) -> Self {
        Self {
            queue: q.queue,
            waiting: q.waiting,
            scheduled: q.scheduled,
            running: q.running,
            failed: q.failed,
            finished_last_minute: q.finished_last_minute,
            oldest_waiting_seconds: q.oldest_waiting_seconds,
        }
    }
}

#[derive(Object, Debug)]
pub struct TaskPage {
    pub items: Vec<TaskInfo>,
    pub metadata: PageMetadata,
}
