//! Passwords: changing one while signed in, and the forgotten-password reset by mail.

use sea_orm::{ActiveModelTrait, Set};

use super::audit::AuditEvent;
use super::{FieldProblem, service::*, storage::*, tokens::Purpose};
use crate::values::{EmailAddress, Password};
use crate::{db, entities::user, mail::Mail};

impl Accounts {
    /// The account's current password, for a change to how it signs in; `during` names the
    /// change in the audit log when the password is wrong.
    pub(super) async fn check_password(
        &self,
        user: &user::Model,
        password: String,
        during: &str,
        client: &ClientInfo,
    ) -> Result<()> {
        if !user.has_password() {
            return Err(AccountError::PasswordNotSet);
        }
        if self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            return Ok(());
        }
        self.audit(
            &self.db,
            Some(user.id),
            AuditEvent::PasswordChangeFailed,
            client,
            Some(serde_json::json!({"during": during})),
        )
        .await?;
        Err(AccountError::WrongPassword)
    }
}

impl super::Passwords<'_> {
    pub async fn forgot_password(&self, email: &str, client: &ClientInfo) -> Result<()> {
        // A malformed address is the caller's mistake, said as such; whether an account has a
        // well-formed one is never told.
        let email = EmailAddress::parse(email).map_err(|p| AccountError::Validation(vec![p]))?;
        let Some(user) = find_user_by_email(&self.db, &email).await? else {
            return Ok(());
        };
        if user.is_deleted {
            return Ok(());
        }
        let txn = db::begin_write(&self.db).await?;
        let raw = self
            .issue_one_time_token(&txn, user.id, Purpose::ResetPassword)
            .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::PasswordResetRequested,
            client,
            None,
        )
        .await?;
        self.queue_mail(
            &txn,
            self.mails.compose(
                &user.email,
                Mail::PasswordReset {
                    username: &user.username,
                    link: &format!(
                        "{}/reset-password?token={raw}",
                        self.settings.auth.frontend_url
                    ),
                    minutes: self.settings.auth.password_reset_token_ttl.as_secs() / 60,
                },
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await?;
        Ok(())
    }

    pub async fn reset_password(
        &self,
        raw: &str,
        new_password: String,
        client: &ClientInfo,
    ) -> Result<()> {
        let new_password =
            Password::parse("new_password", new_password).map_err(AccountError::Validation)?;
        let hash = self.hasher.hash(&new_password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::ResetPassword)
            .await?;
        let user = find_user(&txn, user_id).await?;
        let mut active: user::ActiveModel = user.into();
        active.password_hash = Set(hash.into_string());
        // Following the mailed link proves the address belongs to the user.
        active.is_verified = Set(true);
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.revoke_sessions(&txn, user.id, None, "password_reset")
            .await?;
        self.audit(&txn, Some(user.id), AuditEvent::PasswordReset, client, None)
            .await?;
        self.queue_mail(&txn, self.password_changed_mail(&user))
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(())
    }

    pub async fn change_password(
        &self,
        principal: &Principal,
        current: String,
        new_password: String,
        client: &ClientInfo,
    ) -> Result<()> {
        let new_password =
            Password::parse("new_password", new_password).map_err(AccountError::Validation)?;
        if current == new_password.expose() {
            return Err(AccountError::Validation(vec![FieldProblem::new(
                "new_password",
                "must differ from the current password",
            )]));
        }
        let user = find_user(&self.db, principal.user.id).await?;
        self.check_password(&user, current, "password_change", client)
            .await?;
        let hash = self.hasher.hash(&new_password).await?;
        let txn = db::begin_write(&self.db).await?;
        let mut active: user::ActiveModel = user.into();
        active.password_hash = Set(hash.into_string());
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.revoke_sessions(&txn, user.id, principal.session_id(), "password_changed")
            .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::PasswordChanged,
            client,
            None,
        )
        .await?;
        self.queue_mail(&txn, self.password_changed_mail(&user))
            .await?;
        self.commit_and_dispatch(txn).await?;
        Ok(())
    }
}
