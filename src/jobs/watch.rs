//! What a worker watches while its jobs run: the progress their handlers report (written at
//! most once per `PROGRESS_EVERY` per job) and their cancellation (one query for all of them).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::JobStatus;
use crate::entities::job;

/// Progress reaches the database at most this often per job: handlers may report as often as
/// they like, and only the latest report of each interval is written.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A lock that a panic while holding it does not spoil.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a handler reports its progress (`JobContext::progress`).
#[derive(Clone, Default)]
pub struct Progress {
    pub(super) job: Uuid,
    /// `None` outside a runner (in unit tests): reports go nowhere.
    pub(super) reports: Option<Arc<Mutex<HashMap<Uuid, Value>>>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("job", &self.job).finish()
    }
}

impl Progress {
    /// Reports how far the job has come, such as `{"current": 3, "total": 10}`; clients see
    /// it in the task's `progress` within `PROGRESS_EVERY`. Costs no database write itself.
    pub fn report(&self, progress: Value) {
        if let Some(reports) = &self.reports {
            lock(reports).insert(self.job, progress);
        }
    }
}

/// Every `PROGRESS_EVERY`, writes the latest progress of each job that reported since the last
/// time, while this worker still runs it.
pub(super) async fn write_progress(
    db: DatabaseConnection,
    worker_id: String,
    reports: Arc<Mutex<HashMap<Uuid, Value>>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
        let due = std::mem::take(&mut *lock(&reports));
        for (id, progress) in due {
            let written = job::Entity::update_many()
                .col_expr(job::Column::Progress, Expr::value(progress))
                .filter(job::Column::Id.eq(id))
                .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
                .filter(job::Column::LockedBy.eq(worker_id.as_str()))
                .exec(&db)
                .await;
            // Progress is advisory: a lost write is replaced by the next report.
            if let Err(e) = written {
                tracing::debug!(job_id = %id, error = %e, "progress not written");
            }
        }
    }
}

/// Those of `ids` that were cancelled (REVOKED).
pub(super) async fn revoked_among(
    db: &DatabaseConnection,
    ids: Vec<Uuid>,
) -> Result<Vec<Uuid>, DbErr> {
    job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .filter(job::Column::Id.is_in(ids))
        .filter(job::Column::Status.eq(JobStatus::Revoked.as_str()))
        .into_tuple()
        .all(db)
        .await
}

/// Every `every`, one query asks which of the running jobs were cancelled, and interrupts them.
pub(super) async fn watch_cancellations(
    db: DatabaseConnection,
    running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    every: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let ids: Vec<Uuid> = lock(&running).keys().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let revoked = revoked_among(&db, ids).await;
        // A database hiccup is not a cancellation: asked again next time.
        for id in revoked.unwrap_or_default() {
            if let Some(token) = lock(&running).get(&id) {
                token.cancel();
            }
        }
    }
}
