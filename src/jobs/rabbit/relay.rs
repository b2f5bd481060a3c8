//! The outbox relay: publishes the jobs table's due rows (and the jobs handed over by this
//! process's submissions) to the broker with publisher confirms.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    sea_query::Expr,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    entities::job,
    jobs::{Publication, Queue},
};

use super::{Publisher, RELAY_BATCH, RELAY_POLL, backoff};

/// Publishes due outbox rows until `shutdown`: new jobs, retries whose time has come, and rows
/// whose earlier publication was never confirmed. Rows are claimed (marked published) in
/// batches by one statement, so several relays never publish one row at once, and are unmarked
/// when their publication fails.
///
/// It sleeps until woken: by this process's enqueues (`wake`), by other processes' through
/// PostgreSQL `NOTIFY` (`listen`), or when the next scheduled retry falls due; a slow poll is
/// only the safety net. Jobs this process submitted on their own arrive through `handoff`
/// already marked, and are published as they come, in batches, without a query.
pub async fn relay(
    db: DatabaseConnection,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
    mut handoff: Option<mpsc::UnboundedReceiver<Publication>>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut last_sweep = Instant::now();
    // When the table is next looked at: at once, then as each look decides.
    let mut look_at = tokio::time::Instant::now();
    let mut handed = Vec::with_capacity(RELAY_BATCH as usize);
    loop {
        let look = tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => true,
            () = tokio::time::sleep_until(look_at) => true,
            n = async {
                match handoff.as_mut() {
                    Some(rx) => rx.recv_many(&mut handed, RELAY_BATCH as usize).await,
                    None => std::future::pending().await,
                }
            } => {
                if n == 0 {
                    handoff = None;
                }
                false
            }
        };
        if !look {
            if let Err(e) = publish_handed(&db, &publisher, &handed, failures == 0).await {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, "outbox relay cannot publish; jobs stay queued in the database");
                }
                look_at = tokio::time::Instant::now() + backoff(failures);
            }
            handed.clear();
            continue;
        }
        // Rows published long ago and never started (a relay that died between marking and
        // publishing, a message lost with a broker) are looked for on the slow poll only.
        let sweep = last_sweep.elapsed() >= RELAY_POLL;
        if sweep {
            last_sweep = Instant::now();
        }
        let published = match relay_once(&db, &publisher, sweep).await {
            Ok(n) => {
                if failures > 0 {
                    tracing::info!("RabbitMQ reachable again; outbox relay resumed");
                }
                failures = 0;
                n
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(error = %e, "outbox relay cannot publish; jobs stay queued in the database");
                }
                0
            }
        };
        let pause = if published as u64 >= RELAY_BATCH {
            Duration::ZERO
        } else if failures == 0 {
            next_due_in(&db).await.unwrap_or(RELAY_POLL).min(RELAY_POLL)
        } else {
            backoff(failures)
        };
        look_at = tokio::time::Instant::now() + pause;
    }
}

/// Publishes jobs handed over by `JobQueue::submit`. While the broker is failing they are not
/// tried one by one: they are unmarked, and the relay's next look publishes them.
async fn publish_handed(
    db: &DatabaseConnection,
    publisher: &Publisher,
    jobs: &[Publication],
    broker_healthy: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !broker_healthy {
        unmark(db, jobs).await?;
        return Ok(());
    }
    match publisher.publish_all(jobs).await {
        Ok(()) => Ok(()),
        Err((confirmed, e)) => {
            unmark(db, &jobs[confirmed..]).await?;
            Err(Box::new(e))
        }
    }
}

/// Makes jobs whose publication was not confirmed unpublished again, for the relay to retry.
/// A copy that did reach the broker is skipped by the runner.
async fn unmark(db: &DatabaseConnection, jobs: &[Publication]) -> Result<(), sea_orm::DbErr> {
    if jobs.is_empty() {
        return Ok(());
    }
    job::Entity::update_many()
        .col_expr(
            job::Column::PublishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(job::Column::Id.is_in(jobs.iter().map(|j| j.id)))
        .exec(db)
        .await?;
    Ok(())
}

/// How long until the earliest unpublished job (a retry, usually) falls due; `None` when none
/// waits.
async fn next_due_in(db: &DatabaseConnection) -> Option<Duration> {
    // Literal statuses, as in the partial index `idx_jobs_waiting`, so the planner can use it.
    let sql = "SELECT run_at FROM jobs WHERE status IN ('PENDING', 'RETRY') \
               AND published_at IS NULL ORDER BY run_at LIMIT 1";
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .ok()
        .flatten()?;
    let at: chrono::DateTime<Utc> = row.try_get_by_index(0).ok()?;
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// Marks up to `RELAY_BATCH` due rows published, in one statement, and returns them. With
/// `stale`, the rows are those published before `republish_after` and still waiting instead of
/// those never published. PostgreSQL skips rows another relay is marking (`SKIP LOCKED`).
async fn claim_for_publishing(
    db: &DatabaseConnection,
    republish_after: Duration,
    stale: bool,
) -> Result<Vec<Publication>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let published = if stale {
        "published_at < $2"
    } else {
        "published_at IS NULL"
    };
    let lock = if backend == DbBackend::Postgres {
        "FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE jobs SET published_at = $1 WHERE {published} AND id IN (\
         SELECT id FROM jobs WHERE {published} AND status IN ('PENDING', 'RETRY') \
         AND run_at <= $1 ORDER BY run_at LIMIT {RELAY_BATCH} {lock}) \
         RETURNING id, name, queue, priority, request_id, trace_context"
    );
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    if stale {
        values.push((now - republish_after).into());
    }
    db.query_all_raw(crate::db::numbered_statement(backend, &sql, values))
        .await?
        .iter()
        .map(|row| {
            let queue: String = row.try_get_by_index(2)?;
            let priority: i32 = row.try_get_by_index(3)?;
            Ok(Publication {
                id: row.try_get_by_index::<Uuid>(0)?,
                name: row.try_get_by_index(1)?,
                // A queue this version does not know (written by a newer one) goes to default.
                queue: Queue::parse(&queue).unwrap_or(Queue::Default),
                priority: u8::try_from(priority.clamp(0, 9)).unwrap_or(5),
                request_id: row.try_get_by_index(4)?,
                trace_context: row.try_get_by_index(5)?,
            })
        })
        .collect()
}

async fn relay_once(
    db: &DatabaseConnection,
    publisher: &Publisher,
    sweep: bool,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut due = claim_for_publishing(db, publisher.config.republish_after, false).await?;
    if sweep && (due.len() as u64) < RELAY_BATCH {
        due.extend(claim_for_publishing(db, publisher.config.republish_after, true).await?);
    }
    if due.is_empty() {
        return Ok(0);
    }
    match publisher.publish_all(&due).await {
        Ok(()) => Ok(due.len()),
        Err((confirmed, e)) => {
            unmark(db, &due[confirmed..]).await?;
            Err(Box::new(e))
        }
    }
}
