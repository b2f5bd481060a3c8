//! Account deletion with a grace period: request → mailed confirmation → scheduled deletion
//! (cancellable, with reminders) → permanent deletion by the `purge_deleted_accounts` job.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{
    AccountError, Accounts, ClientInfo, Result,
    service::now,
    storage::{insert_one_time_token, retire_tokens, write_audit},
    tokens::Purpose,
};
use crate::{
    cache::Cache,
    config::Settings,
    db,
    entities::{audit_log, job, user},
    jobs::{Deps, Job, JobContext, JobError, JobQueue, JobResult, JobStatus, Queue, Scheduled},
    mail::{Email, templates},
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

/// Where an account's deletion stands, as the user sees it.
#[derive(Debug, Clone)]
pub struct DeletionStatus {
    pub requested: bool,
    pub confirmed: bool,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub can_cancel: bool,
    pub grace_period_days: u32,
}

fn format_day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn cancel_link(settings: &Settings, raw: &str) -> String {
    format!("{}/cancel-deletion?token={raw}", settings.auth.frontend_url)
}

/// A cancel link for a scheduled deletion; earlier ones stay valid.
async fn new_cancel_token(
    conn: &impl ConnectionTrait,
    settings: &Settings,
    user_id: Uuid,
) -> Result<String> {
    insert_one_time_token(conn, settings, user_id, Purpose::CancelDeletion).await
}

impl Accounts {
    /// A signed-in user asks to delete their account: mails a single-use confirmation link.
    pub async fn request_deletion(&self, user: &user::Model, client: &ClientInfo) -> Result<()> {
        if let Some(at) = user.deletion_scheduled_for {
            return Err(AccountError::DeletionAlreadyScheduled { at });
        }
        self.send_deletion_confirmation(user, client).await
    }

    /// The same by email address, answering the same whether or not the account exists.
    pub async fn request_deletion_by_email(&self, email: &str, client: &ClientInfo) -> Result<()> {
        let email =
            super::EmailAddress::parse(email).map_err(|p| AccountError::Validation(vec![p]))?;
        match super::find_user_by_email(self.db(), &email).await? {
            Some(user) if !user.is_deleted && user.deletion_scheduled_for.is_none() => {
                self.send_deletion_confirmation(&user, client).await
            }
            _ => Ok(()),
        }
    }

    async fn send_deletion_confirmation(
        &self,
        user: &user::Model,
        client: &ClientInfo,
    ) -> Result<()> {
        let settings = self.settings();
        let txn = db::begin_write(self.db()).await?;
        let raw = self
            .issue_one_time_token(&txn, user.id, Purpose::ConfirmDeletion)
            .await?;
        user::Entity::update_many()
            .col_expr(user::Column::DeletionRequestedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(user.id))
            .exec(&txn)
            .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::DeletionRequested,
            client,
            None,
        )
        .await?;
        self.queue_mail(
            &txn,
            templates::confirm_deletion(
                &settings.project_name,
                &user.email,
                &user.username,
                &format!(
                    "{}/confirm-deletion?token={raw}",
                    settings.auth.frontend_url
                ),
                settings.auth.deletion_token_ttl.as_secs() / 3600,
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await
    }

    /// Confirms a deletion with the mailed token: the account is deleted for good once the grace
    /// period is over, and keeps working until then.
    pub async fn confirm_deletion(&self, raw: &str, client: &ClientInfo) -> Result<user::Model> {
        let txn = db::begin_write(self.db()).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::ConfirmDeletion)
            .await?;
        let user = super::find_user(&txn, user_id).await?;
        if user.is_deleted {
            return Err(AccountError::TokenInvalid);
        }
        let at = now() + Duration::days(i64::from(self.settings().auth.deletion_grace_period_days));
        let user = self.schedule_in(&txn, user, at, client, "user").await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    /// Schedules the deletion directly (operator CLI: support acting on a user's request).
    pub async fn schedule_deletion(
        &self,
        user: user::Model,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<user::Model> {
        if user.is_deleted {
            return Err(AccountError::AccountDeleted);
        }
        let txn = db::begin_write(self.db()).await?;
        let user = self
            .schedule_in(&txn, user, at, &ClientInfo::default(), actor)
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    async fn schedule_in(
        &self,
        txn: &impl ConnectionTrait,
        user: user::Model,
        at: DateTime<Utc>,
        client: &ClientInfo,
        actor: &str,
    ) -> Result<user::Model> {
        let settings = self.settings();
        let mut active: user::ActiveModel = user.into();
        active.deletion_requested_at = Set(Some(now()));
        active.deletion_scheduled_for = Set(Some(at));
        active.deletion_reminder_days = Set(None);
        active.updated_at = Set(now());
        let user = active.update(txn).await?;
        let raw = new_cancel_token(txn, settings, user.id).await?;
        self.audit(
            txn,
            Some(user.id),
            AuditEvent::DeletionScheduled,
            client,
            Some(json!({"scheduled_for": at, "by": actor})),
        )
        .await?;
        self.queue_mail(
            txn,
            templates::deletion_scheduled(
                &settings.project_name,
                &user.email,
                &user.username,
                &format_day(at),
                &cancel_link(settings, &raw),
            ),
        )
        .await?;
        Ok(user)
    }

    /// Cancels the signed-in user's pending deletion.
    pub async fn cancel_deletion(
        &self,
        user_id: Uuid,
        client: &ClientInfo,
        actor: &str,
    ) -> Result<user::Model> {
        let txn = db::begin_write(self.db()).await?;
        let user = self.cancel_in(&txn, user_id, client, actor).await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    /// Cancels a scheduled deletion with the token from a deletion mail.
    pub async fn cancel_deletion_with_token(
        &self,
        raw: &str,
        client: &ClientInfo,
    ) -> Result<user::Model> {
        let txn = db::begin_write(self.db()).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::CancelDeletion)
            .await?;
        let user = self.cancel_in(&txn, user_id, client, "user").await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    async fn cancel_in(
        &self,
        txn: &impl ConnectionTrait,
        user_id: Uuid,
        client: &ClientInfo,
        actor: &str,
    ) -> Result<user::Model> {
        let user = super::find_user(txn, user_id).await?;
        if user.deletion_requested_at.is_none() && user.deletion_scheduled_for.is_none() {
            return Err(AccountError::DeletionNotRequested);
        }
        let was_scheduled = user.deletion_scheduled_for.is_some();
        let mut active: user::ActiveModel = user.into();
        active.deletion_requested_at = Set(None);
        active.deletion_scheduled_for = Set(None);
        active.deletion_reminder_days = Set(None);
        active.updated_at = Set(now());
        let user = active.update(txn).await?;
        retire_tokens(
            txn,
            user.id,
            &[Purpose::ConfirmDeletion, Purpose::CancelDeletion],
        )
        .await?;
        self.audit(
            txn,
            Some(user.id),
            AuditEvent::DeletionCancelled,
            client,
            Some(json!({"by": actor})),
        )
        .await?;
        if was_scheduled {
            let settings = self.settings();
            self.queue_mail(
                txn,
                templates::deletion_cancelled(&settings.project_name, &user.email, &user.username),
            )
            .await?;
        }
        Ok(user)
    }

    pub fn deletion_status(&self, user: &user::Model) -> DeletionStatus {
        let requested =
            user.deletion_requested_at.is_some() || user.deletion_scheduled_for.is_some();
        DeletionStatus {
            requested,
            confirmed: user.deletion_scheduled_for.is_some(),
            scheduled_for: user.deletion_scheduled_for,
            can_cancel: requested && !user.is_deleted,
            grace_period_days: self.settings().auth.deletion_grace_period_days,
        }
    }
}

/// Deletes an account for good: the user row and, through the foreign keys, its sessions, refresh
/// and one-time tokens and API keys; its finished jobs; and what the audit trail held about the
/// person (addresses, user agents, details), keeping the events with the bare user id.
///
/// With `due_by`, only an account still scheduled for deletion by then is deleted, so a deletion
/// cancelled a moment ago is never carried out. Returns whether the account was deleted.
pub(super) async fn erase_account(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    due_by: Option<DateTime<Utc>>,
) -> Result<bool> {
    let mut delete = user::Entity::delete_many().filter(user::Column::Id.eq(user_id));
    if let Some(at) = due_by {
        delete = delete.filter(user::Column::DeletionScheduledFor.lte(at));
    }
    if delete.exec(conn).await?.rows_affected == 0 {
        return Ok(false);
    }
    audit_log::Entity::update_many()
        .col_expr(
            audit_log::Column::IpAddress,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            audit_log::Column::UserAgent,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            audit_log::Column::Details,
            Expr::value(Option::<serde_json::Value>::None),
        )
        .filter(audit_log::Column::UserId.eq(user_id))
        .exec(conn)
        .await?;
    let finished =
        [JobStatus::Success, JobStatus::Failure, JobStatus::Revoked].map(JobStatus::as_str);
    job::Entity::delete_many()
        .filter(job::Column::OwnerId.eq(user_id))
        .filter(job::Column::Status.is_in(finished))
        .exec(conn)
        .await?;
    // A job still queued or running finishes, but no longer points at the person.
    job::Entity::update_many()
        .col_expr(job::Column::OwnerId, Expr::value(Option::<Uuid>::None))
        .filter(job::Column::OwnerId.eq(user_id))
        .exec(conn)
        .await?;
    Ok(true)
}

/// The periodic deletion jobs; built at the composition point for the worker and the server.
#[derive(Clone)]
pub struct DeletionJobs {
    db: DatabaseConnection,
    settings: Arc<Settings>,
    queue: JobQueue,
    cache: Cache,
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
    ) -> Self {
        Self {
            db,
            settings,
            queue,
            cache,
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
                self.queue
                    .enqueue(
                        &txn,
                        templates::account_deleted(
                            &self.settings.project_name,
                            &user.email,
                            &user.username,
                        )
                        .into_job(),
                    )
                    .await?;
            }
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
        let mail: Email = templates::deletion_reminder(
            &self.settings.project_name,
            &user.email,
            &user.username,
            &format_day(scheduled),
            days,
            &cancel_link(&self.settings, &raw),
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
