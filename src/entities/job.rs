//! `jobs`: the outbox and status table, one row per job and its outcome.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    pub payload: Json,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When the job may run next (now for new jobs, later for retries).
    pub run_at: DateTimeUtc,
    pub result: Option<Json>,
    pub error: Option<String>,
    pub owner_id: Option<Uuid>,
    #[sea_orm(unique)]
    pub dedupe_key: Option<String>,
    /// The worker running it, while STARTED.
    pub locked_by: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    /// Set once the broker confirmed the message; cleared when a retry needs publishing again.
    pub published_at: Option<DateTimeUtc>,
    /// The queue it belongs to (`jobs::Queue`): `email`, `default` or `maintenance`.
    pub queue: String,
    /// 0 to 9; higher runs first within its queue.
    pub priority: i32,
    /// While the job is unfinished, no other job of its name may have this key.
    pub unique_key: Option<String>,
    /// What its handler last reported, while it runs.
    pub progress: Option<Json>,
    /// The `X-Request-Id` of the request that submitted it, or of the job that did.
    pub request_id: Option<String>,
    /// The submitting span's W3C trace context (`traceparent`, then `tracestate` after a line
    /// break), when it was traced: the job's run continues that trace.
    pub trace_context: Option<String>,
    /// At most `JOB_KEY_CONCURRENCY` jobs with this key run at once.
    pub concurrency_key: Option<String>,
    /// Why it has not started, while a limit holds it back (`jobs::Held`).
    pub waiting_for: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Where a job is in its life, stored as its upper-case name (Celery's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum JobStatus {
    #[sea_orm(string_value = "PENDING")]
    Pending,
    #[sea_orm(string_value = "STARTED")]
    Started,
    #[sea_orm(string_value = "RETRY")]
    Retry,
    #[sea_orm(string_value = "SUCCESS")]
    Success,
    #[sea_orm(string_value = "FAILURE")]
    Failure,
    #[sea_orm(string_value = "REVOKED")]
    Revoked,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        Self::Pending,
        Self::Started,
        Self::Retry,
        Self::Success,
        Self::Failure,
        Self::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Started => "STARTED",
            Self::Retry => "RETRY",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
