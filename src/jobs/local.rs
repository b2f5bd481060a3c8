//! The embedded transport: an in-process worker that polls the jobs table. Same runner, same
//! table, same retry rules as with RabbitMQ; only the delivery differs.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobStatus, Runner};
use crate::entities::job;

const POLL: Duration = Duration::from_secs(1);

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
    // This process is the only in-process worker of its database, so a job left STARTED by a
    // previous run of it was interrupted by a crash or a kill: make it due again.
    if let Err(e) = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
        .filter(job::Column::LockedBy.starts_with("inprocess-"))
        .exec(runner.db())
        .await
    {
        tracing::warn!(error = %e, "could not requeue interrupted jobs");
    }
    loop {
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
        for id in due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let runner = runner.clone();
            tokio::spawn(async move {
                if let Err(e) = runner.run(id).await {
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
