//! A job as people see it: the HTTP API and `admin jobs` get this view, never the row, so both
//! show the same fields with the same secrets masked.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{JobStatus, masked};
use crate::entities::{View, job};

/// A job without the worker's bookkeeping (its lock, publication and dedupe key), its payload's
/// secrets masked (`masked`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub id: Uuid,
    pub name: String,
    /// The queue it runs in (`email`, `default`, `maintenance`).
    pub queue: String,
    /// 0 to 9; within its queue a higher priority starts first.
    pub priority: i32,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    /// The input with its secrets masked as `***`.
    pub payload: Value,
    pub result: Option<Value>,
    /// The last failure's message.
    pub error: Option<String>,
    pub owner_id: Option<Uuid>,
    pub unique_key: Option<String>,
    /// What the handler last reported while it ran.
    pub progress: Option<Value>,
    /// When it may start (its next attempt's time while in RETRY).
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The `X-Request-Id` of the request that submitted it (or of the job that did).
    pub request_id: Option<String>,
    /// The trace it runs in, when it was queued inside a traced span.
    pub trace_id: Option<String>,
    /// At most `JOB_KEY_CONCURRENCY` jobs with this key run at once.
    pub concurrency_key: Option<String>,
    /// The limit it waits for, while one holds it back.
    pub waiting_for: Option<super::Held>,
}

impl View for job::Model {
    type Of = JobView;
    fn view(self) -> JobView {
        let j = self;
        JobView {
            id: j.id,
            name: j.name,
            queue: j.queue,
            priority: j.priority,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            payload: masked(j.payload),
            result: j.result,
            error: j.error,
            owner_id: j.owner_id,
            unique_key: j.unique_key,
            progress: j.progress,
            run_at: j.run_at,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            request_id: j.request_id,
            trace_id: j.trace_context.as_deref().and_then(trace_id_of),
            concurrency_key: j.concurrency_key,
            // Only a job that has not started waits.
            waiting_for: j
                .waiting_for
                .as_deref()
                .and_then(super::Held::parse)
                .filter(|_| matches!(j.status, JobStatus::Pending | JobStatus::Retry)),
        }
    }
}

/// The trace id of a stored trace context (`00-<trace id>-<span id>-<flags>`, W3C).
fn trace_id_of(context: &str) -> Option<String> {
    let mut parts = context.lines().next()?.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_trace_id_is_read_from_the_traceparent() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nvendor=x";
        assert_eq!(
            super::trace_id_of(parent).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(super::trace_id_of("garbage"), None);
    }
}
