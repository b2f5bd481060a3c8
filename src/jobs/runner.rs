//! Runs one job: claim it, execute its handler, store the outcome. Both transports call this, so
//! the status rules, retries and cancellation are the same whatever delivered the job.

use std::time::Instant;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use super::{JobContext, JobError, JobSettings, JobStatus, Registry};
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

pub struct Runner {
    db: DatabaseConnection,
    registry: Registry,
    settings: JobSettings,
    worker_id: String,
}

enum Ran {
    Done(Result<Value, JobError>),
    Cancelled,
}

impl Runner {
    pub fn new(
        db: DatabaseConnection,
        registry: Registry,
        settings: JobSettings,
        worker_id: String,
    ) -> Self {
        Self {
            db,
            registry,
            settings,
            worker_id,
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Claims and runs the job when it is PENDING or RETRY.
    pub async fn run(&self, job_id: Uuid) -> Result<Outcome, DbErr> {
        self.run_claiming(job_id, false).await
    }

    /// Like `run`; `takeover` also claims a job left STARTED by a worker that died (the broker
    /// redelivered its message, so that worker's channel is gone).
    pub async fn run_claiming(&self, job_id: Uuid, takeover: bool) -> Result<Outcome, DbErr> {
        let now = Utc::now();
        let mut claimable = Condition::any().add(
            job::Column::Status.is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]),
        );
        if takeover {
            claimable = claimable.add(job::Column::Status.eq(JobStatus::Started.as_str()));
        }
        let claimed = job::Entity::update_many()
            .col_expr(
                job::Column::Status,
                Expr::value(JobStatus::Started.as_str()),
            )
            .col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).add(1),
            )
            .col_expr(job::Column::StartedAt, Expr::value(now))
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .col_expr(job::Column::LockedBy, Expr::value(self.worker_id.clone()))
            .filter(job::Column::Id.eq(job_id))
            .filter(claimable)
            .exec(&self.db)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(Outcome::Skipped);
        }
        let Some(row) = job::Entity::find_by_id(job_id).one(&self.db).await? else {
            return Ok(Outcome::Skipped);
        };
        let started = Instant::now();
        let handler = self.registry.get(&row.name).cloned();
        let ran = match &handler {
            None => Ran::Done(Err(JobError::fatal(format!(
                "no handler is registered for job `{}`",
                row.name
            )))),
            Some(handler) => {
                let ctx = JobContext {
                    job_id: row.id,
                    name: row.name.clone(),
                    payload: row.payload.clone(),
                    attempt: row.attempts,
                    max_attempts: row.max_attempts,
                };
                let work = tokio::time::timeout(self.settings.timeout, (handler.run)(ctx));
                tokio::select! {
                    result = work => Ran::Done(result.unwrap_or_else(|_| {
                        Err(JobError::retry(format!("timed out after {:?}", self.settings.timeout)))
                    })),
                    () = self.wait_until_revoked(job_id) => Ran::Cancelled,
                }
            }
        };
        let scrubbed = handler.as_ref().and_then(|h| h.scrubbed(&row.payload));
        let outcome = self.record(&row, ran, scrubbed).await?;
        crate::metrics::metrics().observe_job(
            &row.name,
            outcome.as_str(),
            started.elapsed().as_secs_f64(),
        );
        tracing::info!(
            job_id = %row.id,
            job = %row.name,
            attempt = row.attempts,
            outcome = outcome.as_str(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "job finished"
        );
        Ok(outcome)
    }

    async fn wait_until_revoked(&self, job_id: Uuid) {
        loop {
            tokio::time::sleep(self.settings.cancel_poll).await;
            match job::Entity::find_by_id(job_id).one(&self.db).await {
                Ok(Some(j)) if j.status != JobStatus::Revoked.as_str() => continue,
                Ok(_) => return,
                // A database hiccup is not a cancellation.
                Err(_) => continue,
            }
        }
    }

    /// Stores the outcome, but only while this worker still holds the job: a worker that lost
    /// its claim (cancelled, or taken over after a redelivery) writes nothing.
    async fn record(
        &self,
        row: &job::Model,
        ran: Ran,
        scrubbed: Option<Value>,
    ) -> Result<Outcome, DbErr> {
        let now = Utc::now();
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None));
        let outcome = match ran {
            Ran::Cancelled => return Ok(Outcome::Revoked),
            Ran::Done(Ok(result)) => {
                update = update
                    .col_expr(
                        job::Column::Status,
                        Expr::value(JobStatus::Success.as_str()),
                    )
                    .col_expr(job::Column::Result, Expr::value(result))
                    .col_expr(job::Column::Error, Expr::value(Option::<String>::None))
                    .col_expr(job::Column::FinishedAt, Expr::value(now));
                Outcome::Succeeded
            }
            Ran::Done(Err(e)) if e.retryable && row.attempts < row.max_attempts => {
                let run_at = now + self.settings.backoff(row.attempts);
                update = update
                    .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
                    .col_expr(job::Column::Error, Expr::value(e.message))
                    .col_expr(job::Column::RunAt, Expr::value(run_at))
                    .col_expr(
                        job::Column::PublishedAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    );
                Outcome::WillRetry
            }
            Ran::Done(Err(e)) => {
                update = update
                    .col_expr(
                        job::Column::Status,
                        Expr::value(JobStatus::Failure.as_str()),
                    )
                    .col_expr(job::Column::Error, Expr::value(e.message))
                    .col_expr(job::Column::FinishedAt, Expr::value(now));
                Outcome::Failed
            }
        };
        if let (Some(payload), Outcome::Succeeded | Outcome::Failed) = (scrubbed, outcome) {
            update = update.col_expr(job::Column::Payload, Expr::value(payload));
        }
        let written = update
            .filter(job::Column::Id.eq(row.id))
            .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
            .filter(job::Column::LockedBy.eq(self.worker_id.clone()))
            .exec(&self.db)
            .await?;
        if written.rows_affected == 1 {
            return Ok(outcome);
        }
        let now_status = job::Entity::find_by_id(row.id)
            .one(&self.db)
            .await?
            .map(|j| j.status);
        Ok(match now_status.as_deref() {
            Some("REVOKED") => Outcome::Revoked,
            _ => Outcome::Skipped,
        })
    }
}
