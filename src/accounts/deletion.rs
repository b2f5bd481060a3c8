//! Account deletion with a grace period: request → mailed confirmation → scheduled deletion
//! (cancellable, with reminders) → permanent deletion by the `purge_deleted_accounts` job.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

use super::User;
use super::audit::AuditEvent;
use super::{
    AccountError, Accounts, ClientInfo, DeletionError, Result,
    service::now,
    storage::{insert_one_time_token, retire_tokens},
    tokens::Purpose,
};
use crate::{
    config::Settings,
    db,
    entities::{View, audit_log, job, user},
    jobs::JobStatus,
    mail::Mail,
};

/// Where an account's deletion stands, as the user sees it.
#[derive(Debug, Clone)]
pub struct DeletionStatus {
    pub requested: bool,
    pub confirmed: bool,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub can_cancel: bool,
    pub grace_period_days: u32,
}

pub(super) fn format_day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(super) fn cancel_link(settings: &Settings, raw: &str) -> String {
    format!("{}/cancel-deletion?token={raw}", settings.auth.frontend_url)
}

/// A cancel link for a scheduled deletion; earlier ones stay valid.
pub(super) async fn new_cancel_token(
    conn: &impl ConnectionTrait,
    settings: &Settings,
    user_id: Uuid,
) -> Result<String> {
    insert_one_time_token(conn, settings, user_id, Purpose::CancelDeletion).await
}

impl Accounts {
    async fn send_deletion_confirmation(&self, user: &User, client: &ClientInfo) -> Result<()> {
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
            self.mails.compose(
                &user.email,
                Mail::ConfirmDeletion {
                    username: &user.username,
                    link: &format!(
                        "{}/confirm-deletion?token={raw}",
                        settings.auth.frontend_url
                    ),
                    hours: settings.auth.deletion_token_ttl.as_secs() / 3600,
                },
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await
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
            self.mails.compose(
                &user.email,
                Mail::DeletionScheduled {
                    username: &user.username,
                    when: &format_day(at),
                    link: &cancel_link(settings, &raw),
                },
            ),
        )
        .await?;
        Ok(user)
    }

    async fn cancel_in(
        &self,
        txn: &impl ConnectionTrait,
        user_id: Uuid,
        client: &ClientInfo,
        actor: &str,
    ) -> Result<user::Model, DeletionError> {
        let user = super::find_user(txn, user_id).await?;
        if user.deletion_requested_at.is_none() && user.deletion_scheduled_for.is_none() {
            return Err(DeletionError::NotRequested);
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
            self.queue_mail(
                txn,
                self.mails.compose(
                    &user.email,
                    Mail::DeletionCancelled {
                        username: &user.username,
                    },
                ),
            )
            .await?;
        }
        Ok(user)
    }
}

impl super::Deletion<'_> {
    /// A signed-in user asks to delete their account: mails a single-use confirmation link.
    pub async fn request_deletion(
        &self,
        user: &User,
        client: &ClientInfo,
    ) -> Result<(), DeletionError> {
        if let Some(at) = user.deletion_scheduled_for {
            return Err(DeletionError::AlreadyScheduled { at });
        }
        self.send_deletion_confirmation(user, client)
            .await
            .map_err(Into::into)
    }

    /// The same by email address, answering the same whether or not the account exists.
    pub async fn request_deletion_by_email(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), DeletionError> {
        let email =
            super::EmailAddress::parse(email).map_err(|p| AccountError::Validation(vec![p]))?;
        match super::find_user_by_email(self.db(), &email).await? {
            Some(user) if !user.is_deleted && user.deletion_scheduled_for.is_none() => self
                .send_deletion_confirmation(&user.view(), client)
                .await
                .map_err(Into::into),
            _ => Ok(()),
        }
    }

    /// Confirms a deletion with the mailed token: the account is deleted for good once the grace
    /// period is over, and keeps working until then.
    pub async fn confirm_deletion(
        &self,
        raw: &str,
        client: &ClientInfo,
    ) -> Result<User, DeletionError> {
        let txn = db::begin_write(self.db()).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::ConfirmDeletion)
            .await?;
        let user = super::find_user(&txn, user_id).await?;
        if user.is_deleted {
            return Err(AccountError::TokenInvalid.into());
        }
        let at = now() + Duration::days(i64::from(self.settings().auth.deletion_grace_period_days));
        let user = self.schedule_in(&txn, user, at, client, "user").await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Schedules the deletion directly (operator CLI: support acting on a user's request).
    pub async fn schedule_deletion(
        &self,
        user_id: Uuid,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<User, DeletionError> {
        let user = super::find_user(self.db(), user_id).await?;
        if user.is_deleted {
            return Err(AccountError::AccountDeleted.into());
        }
        let txn = db::begin_write(self.db()).await?;
        let user = self
            .schedule_in(&txn, user, at, &ClientInfo::default(), actor)
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Cancels the signed-in user's pending deletion.
    pub async fn cancel_deletion(
        &self,
        user_id: Uuid,
        client: &ClientInfo,
        actor: &str,
    ) -> Result<User, DeletionError> {
        let txn = db::begin_write(self.db()).await?;
        let user = self.cancel_in(&txn, user_id, client, actor).await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Cancels a scheduled deletion with the token from a deletion mail.
    pub async fn cancel_deletion_with_token(
        &self,
        raw: &str,
        client: &ClientInfo,
    ) -> Result<User, DeletionError> {
        let txn = db::begin_write(self.db()).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::CancelDeletion)
            .await?;
        let user = self.cancel_in(&txn, user_id, client, "user").await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    pub fn deletion_status(&self, user: &User) -> DeletionStatus {
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
