//! The account deletion jobs: the periodic purge of accounts whose grace period is over, and
//! the reminders mailed before it.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::audit::AuditEvent;
use super::deletion::{cancel_link, erase_account, format_day, new_cancel_token};
use super::{ClientInfo, Result, service::now, storage::write_audit};
use crate::{
    cache::Cache,
    config::Settings,
    db,
    entities::user,
    jobs::{Deps, Job, JobContext, JobError, JobQueue, JobResult, Queue, Scheduled},
    mail::{Email, Mail, Mails},
};

/// The periodic job that mails the reminders due, then deletes every account whose grace
/// period is over (`DeletionJobs::purge`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeDeletedAccounts {
    /// The slot of the schedule this run is for; absent for a run queued by hand.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Job for PurgeDeletedAccounts {
    const NAME: &'static str = "purge_deleted_accounts";
    const QUEUE: Queue = Queue::Maintenance;

    async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
        deps.get::<DeletionJobs>()?.purge().await
    }
}

impl Scheduled for PurgeDeletedAccounts {
    const SETTING: &'static str = "SCHEDULE_PURGE_DELETED_ACCOUNTS";
    const SCHEDULE: &'static str = "0 0 * * * *";
    fn at(slot: DateTime<Utc>) -> Self {
        Self {
            scheduled_for: Some(slot),
        }
    }
}

/// The periodic job that mails the deletion reminders that are due, between purges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendDeletionReminders {
    /// The slot of the schedule this run is for; absent for a run queued by hand.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Job for SendDeletionReminders {
    const NAME: &'static str = "send_deletion_reminders";
    const QUEUE: Queue = Queue::Maintenance;

    async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
        deps.get::<DeletionJobs>()?.reminders().await
    }
}

impl Scheduled for SendDeletionReminders {
    const SETTING: &'static str = "SCHEDULE_DELETION_REMINDERS";
    const SCHEDULE: &'static str = "0 30 * * * *";
    fn at(slot: DateTime<Utc>) -> Self {
        Self {
            scheduled_for: Some(slot),
        }
    }
}

/// The periodic deletion jobs; built at the composition point for the worker and the server.
#[derive(Clone)]
pub struct DeletionJobs {
    db: DatabaseConnection,
    settings: Arc<Settings>,
    queue: JobQueue,
    cache: Cache,
    mails: Mails,
}

fn db_failure(e: impl std::fmt::Display) -> JobError {
    JobError::retry(e.to_string())
}

impl DeletionJobs {
    pub fn new(
        db: DatabaseConnection,
        settings: Arc<Settings>,
        queue: JobQueue,
        cache: Cache,
        mails: Mails,
    ) -> Self {
        Self {
            db,
            settings,
            queue,
            cache,
            mails,
        }
    }

    /// `purge_deleted_accounts`: mails the reminders that are due, then deletes every account
    /// whose grace period is over, in batches.
    pub async fn purge(&self) -> JobResult {
        let reminders_sent = self.remind().await.map_err(db_failure)?;
        let accounts_deleted = self.purge_due().await.map_err(db_failure)?;
        Ok(json!({"accounts_deleted": accounts_deleted, "reminders_sent": reminders_sent}))
    }

    /// `send_deletion_reminders`.
    pub async fn reminders(&self) -> JobResult {
        let reminders_sent = self.remind().await.map_err(db_failure)?;
        Ok(json!({"reminders_sent": reminders_sent}))
    }

