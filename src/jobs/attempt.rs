//! One attempt of a job as the outside sees it: its outcome, the span it runs in (continuing
//! the trace of whatever queued the job) and that span marked failed when it failed.

use sea_orm::DbErr;

use crate::entities::job;

/// What happened to a job a transport handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed, and scheduled to run again.
    WillRetry,
    /// Failed for good: attempts exhausted or a fatal error.
    Failed,
    Revoked,
    /// Not run: already finished, cancelled, or being run by another worker.
    Skipped,
}

impl Outcome {
    /// The name in metrics and logs; spelled out, since `Debug` output is no stable format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::WillRetry => "will_retry",
            Self::Failed => "failed",
            Self::Revoked => "revoked",
            Self::Skipped => "skipped",
        }
    }
}

/// The span one attempt of the job in `row` runs in, whose fields every log line inside it
/// carries (the job, its kind, queue and attempt, the request it comes from), and that request,
/// to make the current one while it runs: the jobs it submits inherit it.
pub(super) fn attempt_span(row: &job::Model) -> (tracing::Span, String) {
    let request = row.request_id.clone().unwrap_or_default();
    let span = tracing::info_span!(
        "job",
        job_id = %row.id,
        job = %row.name,
        queue = %row.queue,
        attempt = row.attempts,
        request_id = %request,
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
    );
    if let Some(context) = &row.trace_context {
        crate::telemetry::otel::continue_stored(&span, context);
    }
    (span, request)
}

/// Marks the attempt's span failed when the job failed (for now or for good) or could not be
/// stored.
pub(super) fn record_outcome(span: &tracing::Span, outcome: &Result<super::Outcome, DbErr>) {
    if !matches!(
        outcome,
        Ok(Outcome::Succeeded | Outcome::Revoked | Outcome::Skipped)
    ) {
        span.record("otel.status_code", "ERROR");
    }
}
