//! Per-queue figures for operators: how much waits, runs and failed, how fast jobs finish, and
//! how long the oldest waiting job has waited. Each figure is read through the partial index
//! of the jobs it counts, so the cost follows the jobs that move, not every job ever kept.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use serde::Serialize;

use crate::queues::Queue;

/// One queue's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Due now and not started (PENDING or RETRY).
    pub waiting: u64,
    /// Waiting for a later time (`countdown`, `eta`, a retry's backoff).
    pub scheduled: u64,
    pub running: u64,
    /// Failed for good and kept (up to `JOB_RETENTION_FAILED`).
    pub failed: u64,
    /// Jobs that finished (succeeded, failed or cancelled) in the last 60 seconds.
    pub finished_last_minute: u64,
    /// How long the longest-waiting due job has been due; none when nothing waits.
    pub oldest_waiting_seconds: Option<f64>,
}

/// Every queue's figures, in the order of [`Queue::ALL`] (and then any queue a newer version
/// wrote).
pub async fn queue_stats(db: &DatabaseConnection) -> Result<Vec<QueueStats>, DbErr> {
    let now = Utc::now();
    let minute_ago = now - chrono::Duration::seconds(60);
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    let backend = db.get_database_backend();
    let rows = |sql: &str, values: Vec<sea_orm::Value>| {
        db.query_all_raw(crate::db::numbered_statement(backend, sql, values))
    };
    // Literal statuses, as in the partial indexes' predicates.
    for row in rows(
        "SELECT queue, \
         SUM(CASE WHEN run_at <= $1 THEN 1 ELSE 0 END), \
         SUM(CASE WHEN run_at > $1 THEN 1 ELSE 0 END), \
         MIN(CASE WHEN run_at <= $1 THEN run_at END) \
         FROM jobs WHERE status IN ('PENDING', 'RETRY') GROUP BY queue",
        vec![now.into()],
    )
    .await?
    {
        let entry = entry(&mut by_queue, row.try_get_by_index(0)?);
        entry.waiting = count(row.try_get_by_index(1)?);
        entry.scheduled = count(row.try_get_by_index(2)?);
        let oldest: Option<DateTime<Utc>> = row.try_get_by_index(3).ok().flatten();
        entry.oldest_waiting_seconds =
            oldest.map(|at| ((now - at).num_milliseconds().max(0) as f64) / 1000.0);
    }
    for (sql, values, set) in [
        (
            "SELECT queue, COUNT(*) FROM jobs WHERE status = 'STARTED' GROUP BY queue",
            vec![],
            (|s: &mut QueueStats, n| s.running = n) as fn(&mut QueueStats, u64),
        ),
        (
            "SELECT queue, COUNT(*) FROM jobs WHERE status = 'FAILURE' GROUP BY queue",
            vec![],
            |s, n| s.failed = n,
        ),
        (
            "SELECT queue, CAST(SUM(n) AS BIGINT) FROM (\
             SELECT queue, COUNT(*) AS n FROM jobs \
             WHERE status IN ('SUCCESS', 'REVOKED') AND finished_at >= $1 GROUP BY queue \
             UNION ALL \
             SELECT queue, COUNT(*) AS n FROM jobs \
             WHERE status = 'FAILURE' AND finished_at >= $1 GROUP BY queue) AS f GROUP BY queue",
            vec![minute_ago.into()],
            |s, n| s.finished_last_minute = n,
        ),
    ] {
        for row in rows(sql, values).await? {
            let n = count(row.try_get_by_index(1)?);
            set(entry(&mut by_queue, row.try_get_by_index(0)?), n);
        }
    }
    let mut stats: Vec<QueueStats> = Queue::ALL
        .into_iter()
        .map(|q| {
            by_queue.remove(q.as_str()).unwrap_or(QueueStats {
                queue: q.as_str().into(),
                ..Default::default()
            })
        })
        .collect();
    stats.extend(by_queue.into_values());
    Ok(stats)
}

fn entry(by_queue: &mut BTreeMap<String, QueueStats>, queue: String) -> &mut QueueStats {
    by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
        queue,
        ..Default::default()
    })
}

/// A `COUNT` or `SUM` as read back: PostgreSQL's are 64-bit (`SUM` of nothing is NULL).
fn count(n: Option<i64>) -> u64 {
    n.unwrap_or(0).max(0) as u64
}
