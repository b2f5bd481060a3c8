//! Worker heartbeats: each worker (and each in-process one) records that it is alive, so that
//! `/system/health` can tell whether jobs can run and orphaned jobs can be found.

use std::time::Duration;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::OnConflict,
};

use crate::entities::worker_heartbeat;

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A worker whose heartbeat is older than this is not counted as alive.
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(30);

/// Records that this worker is alive; `/system/health` reads it.
pub async fn heartbeat(
    db: &DatabaseConnection,
    worker_id: &str,
    started_at: chrono::DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let row = worker_heartbeat::ActiveModel {
        worker_id: sea_orm::Set(worker_id.to_string()),
        hostname: sea_orm::Set(super::hostname()),
        pid: sea_orm::Set(std::process::id() as i32),
        started_at: sea_orm::Set(started_at),
        last_seen: sea_orm::Set(Utc::now()),
    };
    worker_heartbeat::Entity::insert(row)
        .on_conflict(
            OnConflict::column(worker_heartbeat::Column::WorkerId)
                .update_column(worker_heartbeat::Column::LastSeen)
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The time of the freshest worker heartbeat, if any.
pub async fn last_heartbeat(
    db: &DatabaseConnection,
) -> Result<Option<chrono::DateTime<Utc>>, sea_orm::DbErr> {
    Ok(worker_heartbeat::Entity::find()
        .order_by_desc(worker_heartbeat::Column::LastSeen)
        .one(db)
        .await?
        .map(|h| h.last_seen))
}

/// The workers whose heartbeat is fresh.
pub async fn alive_workers(db: &DatabaseConnection) -> Result<Vec<String>, sea_orm::DbErr> {
    let fresh_since = Utc::now() - chrono::Duration::from_std(HEARTBEAT_FRESH).unwrap_or_default();
    worker_heartbeat::Entity::find()
        .select_only()
        .column(worker_heartbeat::Column::WorkerId)
        .filter(worker_heartbeat::Column::LastSeen.gte(fresh_since))
        .into_tuple()
        .all(db)
        .await
}