    async fn purge_due(&self) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let cutoff = now();
            let due = user::Entity::find()
                .filter(user::Column::DeletionScheduledFor.lte(cutoff))
                .order_by_asc(user::Column::DeletionScheduledFor)
                .limit(self.settings.auth.purge_batch_size)
                .all(&self.db)
                .await?;
            if due.is_empty() {
                return Ok(deleted);
            }
            let txn = db::begin_write(&self.db).await?;
            let mut in_batch = 0;
            let mut mails = Vec::with_capacity(due.len());
            for user in &due {
                if !erase_account(&txn, user.id, Some(cutoff)).await? {
                    continue;
                }
                in_batch += 1;
                audit(
                    &txn,
                    user.id,
                    AuditEvent::AccountPurged,
                    json!({"reason": "grace_period_over"}),
                )
                .await?;
                let mail = Mail::AccountDeleted {
                    username: &user.username,
                };
                mails.push(self.mails.compose(&user.email, mail).into_job());
            }
            // The batch's mails in one statement, committed with the erasures.
            self.queue.enqueue_all(&txn, mails).await?;
            txn.commit().await?;
            self.queue.wake();
            if in_batch > 0 {
                self.cache.invalidate_users().await;
            }
            deleted += in_batch;
            tracing::info!(
                accounts = in_batch,
                "purged accounts past their grace period"
            );
            if in_batch == 0 {
                // Every account found was cancelled or taken by another run meanwhile.
                return Ok(deleted);
            }
        }
    }

    /// Mails each due reminder once: `deletion_reminder_days` records the most urgent reminder
    /// sent, and the conditional update lets only one of several concurrent runs send it.
    async fn remind(&self) -> Result<u64> {
        let reminder_days = &self.settings.auth.deletion_reminder_days;
        let Some(&farthest) = reminder_days.first() else {
            return Ok(0);
        };
        let at = now();
        let mut sent = 0;
        let mut after: Option<Uuid> = None;
        loop {
            let mut query = user::Entity::find()
                .filter(user::Column::IsDeleted.eq(false))
                .filter(user::Column::DeletionScheduledFor.gt(at))
                .filter(
                    user::Column::DeletionScheduledFor
                        .lte(at + Duration::days(i64::from(farthest))),
                )
                .order_by_asc(user::Column::Id)
                .limit(self.settings.auth.purge_batch_size);
            if let Some(last) = after {
                query = query.filter(user::Column::Id.gt(last));
            }
            let batch = query.all(&self.db).await?;
            let Some(last) = batch.last() else {
                return Ok(sent);
            };
            after = Some(last.id);
            for user in batch {
                let Some(scheduled) = user.deletion_scheduled_for else {
                    continue;
                };
                let left = scheduled - at;
                // The most urgent reminder whose time has come.
                let Some(&due) = reminder_days
                    .iter()
                    .filter(|&&d| left <= Duration::days(i64::from(d)))
                    .min()
                else {
                    continue;
                };
                if user
                    .deletion_reminder_days
                    .is_some_and(|done| done <= due as i32)
                {
                    continue;
                }
                if self.send_reminder(&user, scheduled, due).await? {
                    sent += 1;
                }
            }
        }
    }

    async fn send_reminder(
        &self,
        user: &user::Model,
        scheduled: DateTime<Utc>,
        days: u32,
    ) -> Result<bool> {
        let txn = db::begin_write(&self.db).await?;
        let claimed = user::Entity::update_many()
            .col_expr(user::Column::DeletionReminderDays, Expr::value(days as i32))
            .filter(user::Column::Id.eq(user.id))
            .filter(user::Column::DeletionScheduledFor.is_not_null())
            .filter(
                sea_orm::Condition::any()
                    .add(user::Column::DeletionReminderDays.is_null())
                    .add(user::Column::DeletionReminderDays.gt(days as i32)),
            )
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(false);
        }
        let raw = new_cancel_token(&txn, &self.settings, user.id).await?;
        audit(
            &txn,
            user.id,
            AuditEvent::DeletionReminderSent,
            json!({"days": days}),
        )
        .await?;
        let mail: Email = self.mails.compose(
            &user.email,
            Mail::DeletionReminder {
                username: &user.username,
                when: &format_day(scheduled),
                days,
                link: &cancel_link(&self.settings, &raw),
            },
        );
        self.queue.enqueue(&txn, mail.into_job()).await?;
        txn.commit().await?;
        self.queue.wake();
        Ok(true)
    }
}

/// An audit event written by a job (no client to record).
async fn audit(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    event: AuditEvent,
    details: serde_json::Value,
) -> Result<()> {
    write_audit(
        conn,
        Some(user_id),
        event,
        &ClientInfo::default(),
        Some(details),
    )
    .await
}
