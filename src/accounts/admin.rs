//! What operators do to other people's accounts: the admin HTTP API and the `admin` CLI share
//! these, and with them the rule that an administrator cannot demote, unverify or delete
//! themselves.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Set,
};
use serde_json::json;
use uuid::Uuid;

use super::User;
use super::audit::AuditEvent;
use super::{
    AccountError, Accounts, AdminError, ClientInfo, NewAccount, Result,
    deletion::erase_account,
    service::{is_unique_violation, now},
    storage::{find_user_by_email, insert_user},
};
use crate::values::{EmailAddress, Password, Username};
use crate::{
    db,
    entities::{View, job, session, user},
    jobs::JobStatus,
};

/// Who performs an operator action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in superuser, through the admin API.
    User(Uuid),
    /// Someone with database access, through the `admin` CLI.
    Cli,
}

impl Actor {
    pub(super) fn label(self) -> serde_json::Value {
        match self {
            Actor::User(id) => json!(id),
            Actor::Cli => json!("admin-cli"),
        }
    }

    fn id(self) -> Option<Uuid> {
        match self {
            Actor::User(id) => Some(id),
            Actor::Cli => None,
        }
    }

    pub(super) fn refuse_self(self, target: Uuid, what: &str) -> Result<(), AdminError> {
        if self == Actor::User(target) {
            return Err(AdminError::CannotModifySelf(format!(
                "administrators cannot {what} their own account; ask another administrator"
            )));
        }
        Ok(())
    }
}

/// Changes an administrator makes to an account; absent fields stay as they are.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub is_superuser: Option<bool>,
    pub is_verified: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkOperation {
    Verify,
    Unverify,
    MakeSuperuser,
    RemoveSuperuser,
    SoftDelete,
    Restore,
}

#[derive(Debug, Clone)]
pub struct Statistics {
    pub total_users: u64,
    pub superusers: u64,
    pub verified_users: u64,
    pub unverified_users: u64,
    pub deleted_users: u64,
    pub pending_deletion: u64,
    pub active_sessions: u64,
    /// Every job status with its count, zeros included.
    pub jobs_by_status: Vec<(&'static str, u64)>,
}

/// Counts for `/admin/statistics` and `admin stats`; `total_users` and the counts beside it are
/// of accounts not deleted.
pub async fn statistics(db: &DatabaseConnection) -> Result<Statistics, DbErr> {
    let live = || user::Entity::find().filter(user::Column::IsDeleted.eq(false));
    let total_users = live().count(db).await?;
    let superusers = live()
        .filter(user::Column::IsSuperuser.eq(true))
        .count(db)
        .await?;
    let verified_users = live()
        .filter(user::Column::IsVerified.eq(true))
        .count(db)
        .await?;
    let deleted_users = user::Entity::find()
        .filter(user::Column::IsDeleted.eq(true))
        .count(db)
        .await?;
    let pending_deletion = user::Entity::find()
        .filter(user::Column::DeletionScheduledFor.is_not_null())
        .count(db)
        .await?;
    let active_sessions = session::Entity::find()
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now()))
        .count(db)
        .await?;
    let counted: Vec<(String, i64)> = job::Entity::find()
        .select_only()
        .column(job::Column::Status)
        .column_as(job::Column::Id.count(), "n")
        .group_by(job::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let jobs_by_status = JobStatus::ALL
        .iter()
        .map(|s| {
            let n = counted
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n as u64);
            (s.as_str(), n)
        })
        .collect();
    Ok(Statistics {
        total_users,
        superusers,
        verified_users,
        unverified_users: total_users - verified_users,
        deleted_users,
        pending_deletion,
        active_sessions,
        jobs_by_status,
    })
}

impl Accounts {
    async fn operator_audit(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        target: Uuid,
        event: AuditEvent,
        actor: Actor,
        mut details: serde_json::Value,
    ) -> Result<()> {
        details["by"] = actor.label();
        self.audit(
            conn,
            Some(target),
            event,
            &ClientInfo::default(),
            Some(details),
        )
        .await
    }
}

