//! Retention: finished jobs are deleted once they are old enough, succeeded and revoked ones
//! after `JOB_RETENTION_SUCCESS`, failed ones after `JOB_RETENTION_FAILED`, by the periodic
//! `prune_jobs` job (or `admin jobs prune`). Pending, running and retrying jobs are never
//! touched. Deletes go in batches of a bounded size, each its own statement, so that no lock
//! is held for long and the relay and the workers go on between them.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use super::{Deps, Job, JobContext, JobError, JobResult, JobStatus, Queue, Scheduled};
use crate::{config::Settings, db, entities::job};

/// The periodic job that prunes finished jobs past their retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneJobs {
    /// The slot of the schedule this run is for; absent for a run queued by hand.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Job for PruneJobs {
    const NAME: &'static str = "prune_jobs";
    const QUEUE: Queue = Queue::Maintenance;

    async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
        let (db, settings) = (deps.get::<db::Connection>()?, deps.get::<Arc<Settings>>()?);
        let jobs = &settings.jobs;
        let pruned = prune(db, jobs.retention_success, jobs.retention_failed)
            .await
            .map_err(|e| JobError::retry(crate::telemetry::cause_chain(&e)))?;
        Ok(serde_json::json!(pruned))
    }
}

impl Scheduled for PruneJobs {
    const SETTING: &'static str = "SCHEDULE_PRUNE_JOBS";
    const SCHEDULE: &'static str = "0 15 * * * *";
    fn at(slot: DateTime<Utc>) -> Self {
        Self {
            scheduled_for: Some(slot),
        }
    }
}

/// Rows deleted per statement.
const BATCH: u64 = 1000;

/// How many finished jobs were pruned, by the status they had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub succeeded: u64,
    pub failed: u64,
}

impl Pruned {
    pub fn total(self) -> u64 {
        self.succeeded + self.failed
    }
}

/// Deletes succeeded and revoked jobs that finished more than `success` ago and failed ones that
/// finished more than `failed` ago.
pub async fn prune(
    conn: &db::Connection,
    success: Duration,
    failed: Duration,
) -> Result<Pruned, DbErr> {
    let now = Utc::now();
    Ok(Pruned {
        succeeded: prune_status(
            conn,
            &[JobStatus::Success, JobStatus::Revoked],
            before(now, success),
        )
        .await?,
        failed: prune_status(conn, &[JobStatus::Failure], before(now, failed)).await?,
    })
}

/// `now - age`; an age longer than the calendar reaches back to its start instead of panicking.
fn before(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn prune_status(
    conn: &db::Connection,
    statuses: &[JobStatus],
    finished_before: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut pruned = 0;
    loop {
        // The ids first, oldest first, through the partial indexes on `finished_at` (the status
        // is spelled as literals so PostgreSQL can match a generic plan to the index predicate);
        // then one delete by primary key, which SQLite and PostgreSQL both run without a limit.
        let ids: Vec<Uuid> = job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(Expr::cust(status_literals(statuses)))
            .filter(job::Column::FinishedAt.lt(finished_before))
            .order_by_asc(job::Column::FinishedAt)
            .limit(BATCH)
            .into_tuple()
            .all(conn)
            .await?;
        if ids.is_empty() {
            return Ok(pruned);
        }
        let deleted = job::Entity::delete_many()
            // A job retried between the two statements is no longer finished: it stays.
            .filter(job::Column::Id.is_in(ids.iter().copied()))
            .filter(job::Column::Status.is_in(statuses.iter().copied()))
            .exec(conn)
            .await?;
        pruned += deleted.rows_affected;
        if (ids.len() as u64) < BATCH {
            return Ok(pruned);
        }
        tokio::task::yield_now().await;
    }
}

/// `status IN ('SUCCESS', 'REVOKED')`: fixed names, never input.
fn status_literals(statuses: &[JobStatus]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("status IN ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_age_gives_a_cut_off() {
        let now = Utc::now();
        assert_eq!(before(now, Duration::ZERO), now);
        assert_eq!(
            before(now, Duration::from_secs(u64::MAX)),
            DateTime::<Utc>::MIN_UTC
        );
    }
}
