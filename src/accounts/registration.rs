//! Registration and email verification.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr,
};
use uuid::Uuid;

use super::User;
use super::audit::AuditEvent;
use super::{
    service::*,
    storage::*,
    tokens::{self, Purpose},
};
use crate::values::{EmailAddress, Password, Username};
use crate::{
    db,
    entities::{View, one_time_token, user},
    mail::{Email, Mail},
};

impl Accounts {
    /// Validates every field, reporting all problems at once, and checks uniqueness.
    pub(super) async fn check_new_account(
        &self,
        new: NewAccount,
    ) -> Result<(EmailAddress, Username, Password)> {
        let mut problems = Vec::new();
        let email = EmailAddress::parse(&new.email)
            .map_err(|p| problems.push(p))
            .ok();
        let username = Username::parse(&new.username)
            .map_err(|p| problems.extend(p))
            .ok();
        let password = Password::parse("password", new.password)
            .map_err(|p| problems.extend(p))
            .ok();
        let (Some(email), Some(username), Some(password)) = (email, username, password) else {
            return Err(AccountError::Validation(problems));
        };
        if user::Entity::find()
            .filter(user::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(AccountError::EmailTaken);
        }
        if user::Entity::find()
            .filter(user::Column::UsernameLower.eq(username.as_str().to_lowercase()))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(AccountError::UsernameTaken);
        }
        Ok((email, username, password))
    }

    fn verification_mail(&self, user: &user::Model, raw: &str) -> Email {
        self.mails.compose(
            &user.email,
            Mail::VerifyEmail {
                username: &user.username,
                link: &format!(
                    "{}/verify-email?token={raw}",
                    self.settings.auth.frontend_url
                ),
                hours: self.settings.auth.verification_token_ttl.as_secs() / 3600,
            },
        )
    }

    pub(super) fn password_changed_mail(&self, user: &user::Model) -> Email {
        self.mails.compose(
            &user.email,
            Mail::PasswordChanged {
                username: &user.username,
                when: &now().to_rfc3339(),
            },
        )
    }

    pub(super) async fn issue_one_time_token(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        purpose: Purpose,
    ) -> Result<String> {
        // Only the newest token of a purpose is valid: asking again retires the earlier ones.
        // Cancel links are the exception: every mail about a scheduled deletion carries one, and
        // each must keep working until the deletion is cancelled; so are sign-in codes, one per
        // browser tab that signed in.
        if !matches!(purpose, Purpose::CancelDeletion | Purpose::OidcLogin) {
            retire_tokens(conn, user_id, &[purpose]).await?;
        }
        insert_one_time_token(conn, &self.settings, user_id, purpose).await
    }

    /// Marks a one-time token used, exactly once, and returns the user it belongs to.
    pub(super) async fn consume_one_time_token(
        &self,
        conn: &impl ConnectionTrait,
        raw: &str,
        purpose: Purpose,
    ) -> Result<Uuid> {
        let token = one_time_token::Entity::find()
            .filter(one_time_token::Column::TokenHash.eq(tokens::hash_token(raw.trim())))
            .filter(one_time_token::Column::Purpose.eq(purpose))
            .one(conn)
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        if token.used_at.is_some() {
            return Err(AccountError::TokenInvalid);
        }
        if token.expires_at <= now() {
            return Err(AccountError::TokenExpired);
        }
        // The conditional update makes two concurrent uses of one token succeed at most once.
        let claimed = one_time_token::Entity::update_many()
            .col_expr(one_time_token::Column::UsedAt, Expr::value(now()))
            .filter(one_time_token::Column::Id.eq(token.id))
            .filter(one_time_token::Column::UsedAt.is_null())
            .exec(conn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(AccountError::TokenInvalid);
        }
        Ok(token.user_id)
    }
}

impl super::Registration<'_> {
    pub async fn register(&self, new: NewAccount, client: &ClientInfo) -> Result<User> {
        let (email, username, password) = self.check_new_account(new).await?;
        let hash = self.hasher.hash(&password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, false, false).await?;
        let raw = self
            .issue_one_time_token(&txn, user.id, Purpose::VerifyEmail)
            .await?;
        self.audit(&txn, Some(user.id), AuditEvent::Register, client, None)
            .await?;
        self.queue_mail(&txn, self.verification_mail(&user, &raw))
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    pub async fn verify_email(&self, raw: &str, client: &ClientInfo) -> Result<User> {
        let txn = db::begin_write(&self.db).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::VerifyEmail)
            .await?;
        let user = find_user(&txn, user_id).await?;
        let was_verified = user.is_verified;
        let mut active: user::ActiveModel = user.into();
        active.is_verified = Set(true);
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.audit(&txn, Some(user.id), AuditEvent::EmailVerified, client, None)
            .await?;
        if !was_verified {
            self.queue_mail(
                &txn,
                self.mails.compose(
                    &user.email,
                    Mail::Welcome {
                        username: &user.username,
                        link: &self.settings.auth.frontend_url,
                    },
                ),
            )
            .await?;
        }
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user.view())
    }

    /// Sends a fresh verification mail when the account exists and is unverified; says nothing
    /// either way so the endpoint cannot be used to discover accounts.
    pub async fn resend_verification(&self, email: &str) -> Result<()> {
        // A malformed address is the caller's mistake, said as such; whether an account has a
        // well-formed one is never told.
        let email = EmailAddress::parse(email).map_err(|p| AccountError::Validation(vec![p]))?;
        let Some(user) = find_user_by_email(&self.db, &email).await? else {
            return Ok(());
        };
        if user.is_verified || user.is_deleted {
            return Ok(());
        }
        let txn = db::begin_write(&self.db).await?;
        let raw = self
            .issue_one_time_token(&txn, user.id, Purpose::VerifyEmail)
            .await?;
        self.queue_mail(&txn, self.verification_mail(&user, &raw))
            .await?;
        self.commit_and_dispatch(txn).await?;
        Ok(())
    }
}
