//! The embedded transport: an in-process worker that takes due jobs from the table, woken by
//! this process's enqueues (and, on PostgreSQL, other processes' `NOTIFY`), with a slow poll as
//! the safety net. Same runner, same table, same retry rules as with RabbitMQ; only the
//! delivery differs. Each queue is polled by a loop with its own concurrency, highest priority
//! first, so a backlog in one never delays another.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    JobStatus, Queue, Runner,
    heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_FRESH, heartbeat},
};
use crate::entities::job;

const POLL: Duration = Duration::from_secs(1);

/// Makes STARTED jobs of in-process workers without a fresh heartbeat due again: their process
/// crashed or was killed mid-job. Those that were on their last attempt fail instead.
async fn requeue_orphans(runner: &Runner) -> Result<u64, sea_orm::DbErr> {
    let db = runner.db();
    let fresh_since = Utc::now() - chrono::Duration::from_std(HEARTBEAT_FRESH).unwrap_or_default();
    let alive = super::heartbeat::alive_workers(db).await?;
    let orphaned = || {
        Condition::all()
            .add(job::Column::LockedBy.starts_with("inprocess-"))
            .add(job::Column::LockedBy.is_not_in(alive.clone()))
            .add(job::Column::StartedAt.lt(fresh_since))
    };
    let failed = runner.fail_abandoned(orphaned()).await?;
    if !failed.is_empty() {
        tracing::error!(
            jobs = failed.len(),
            "jobs interrupted on their last attempt by a stopped server failed"
        );
    }
    let orphans = job::Entity::update_many()
        .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
        .filter(orphaned())
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

/// Runs due jobs of each of `queues`, with at most its concurrency at once, until `shutdown`,
/// then waits for the running ones up to `grace`.
pub async fn run(
    runner: Arc<Runner>,
    wake: Arc<Notify>,
    queues: Vec<(Queue, usize)>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    // One wake-up for the process fans out to every queue's loop.
    let wakes: Vec<Arc<Notify>> = queues.iter().map(|_| Arc::new(Notify::new())).collect();
    let pollers: Vec<_> = queues
        .into_iter()
        .zip(wakes.clone())
        .map(|((queue, concurrency), wake)| {
            tokio::spawn(poll_queue(
                runner.clone(),
                queue,
                wake,
                concurrency,
                shutdown.clone(),
                grace,
            ))
        })
        .collect();
    let started_at = Utc::now();
    loop {
        // Heartbeat, and recovery of jobs whose in-process worker died (several servers may
        // share one database, so only jobs of workers that stopped beating are taken back).
        if let Err(e) = heartbeat(runner.db(), runner.worker_id(), started_at).await {
            tracing::warn!(error = %e, "heartbeat write failed");
        }
        match requeue_orphans(&runner).await {
            Ok(0) => {}
            Ok(_) => wakes.iter().for_each(|w| w.notify_one()),
            Err(e) => tracing::warn!(error = %e, "could not requeue interrupted jobs"),
        }
        let next_beat = tokio::time::Instant::now() + HEARTBEAT_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => wakes.iter().for_each(|w| w.notify_one()),
                () = tokio::time::sleep_until(next_beat) => break,
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    for poller in pollers {
        let _ = poller.await;
    }
}

/// One queue's loop: claims its due jobs, highest priority first, as permits free up.
async fn poll_queue(
    runner: Arc<Runner>,
    queue: Queue,
    wake: Arc<Notify>,
    concurrency: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    loop {
        if permits.available_permits() == 0 {
            // Every slot is busy: look again as soon as one frees, not at the next poll.
            tokio::select! {
                () = shutdown.cancelled() => break,
                freed = permits.acquire() => drop(freed),
            }
        }
        let free = permits.available_permits();
        let due: Vec<Uuid> = if free == 0 {
            Vec::new()
        } else {
            // The order of the partial index `idx_jobs_queue_waiting`, and its predicate
            // spelled with the same literals: with bound statuses SQLite cannot tell that the
            // index covers the query, and would sort the whole backlog at every look.
            match job::Entity::find()
                .select_only()
                .column(job::Column::Id)
                .filter(job::Column::Queue.eq(queue.as_str()))
                .filter(Expr::cust("status IN ('PENDING', 'RETRY')"))
                .filter(job::Column::RunAt.lte(Utc::now()))
                .order_by_desc(job::Column::Priority)
                .order_by_asc(job::Column::RunAt)
                .limit(free as u64)
                .into_tuple()
                .all(runner.db())
                .await
            {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, %queue, "polling for jobs failed; retrying");
                    Vec::new()
                }
            }
        };
        let found = !due.is_empty();
        // One statement claims every due job found; each then runs on its own task.
        // Jobs held for a rate's slot are found again here when it comes (`run_at`).
        let claimed = match runner.claim(&due, false).await {
            Ok(claimed) => claimed.rows,
            Err(e) => {
                tracing::warn!(error = %e, %queue, "claiming jobs failed; retrying");
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
            %queue,
            "in-process jobs still running at shutdown; they will be retried at next start"
        );
    }
}