impl super::Admin<'_> {
    /// Creates an account with every registration rule checked; no verification mail is sent.
    pub async fn admin_create_user(
        &self,
        new: NewAccount,
        is_superuser: bool,
        is_verified: bool,
        actor: Actor,
    ) -> Result<User, AdminError> {
        let (email, username, password) = self.check_new_account(new).await?;
        let hash = self.hasher().hash(&password).await?;
        let txn = db::begin_write(self.db()).await?;
        let user = insert_user(&txn, &email, &username, hash, is_superuser, is_verified).await?;
        self.operator_audit(
            &txn,
            user.id,
            AuditEvent::UserCreatedByAdmin,
            actor,
            json!({"is_superuser": is_superuser, "is_verified": is_verified}),
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Applies an administrator's changes; a new password ends every session of the account.
    pub async fn admin_update_user(
        &self,
        id: Uuid,
        changes: UserChanges,
        actor: Actor,
    ) -> Result<User, AdminError> {
        if changes.is_superuser == Some(false) {
            actor.refuse_self(id, "remove superuser rights from")?;
        }
        if changes.is_verified == Some(false) {
            actor.refuse_self(id, "unverify")?;
        }
        let mut problems = Vec::new();
        let email = match changes.email.as_deref().map(EmailAddress::parse) {
            Some(Err(p)) => {
                problems.push(p);
                None
            }
            Some(Ok(e)) => Some(e),
            None => None,
        };
        let username = match changes.username.as_deref().map(Username::parse) {
            Some(Err(p)) => {
                problems.extend(p);
                None
            }
            Some(Ok(u)) => Some(u),
            None => None,
        };
        let password = match changes.password.map(|p| Password::parse("password", p)) {
            Some(Err(p)) => {
                problems.extend(p);
                None
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        if !problems.is_empty() {
            return Err(AccountError::Validation(problems).into());
        }
        let hash = match &password {
            Some(p) => Some(self.hasher().hash(p).await?),
            None => None,
        };
        let txn = db::begin_write(self.db()).await?;
        let user = super::find_user(&txn, id).await?;
        let mut changed = Vec::new();
        let mut active: user::ActiveModel = user.clone().into();
        if let Some(email) = email.filter(|e| e.as_str() != user.email) {
            active.email = Set(email.into_string());
            changed.push("email");
        }
        if let Some(username) = username.filter(|u| u.as_str() != user.username) {
            active.username_lower = Set(username.as_str().to_lowercase());
            active.username = Set(username.into_string());
            changed.push("username");
        }
        if let Some(v) = changes.is_superuser.filter(|v| *v != user.is_superuser) {
            active.is_superuser = Set(v);
            changed.push("is_superuser");
        }
        if let Some(v) = changes.is_verified.filter(|v| *v != user.is_verified) {
            active.is_verified = Set(v);
            changed.push("is_verified");
        }
        if let Some(hash) = hash {
            active.password_hash = Set(hash.into_string());
            changed.push("password");
        }
        if changed.is_empty() {
            return Ok(user.view());
        }
        active.updated_at = Set(now());
        let updated = active
            .update(&txn)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                Some(msg) if msg.contains("email") => AccountError::EmailTaken,
                Some(_) => AccountError::UsernameTaken,
                None => e.into(),
            })?;
        if changed.contains(&"password") {
            self.revoke_sessions(&txn, id, None, "password_set_by_admin")
                .await?;
        }
        self.operator_audit(
            &txn,
            id,
            AuditEvent::UserUpdatedByAdmin,
            actor,
            json!({"fields": changed}),
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(updated.view())
    }

    pub async fn set_superuser(
        &self,
        id: Uuid,
        value: bool,
        actor: Actor,
    ) -> Result<User, AdminError> {
        self.admin_update_user(
            id,
            UserChanges {
                is_superuser: Some(value),
                ..Default::default()
            },
            actor,
        )
        .await
    }

    pub async fn set_verified(
        &self,
        id: Uuid,
        value: bool,
        actor: Actor,
    ) -> Result<User, AdminError> {
        self.admin_update_user(
            id,
            UserChanges {
                is_verified: Some(value),
                ..Default::default()
            },
            actor,
        )
        .await
    }

    /// Soft delete: the account stops working at once (sessions revoked, logins refused) but its
    /// row stays, with who deleted it and why, and it can be restored.
    pub async fn soft_delete(
        &self,
        id: Uuid,
        reason: Option<String>,
        actor: Actor,
    ) -> Result<User, AdminError> {
        actor.refuse_self(id, "delete")?;
        let reason = reason
            .map(|r| r.trim().chars().take(500).collect::<String>())
            .filter(|r| !r.is_empty());
        let txn = db::begin_write(self.db()).await?;
        let user = super::find_user(&txn, id).await?;
        if user.is_deleted {
            return Err(AdminError::AlreadySoftDeleted);
        }
        let mut active: user::ActiveModel = user.into();
        active.is_deleted = Set(true);
        active.deleted_at = Set(Some(now()));
        active.deleted_by = Set(actor.id());
        active.deletion_reason = Set(reason.clone());
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.revoke_sessions(&txn, id, None, "account_deleted")
            .await?;
        self.operator_audit(
            &txn,
            id,
            AuditEvent::AccountSoftDeleted,
            actor,
            json!({"reason": reason}),
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Undoes a soft delete; the user signs in again (their old sessions stay ended).
    pub async fn restore(&self, id: Uuid, actor: Actor) -> Result<User, AdminError> {
        let txn = db::begin_write(self.db()).await?;
        let user = super::find_user(&txn, id).await?;
        if !user.is_deleted {
            return Err(AdminError::NotSoftDeleted);
        }
        let mut active: user::ActiveModel = user.into();
        active.is_deleted = Set(false);
        active.deleted_at = Set(None);
        active.deleted_by = Set(None);
        active.deletion_reason = Set(None);
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.operator_audit(&txn, id, AuditEvent::AccountRestored, actor, json!({}))
            .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Hard delete: the account and everything hanging off it go at once; the audit log keeps the
    /// event with the user id and no personal data.
    pub async fn hard_delete(&self, id: Uuid, actor: Actor) -> Result<(), AdminError> {
        actor.refuse_self(id, "delete")?;
        let txn = db::begin_write(self.db()).await?;
        if !erase_account(&txn, id, None).await? {
            return Err(AccountError::NotFound.into());
        }
        self.operator_audit(&txn, id, AuditEvent::AccountDeleted, actor, json!({}))
            .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(())
    }

    /// Applies one operation to each listed account; each succeeds or fails on its own.
    pub async fn bulk(
        &self,
        ids: &[Uuid],
        operation: BulkOperation,
        actor: Actor,
    ) -> Vec<(Uuid, Result<(), AdminError>)> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for &id in ids {
            if outcomes.iter().any(|(seen, _)| *seen == id) {
                continue;
            }
            let outcome = match operation {
                BulkOperation::Verify => self.set_verified(id, true, actor).await.map(drop),
                BulkOperation::Unverify => self.set_verified(id, false, actor).await.map(drop),
                BulkOperation::MakeSuperuser => self.set_superuser(id, true, actor).await.map(drop),
                BulkOperation::RemoveSuperuser => {
                    self.set_superuser(id, false, actor).await.map(drop)
                }
                BulkOperation::SoftDelete => self.soft_delete(id, None, actor).await.map(drop),
                BulkOperation::Restore => self.restore(id, actor).await.map(drop),
            };
            outcomes.push((id, outcome));
        }
        outcomes
    }
}

impl super::Admin<'_> {
    /// Creates the configured first superuser (verified) unless that email already exists.
    pub async fn ensure_first_superuser(&self) -> Result<Option<User>> {
        let Some(first) = self.settings.auth.first_superuser.clone() else {
            return Ok(None);
        };
        // The settings hold parsed values: the first superuser obeys every account rule.
        if find_user_by_email(&self.db, &first.email).await?.is_some() {
            return Ok(None);
        }
        let hash = self.hasher.hash(&first.password).await?;
        let user = insert_user(&self.db, &first.email, &first.username, hash, true, true).await?;
        self.audit(
            &self.db,
            Some(user.id),
            AuditEvent::SuperuserCreated,
            &ClientInfo::default(),
            None,
        )
        .await?;
        self.users_changed().await;
        Ok(Some(user.view()))
    }

    /// Creates a verified superuser after checking every account rule (operator CLI).
    pub async fn create_superuser(
        &self,
        email: &str,
        username: &str,
        password: String,
    ) -> Result<User> {
        let (email, username, password) = self
            .check_new_account(NewAccount {
                email: email.to_string(),
                username: username.to_string(),
                password,
            })
            .await?;
        let hash = self.hasher.hash(&password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, true, true).await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::SuperuserCreated,
            &ClientInfo::default(),
            None,
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user.view())
    }
}
