//! Claiming jobs: marking them STARTED by this worker, in one statement for the jobs no limit
//! applies to and, for the others, in one transaction with the limits' decision
//! (`super::limits`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use uuid::Uuid;

use super::{JobStatus, Queue, Runner, limits};
use crate::config::limits::Limits;
use crate::entities::job::{self, Model as Row};

/// What a claim took, and what it left for later.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// Marked STARTED by this worker: to run now.
    pub rows: Vec<Row>,
    /// Held for their queue's rate until their start slot: whoever delivered them keeps them
    /// until then and offers them again (`limits::Admission::slots`).
    pub slots: Vec<(Uuid, DateTime<Utc>)>,
}

impl Runner {
    /// Marks as STARTED by this worker those of `ids` that are PENDING or RETRY and returns
    /// their rows; with `takeover`, first those STARTED by a worker whose message was
    /// redelivered (it died), which continue its run within the limits it had. Jobs not
    /// returned are another worker's, finished, cancelled, or held back by a limit (`limits`:
    /// a rate's slot in `slots`, a concurrency limit's back in the table until their turn). Jobs
    /// no limit applies to are claimed in one statement.
    pub(crate) async fn claim(&self, ids: &[Uuid], takeover: bool) -> Result<Claimed, DbErr> {
        let mut claimed = Claimed::default();
        if ids.is_empty() {
            return Ok(claimed);
        }
        if takeover {
            claimed.rows = claim_rows(&self.db, ids, true, &self.worker_id, None).await?;
        }
        let limits = &self.settings.limits;
        let rest = not_among(ids, &claimed.rows);
        claimed
            .rows
            .extend(claim_rows(&self.db, &rest, false, &self.worker_id, Some(limits)).await?);
        let rest = not_among(ids, &claimed.rows);
        if !rest.is_empty() {
            let limited = self.claim_limited(&rest).await?;
            claimed.rows.extend(limited.rows);
            claimed.slots = limited.slots;
        }
        Ok(claimed)
    }

    /// Claims what the limits let start of the claimable jobs among `ids`, and holds the rest
    /// back, in one transaction.
    async fn claim_limited(&self, ids: &[Uuid]) -> Result<Claimed, DbErr> {
        let _one_at_a_time = limits::sqlite_lock(self.db.get_database_backend()).await;
        let tx = self.db.begin().await?;
        let rows: Vec<ClaimableRow> = job::Entity::find()
            .select_only()
            .columns([
                job::Column::Id,
                job::Column::Queue,
                job::Column::ConcurrencyKey,
                job::Column::WaitingFor,
                job::Column::RunAt,
            ])
            .filter(job::Column::Id.is_in(ids.iter().copied()))
            .filter(
                job::Column::Status.is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]),
            )
            .order_by_desc(job::Column::Priority)
            .order_by_asc(job::Column::RunAt)
            .into_tuple()
            .all(&tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Claimed::default());
        }
        let candidates = rows
            .into_iter()
            .map(|(id, queue, key, waiting_for, run_at)| limits::Candidate {
                id,
                queue: Queue::parse(&queue).unwrap_or(Queue::Default),
                key,
                held: waiting_for.as_deref().and_then(limits::Held::parse),
                run_at,
            })
            .collect();
        let admission = limits::admit(&tx, &self.settings.limits, candidates).await?;
        let rows = claim_rows(&tx, &admission.admitted, false, &self.worker_id, None).await?;
        tx.commit().await?;
        // The relay publishes the jobs held for a concurrency limit again at their time: it
        // looks at the table now to learn the earliest.
        if admission.unpublished > 0
            && let Some(wake) = &self.wake
        {
            wake.notify_one();
        }
        Ok(Claimed {
            rows,
            slots: admission.slots,
        })
    }
}

/// Those of `ids` without a row in `rows`.
fn not_among(ids: &[Uuid], rows: &[Row]) -> Vec<Uuid> {
    ids.iter()
        .filter(|id| !rows.iter().any(|r| r.id == **id))
        .copied()
        .collect()
}

/// A claimable job as the limits see it: id, queue, concurrency key, why it waited, `run_at`.
type ClaimableRow = (Uuid, String, Option<String>, Option<String>, DateTime<Utc>);

/// Marks as STARTED by `worker` those of `ids` that are PENDING or RETRY (with `takeover`, those
/// STARTED instead), in one statement, and returns their rows; with `unlimited`, only those no limit
/// applies to (no concurrency key, a queue without limits).
async fn claim_rows(
    db: &impl ConnectionTrait,
    ids: &[Uuid],
    takeover: bool,
    worker: &str,
    unlimited: Option<&Limits>,
) -> Result<Vec<Row>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    // A takeover continues a dead worker's run; waiting jobs go through the limits.
    let claimable = if takeover {
        Condition::all().add(job::Column::Status.eq(JobStatus::Started.as_str()))
    } else {
        Condition::all().add(
            job::Column::Status.is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]),
        )
    };
    let mut update = job::Entity::update_many()
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
        .col_expr(job::Column::LockedBy, Expr::value(worker.to_string()))
        .col_expr(job::Column::Progress, Expr::value(Option::<Value>::None))
        .col_expr(job::Column::WaitingFor, Expr::value(Option::<String>::None))
        .filter(job::Column::Id.is_in(ids.iter().copied()))
        .filter(claimable);
    if let Some(limits) = unlimited {
        update = update.filter(job::Column::ConcurrencyKey.is_null());
        let limited: Vec<&str> = limits.queues.iter().map(|(q, _)| q.as_str()).collect();
        if !limited.is_empty() {
            update = update.filter(job::Column::Queue.is_not_in(limited));
        }
    }
    update.exec_with_returning(db).await
}
