//! Changing the email address: asked for with the password, confirmed from the new address,
//! and revertible from the old one for seven days (the revert ends every session and mails a
//! password reset there, since whoever made the change may know the password).

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{FieldProblem, service::*, storage::*, tokens};
use crate::values::EmailAddress;
use crate::{
    db,
    entities::{email_change, user},
    mail::Mail,
};

/// How long the old address can undo a change.
pub const REVERT_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Accounts {
    async fn set_email(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        email: &str,
    ) -> Result<()> {
        user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(email))
            .col_expr(user::Column::IsVerified, Expr::value(true))
            .col_expr(user::Column::UpdatedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(user_id))
            .exec(conn)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                // Taken by a registration since the request.
                Some(_) => AccountError::EmailTaken,
                None => e.into(),
            })?;
        Ok(())
    }
}

impl super::Profile<'_> {
    /// Mails a confirmation link to `new_email`; nothing changes until it is followed. The
    /// answer is the same whether the address is free or taken: a taken one gets a notice
    /// instead of a link.
    pub async fn request_email_change(
        &self,
        principal: &Principal,
        new_email: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<()> {
        let new_email = EmailAddress::parse(new_email).map_err(|p| {
            AccountError::Validation(vec![FieldProblem::new("new_email", p.message)])
        })?;
        let user = find_user(&self.db, principal.user.id).await?;
        if new_email.as_str() == user.email {
            return Err(AccountError::Validation(vec![FieldProblem::new(
                "new_email",
                "is already the address of this account",
            )]));
        }
        self.check_password(&user, password, "email_change", client)
            .await?;
        let taken = find_user_by_email(&self.db, &new_email).await?.is_some();
        let txn = db::begin_write(&self.db).await?;
        // Only the newest request can be confirmed.
        email_change::Entity::delete_many()
            .filter(email_change::Column::UserId.eq(user.id))
            .filter(email_change::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
        if taken {
            self.queue_mail(
                &txn,
                self.mails
                    .compose(new_email.as_str(), Mail::EmailChangeAddressTaken),
            )
            .await?;
        } else {
            let raw = tokens::new_opaque_token();
            let ttl = self.settings.auth.verification_token_ttl;
            email_change::Entity::insert(email_change::ActiveModel {
                id: Set(Uuid::new_v4()),
                user_id: Set(user.id),
                old_email: Set(user.email.clone()),
                new_email: Set(new_email.as_str().to_string()),
                confirm_token_hash: Set(tokens::hash_token(&raw)),
                confirm_expires_at: Set(after(ttl)),
                confirmed_at: Set(None),
                revert_token_hash: Set(None),
                revert_expires_at: Set(None),
                reverted_at: Set(None),
                created_at: Set(now()),
            })
            .exec_without_returning(&txn)
            .await?;
            self.queue_mail(
                &txn,
                self.mails.compose(
                    new_email.as_str(),
                    Mail::ConfirmEmailChange {
                        username: &user.username,
                        link: &format!(
                            "{}/confirm-email-change?token={raw}",
                            self.settings.auth.frontend_url
                        ),
                        hours: ttl.as_secs() / 3600,
                    },
                ),
            )
            .await?;
        }
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::EmailChangeRequested,
            client,
            None,
        )
        .await?;
        self.commit_and_dispatch(txn).await
    }

    /// Follows the link mailed to the new address: the address changes (verified, since the
    /// mail arrived), and the old address gets a notice with a revert link.
    pub async fn confirm_email_change(&self, raw: &str, client: &ClientInfo) -> Result<()> {
        let change = email_change::Entity::find()
            .filter(email_change::Column::ConfirmTokenHash.eq(tokens::hash_token(raw.trim())))
            .one(&self.db)
            .await?
            .filter(|c| c.confirmed_at.is_none())
            .ok_or(AccountError::TokenInvalid)?;
        if change.confirm_expires_at <= now() {
            return Err(AccountError::TokenExpired);
        }
        let user = user::Entity::find_by_id(change.user_id)
            .one(&self.db)
            .await?
            // The address changed some other way meanwhile: this request is stale.
            .filter(|u| !u.is_deleted && u.email == change.old_email)
            .ok_or(AccountError::TokenInvalid)?;
        let revert = tokens::new_opaque_token();
        let txn = db::begin_write(&self.db).await?;
        let claimed = email_change::Entity::update_many()
            .col_expr(email_change::Column::ConfirmedAt, Expr::value(now()))
            .col_expr(
                email_change::Column::RevertTokenHash,
                Expr::value(tokens::hash_token(&revert)),
            )
            .col_expr(
                email_change::Column::RevertExpiresAt,
                Expr::value(after(REVERT_TTL)),
            )
            .filter(email_change::Column::Id.eq(change.id))
            .filter(email_change::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(AccountError::TokenInvalid);
        }
        self.set_email(&txn, user.id, &change.new_email).await?;
        self.audit(&txn, Some(user.id), AuditEvent::EmailChanged, client, None)
            .await?;
        self.queue_mail(
            &txn,
            self.mails.compose(
                &change.old_email,
                Mail::EmailChanged {
                    username: &user.username,
                    new_email: &change.new_email,
                    link: &format!(
                        "{}/revert-email-change?token={revert}",
                        self.settings.auth.frontend_url
                    ),
                },
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(())
    }

    /// Follows the revert link mailed to the old address: it is the account's address again,
    /// every session ends, and a password reset link goes to it.
    pub async fn revert_email_change(&self, raw: &str, client: &ClientInfo) -> Result<()> {
        let change = email_change::Entity::find()
            .filter(email_change::Column::RevertTokenHash.eq(tokens::hash_token(raw.trim())))
            .one(&self.db)
            .await?
            .filter(|c| c.reverted_at.is_none())
            .ok_or(AccountError::TokenInvalid)?;
        if change.revert_expires_at.is_none_or(|at| at <= now()) {
            return Err(AccountError::TokenExpired);
        }
        let user = user::Entity::find_by_id(change.user_id)
            .one(&self.db)
            .await?
            .filter(|u| !u.is_deleted)
            .ok_or(AccountError::TokenInvalid)?;
        let txn = db::begin_write(&self.db).await?;
        let claimed = email_change::Entity::update_many()
            .col_expr(email_change::Column::RevertedAt, Expr::value(now()))
            .filter(email_change::Column::Id.eq(change.id))
            .filter(email_change::Column::RevertedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(AccountError::TokenInvalid);
        }
        // Whatever was asked for since is void too.
        email_change::Entity::delete_many()
            .filter(email_change::Column::UserId.eq(user.id))
            .filter(email_change::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
        self.set_email(&txn, user.id, &change.old_email).await?;
        self.revoke_sessions(&txn, user.id, None, "email_change_reverted")
            .await?;
        let reset = self
            .issue_one_time_token(&txn, user.id, tokens::Purpose::ResetPassword)
            .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::EmailChangeReverted,
            client,
            None,
        )
        .await?;
        self.queue_mail(
            &txn,
            self.mails.compose(
                &change.old_email,
                Mail::EmailChangeReverted {
                    username: &user.username,
                    link: &format!(
                        "{}/reset-password?token={reset}",
                        self.settings.auth.frontend_url
                    ),
                    minutes: self.settings.auth.password_reset_token_ttl.as_secs() / 60,
                },
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(())
    }
}
