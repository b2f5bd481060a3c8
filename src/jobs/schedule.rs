//! Periodic jobs: cron expressions from the settings, each firing enqueued once per slot.
//!
//! Every firing carries the dedupe key `schedule:<job>:<slot time>`, and the jobs table keeps
//! dedupe keys unique, so any number of scheduler replicas, or a restart inside a slot, enqueue
//! each slot's run exactly once.

use chrono::{DateTime, SubsecRound, Timelike, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    entities::job,
    jobs::{JobQueue, JobSettings, NewJob},
};

pub use crate::config::{Periodic, parse_cron as parse};

pub fn dedupe_key(job: &str, slot: DateTime<Utc>) -> String {
    format!("schedule:{job}:{}", slot.to_rfc3339())
}

/// Enqueues the run of `job` for `slot`, with the payload its kind declares for the slot;
/// returns its id (the existing one if already enqueued).
pub async fn fire(
    db: &DatabaseConnection,
    queue: &JobQueue,
    job: &str,
    slot: DateTime<Utc>,
) -> Result<Uuid, DbErr> {
    let payload = queue
        .settings()
        .kind(job)
        .and_then(|k| k.schedule)
        .map_or(serde_json::Value::Null, |s| (s.payload)(slot));
    enqueue_slot(db, queue, job, payload, slot).await
}

/// The run of `job` for `slot`, carrying `payload`: once per slot (its dedupe key).
async fn enqueue_slot(
    db: &DatabaseConnection,
    queue: &JobQueue,
    job: &str,
    payload: serde_json::Value,
    slot: DateTime<Utc>,
) -> Result<Uuid, DbErr> {
    // One span per firing: the run it enqueues starts its trace here.
    let span = tracing::info_span!("schedule.fire", job, slot = %slot.to_rfc3339());
    let new = NewJob::new(job, payload).dedupe(dedupe_key(job, slot));
    tracing::Instrument::instrument(queue.enqueue(db, new), span).await
}

/// `scheduler --once <job>`: one run now, deduplicated per minute.
pub async fn fire_once(
    db: &DatabaseConnection,
    queue: &JobQueue,
    job: &str,
) -> Result<Uuid, DbErr> {
    let slot = Utc::now()
        .trunc_subsecs(0)
        .with_second(0)
        .unwrap_or_else(Utc::now);
    fire(db, queue, job, slot).await
}

/// Fires every schedule at its slots until `shutdown`.
pub async fn run(
    db: DatabaseConnection,
    queue: JobQueue,
    periodic: Vec<Periodic>,
    shutdown: CancellationToken,
) {
    if periodic.is_empty() {
        tracing::warn!("no schedules configured; waiting for shutdown");
        shutdown.cancelled().await;
        return;
    }
    loop {
        let now = Utc::now();
        let due: Vec<(DateTime<Utc>, &Periodic)> = periodic
            .iter()
            .filter_map(|p| p.next_after(now).map(|t| (t, p)))
            .collect();
        let Some(slot) = due.iter().map(|(t, _)| *t).min() else {
            tracing::warn!("no schedule has a future firing; waiting for shutdown");
            shutdown.cancelled().await;
            return;
        };
        let wait = (slot - now).to_std().unwrap_or_default();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // Every schedule due at this slot fires (several may share it).
        for (_, p) in due.iter().filter(|(t, _)| *t == slot) {
            match enqueue_slot(&db, &queue, p.job, (p.payload)(slot), slot).await {
                Ok(id) => {
                    tracing::info!(job = %p.job, %slot, job_id = %id, "scheduled job enqueued")
                }
                Err(e) => {
                    tracing::error!(job = %p.job, %slot, error = %e, "could not enqueue a scheduled job")
                }
            }
        }
    }
}

/// The latest firing of each periodic job in `jobs`, for `admin stats`: one indexed row per
/// job (`idx_jobs_name_created_at`), never the whole history.
pub async fn last_firings(
    db: &DatabaseConnection,
    jobs: &JobSettings,
) -> Result<Vec<(String, DateTime<Utc>)>, DbErr> {
    let mut seen = Vec::new();
    for name in jobs.periodic_kinds().map(|k| k.name) {
        let latest = job::Entity::find()
            .select_only()
            .column(job::Column::CreatedAt)
            .filter(job::Column::Name.eq(name))
            .filter(job::Column::DedupeKey.starts_with("schedule:"))
            .order_by_desc(job::Column::CreatedAt)
            .limit(1)
            .into_tuple::<DateTime<Utc>>()
            .one(db)
            .await?;
        if let Some(at) = latest {
            seen.push((name.to_string(), at));
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keys_slots() {
        let s = parse("0 0 * * * *").unwrap();
        let after = "2026-11-29T10:15:00Z".parse::<DateTime<Utc>>().unwrap();
        let next = s.after(&after).next().unwrap();
        assert_eq!(next.to_rfc3339(), "2026-11-29T11:00:00+00:00");
        assert_eq!(
            dedupe_key("x", next),
            "schedule:x:2026-11-29T11:00:00+00:00"
        );
        assert!(parse("not cron").is_err());
    }
}
