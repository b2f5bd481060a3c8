//! The embedded transport: an in-process worker that takes due jobs from the table, woken by
//! this process's enqueues (and, on PostgreSQL, other processes' `NOTIFY`), with a slow poll as
//! the safety net. Same runner, same table, same retry rules as with RabbitMQ; only the
//! delivery differs.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    JobStatus, Runner,
    heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_FRESH, heartbeat},
};
use crate::entities::{job, worker_heartbeat};

const POLL: Duration = Duration::from_secs(1);

/// Makes STARTED jobs of in-process workers without a fresh heartbeat due again: their process
/// crashed or was killed mid-job.
async fn requeue_orphans(db: &sea_orm::DatabaseConnection) -> Result<u64, sea_orm::DbErr> {
    let fresh_since = Utc::now() - chrono::Duration::from_std(HEARTBEAT_FRESH).unwrap_or_default();
    let alive: Vec<String> = worker_heartbeat::Entity::find()
        .select_only()
        .column(worker_heartbeat::Column::WorkerId)
        .filter(worker_heartbeat::Column::LastSeen.gte(fresh_since))
        .into_tuple()
        .all(db)
        .await?;
    let orphans = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
        .filter(job::Column::LockedBy.starts_with("inprocess-"))
        .filter(job::Column::LockedBy.is_not_in(alive))
        .filter(job::Column::StartedAt.lt(fresh_since))
        .exec(db)
        .await?;
    if orphans.rows_affected > 0 {
        tracing::warn!(
            jobs = orphans.rows_affected,
            "requeued jobs interrupted by a stopped server"
        );
    }
    Ok(orphans.rows_affected)
}

/// Runs due jobs with at most `concurrency` at once until `shutdown`, then waits for the running
/// ones up to `grace`.
pub async fn run(
    runner: Arc<Runner>,
    wake: Arc<Notify>,
    concurrency: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let started_at = Utc::now();
    let mut last_beat: Option<Instant> = None;
    loop {
        // Heartbeat, and recovery of jobs whose in-process worker died (several servers may
        // share one database, so only jobs of workers that stopped beating are taken back).
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY) {
            last_beat = Some(Instant::now());
            if let Err(e) = heartbeat(runner.db(), runner.worker_id(), started_at).await {
                tracing::warn!(error = %e, "heartbeat write failed");
            }
            if let Err(e) = requeue_orphans(runner.db()).await {
                tracing::warn!(error = %e, "could not requeue interrupted jobs");
            }
        }
        let free = permits.available_permits();
        let due: Vec<Uuid> = if free == 0 {
            Vec::new()
        } else {
            match job::Entity::find()
                .select_only()
                .column(job::Column::Id)
                .filter(
                    job::Column::Status
                        .is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]),
                )
                .filter(job::Column::RunAt.lte(Utc::now()))
                .order_by_asc(job::Column::RunAt)
                .limit(free as u64)
                .into_tuple()
                .all(runner.db())
                .await
            {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "polling for jobs failed; retrying");
                    Vec::new()
                }
            }
        };
        let found = !due.is_empty();
        // One statement claims every due job found; each then runs on its own task.
        let claimed = match runner.claim(&due, false).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "claiming jobs failed; retrying");
                Vec::new()
            }
        };
        for row in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let runner = runner.clone();
            tokio::spawn(async move {
                let id = row.id;
                if let Err(e) = runner.execute(row).await {
                    tracing::error!(job_id = %id, error = %e, "job bookkeeping failed");
                }
                drop(permit);
            });
        }
        if found && permits.available_permits() > 0 {
            // More may be due right away.
            tokio::task::yield_now().await;
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
    // Wait for running jobs: each holds a permit until it has stored its outcome.
    let all = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "in-process jobs still running at shutdown; they will be retried at next start"
        );
    }
}
