//! Two-factor sign-in with TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) and
//! single-use recovery codes: setting a factor up, confirming it, the second step of a sign-in,
//! new recovery codes, turning it off, and an operator's reset.
//!
//! The secret is stored encrypted (AES-256-GCM under a key derived from `MFA_ENCRYPTION_KEY`,
//! or `SECRET_KEY` without one, bound to the account's id); recovery codes and challenge tokens
//! only as SHA-256 hashes.

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};
use uuid::Uuid;

use super::User;
use super::admin::Actor;
use super::audit::AuditEvent;
use super::totp::{
    SecretBox, TotpSetup, hash_recovery_code, looks_like_totp, new_recovery_code, otpauth_uri,
    rfc6238 as totp,
};
use super::{service::*, storage::*};
use crate::{
    db,
    entities::{View, mfa_challenge, recovery_code, totp_factor, user},
    mail::Mail,
};

/// How long the `mfa_token` of a password sign-in stays good.
pub const CHALLENGE_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Wrong codes one challenge takes before it ends.
pub const MAX_CHALLENGE_FAILURES: i32 = 5;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;

/// Which second factor served.
pub(super) enum Proof {
    Totp,
    RecoveryCode,
}

impl Accounts {
    pub(super) fn secret_box(&self) -> SecretBox {
        SecretBox::new(
            self.settings
                .auth
                .mfa_encryption_key
                .as_deref()
                .unwrap_or(&self.settings.auth.secret_key),
        )
    }

    pub(super) async fn factor(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Option<totp_factor::Model>> {
        Ok(totp_factor::Entity::find_by_id(user_id).one(conn).await?)
    }

    /// Checks a TOTP code against the factor and records its step, so that the same code (or
    /// an older one) never serves again. `false` when the code is wrong or already used.
    pub(super) async fn accept_totp(
        &self,
        conn: &impl ConnectionTrait,
        factor: &totp_factor::Model,
        code: &str,
    ) -> Result<bool> {
        let Some(secret) = self
            .secret_box()
            .open(factor.user_id, &factor.secret_ciphertext)
        else {
            tracing::error!(
                user_id = %factor.user_id,
                "a TOTP secret cannot be decrypted: was MFA_ENCRYPTION_KEY (or SECRET_KEY) changed?"
            );
            return Ok(false);
        };
        let Some(step) = totp::matching_step(&secret, code, totp::step_at(now().timestamp()))
        else {
            return Ok(false);
        };
        if factor.last_used_step.is_some_and(|last| step <= last) {
            return Ok(false);
        }
        // Conditional: of two concurrent uses of one code, one wins.
        let claimed = totp_factor::Entity::update_many()
            .col_expr(totp_factor::Column::LastUsedStep, Expr::value(step))
            .filter(totp_factor::Column::UserId.eq(factor.user_id))
            .filter(
                sea_orm::Condition::any()
                    .add(totp_factor::Column::LastUsedStep.is_null())
                    .add(totp_factor::Column::LastUsedStep.lt(step)),
            )
            .exec(conn)
            .await?;
        Ok(claimed.rows_affected == 1)
    }

    /// Uses up one of the account's recovery codes; `false` when it is not one or was used.
    pub(super) async fn accept_recovery_code(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        code: &str,
    ) -> Result<bool> {
        let used = recovery_code::Entity::update_many()
            .col_expr(recovery_code::Column::UsedAt, Expr::value(now()))
            .filter(recovery_code::Column::UserId.eq(user_id))
            .filter(recovery_code::Column::CodeHash.eq(hash_recovery_code(code)))
            .filter(recovery_code::Column::UsedAt.is_null())
            .exec(conn)
            .await?;
        Ok(used.rows_affected == 1)
    }

    /// A current TOTP code, or (where `recovery` allows) an unused recovery code.
    pub(super) async fn accept_second_factor(
        &self,
        conn: &impl ConnectionTrait,
        factor: &totp_factor::Model,
        code: &str,
        recovery: bool,
    ) -> Result<Option<Proof>> {
        if looks_like_totp(code) {
            return Ok(self
                .accept_totp(conn, factor, code)
                .await?
                .then_some(Proof::Totp));
        }
        if recovery
            && self
                .accept_recovery_code(conn, factor.user_id, code)
                .await?
        {
            return Ok(Some(Proof::RecoveryCode));
        }
        Ok(None)
    }

    /// For a change to a factor in force: a current code (or, where `recovery` allows, a
    /// recovery code) for it.
    pub(super) async fn prove_factor(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        code: &str,
        recovery: bool,
    ) -> Result<(), MfaError> {
        let factor = self
            .factor(conn, user_id)
            .await?
            .filter(|f| f.confirmed_at.is_some())
            .ok_or(MfaError::NotEnabled)?;
        match self
            .accept_second_factor(conn, &factor, code, recovery)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(MfaError::WrongCode),
        }
    }

    /// Replaces the account's recovery codes with a new set and returns it, once.
    pub(super) async fn new_recovery_codes(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Vec<String>> {
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        let at = now();
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        recovery_code::Entity::insert_many(codes.iter().map(|c| recovery_code::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(user_id),
            code_hash: Set(hash_recovery_code(c)),
            created_at: Set(at),
            used_at: Set(None),
        }))
        .exec_without_returning(conn)
        .await?;
        Ok(codes)
    }

    pub(super) async fn set_mfa_enabled(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        enabled: bool,
    ) -> Result<()> {
        user::Entity::update_many()
            .col_expr(user::Column::MfaEnabled, Expr::value(enabled))
            .col_expr(user::Column::UpdatedAt, Expr::value(now()))
            .filter(user::Column::Id.eq(user_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Removes the factor, its recovery codes and open challenges.
    pub(super) async fn remove_factor(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<()> {
        totp_factor::Entity::delete_by_id(user_id)
            .exec(conn)
            .await?;
        recovery_code::Entity::delete_many()
            .filter(recovery_code::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        mfa_challenge::Entity::delete_many()
            .filter(mfa_challenge::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        self.set_mfa_enabled(conn, user_id, false).await
    }

    /// The mail every change of the second factor sends, so that a change by someone else is seen.
    pub(super) async fn mail_mfa_change(
        &self,
        conn: &impl ConnectionTrait,
        user: &user::Model,
        what: &str,
        sessions_ended: bool,
    ) -> Result<()> {
        self.queue_mail(
            conn,
            self.mails.compose(
                &user.email,
                Mail::MfaChanged {
                    username: &user.username,
                    what,
                    when: &now().to_rfc3339(),
                    sessions_ended,
                },
            ),
        )
        .await
    }
}

impl super::Mfa<'_> {
    /// Starts setting up a TOTP factor: a new secret, not in force until confirmed with a code.
    /// Asking again replaces an unconfirmed secret.
    pub async fn totp_setup(
        &self,
        principal: &Principal,
        password: String,
        client: &ClientInfo,
    ) -> Result<TotpSetup, MfaError> {
        let user = find_user(&self.db, principal.user.id).await?;
        self.check_password(&user, password, "mfa", client).await?;
        if user.mfa_enabled {
            return Err(MfaError::AlreadyEnabled);
        }
        let secret: [u8; 20] = rand::random();
        let encoded = data_encoding::BASE32_NOPAD.encode(&secret);
        let txn = db::begin_write(&self.db).await?;
        totp_factor::Entity::delete_by_id(user.id)
            .exec(&txn)
            .await?;
        totp_factor::Entity::insert(totp_factor::ActiveModel {
            user_id: Set(user.id),
            secret_ciphertext: Set(self.secret_box().seal(user.id, &secret)),
            created_at: Set(now()),
            confirmed_at: Set(None),
            last_used_step: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::MfaSetupStarted,
            client,
            None,
        )
        .await?;
        txn.commit().await?;
        Ok(TotpSetup {
            otpauth_uri: otpauth_uri(&self.settings.project_name, &user.email, &encoded),
            secret: encoded,
        })
    }

    /// Confirms the factor set up with a first code: from now on a password sign-in needs a
    /// second step. Returns the recovery codes, shown this once.
    pub async fn totp_confirm(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, MfaError> {
        let user = find_user(&self.db, principal.user.id).await?;
        if user.mfa_enabled {
            return Err(MfaError::AlreadyEnabled);
        }
        let txn = db::begin_write(&self.db).await?;
        let factor = self
            .factor(&txn, user.id)
            .await?
            .ok_or(MfaError::SetupRequired)?;
        if !self.accept_totp(&txn, &factor, code).await? {
            return Err(MfaError::WrongCode);
        }
        totp_factor::Entity::update_many()
            .col_expr(totp_factor::Column::ConfirmedAt, Expr::value(now()))
            .filter(totp_factor::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        self.set_mfa_enabled(&txn, user.id, true).await?;
        let codes = self.new_recovery_codes(&txn, user.id).await?;
        let ended = self
            .revoke_sessions(&txn, user.id, principal.session_id(), "mfa_enabled")
            .await?;
        self.audit(&txn, Some(user.id), AuditEvent::MfaEnabled, client, None)
            .await?;
        self.mail_mfa_change(&txn, &user, "Two-factor sign-in was turned on", ended > 0)
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(codes)
    }

    /// A fresh set of recovery codes (the old ones stop working), for a current TOTP code.
    pub async fn regenerate_recovery_codes(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, MfaError> {
        let user = find_user(&self.db, principal.user.id).await?;
        let txn = db::begin_write(&self.db).await?;
        self.prove_factor(&txn, user.id, code, false).await?;
        let codes = self.new_recovery_codes(&txn, user.id).await?;
        let ended = self
            .revoke_sessions(&txn, user.id, principal.session_id(), "mfa_changed")
            .await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::MfaRecoveryCodesRegenerated,
            client,
            None,
        )
        .await?;
        self.mail_mfa_change(
            &txn,
            &user,
            "New recovery codes were made; the earlier ones no longer work",
            ended > 0,
        )
        .await?;
        self.commit_and_dispatch(txn).await?;
        Ok(codes)
    }

    /// Turns two-factor sign-in off, with the password and a TOTP or recovery code.
    pub async fn totp_disable(
        &self,
        principal: &Principal,
        password: String,
        code: &str,
        client: &ClientInfo,
    ) -> Result<(), MfaError> {
        let user = find_user(&self.db, principal.user.id).await?;
        self.check_password(&user, password, "mfa", client).await?;
        let txn = db::begin_write(&self.db).await?;
        self.prove_factor(&txn, user.id, code, true).await?;
        self.remove_factor(&txn, user.id).await?;
        let ended = self
            .revoke_sessions(&txn, user.id, principal.session_id(), "mfa_disabled")
            .await?;
        self.audit(&txn, Some(user.id), AuditEvent::MfaDisabled, client, None)
            .await?;
        self.mail_mfa_change(&txn, &user, "Two-factor sign-in was turned off", ended > 0)
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(())
    }

    /// An operator turns an account's second factor off (the user lost the device and the
    /// codes). Every session of the account ends.
    pub async fn reset_mfa(&self, id: Uuid, actor: Actor) -> Result<User, MfaError> {
        actor.refuse_self(id, "reset the second factor of")?;
        let user = find_user(&self.db, id).await?;
        if !user.mfa_enabled && self.factor(&self.db, id).await?.is_none() {
            return Err(MfaError::NotEnabled);
        }
        let txn = db::begin_write(&self.db).await?;
        self.remove_factor(&txn, id).await?;
        let ended = self.revoke_sessions(&txn, id, None, "mfa_reset").await?;
        self.audit(
            &txn,
            Some(id),
            AuditEvent::MfaResetByAdmin,
            &ClientInfo::default(),
            Some(serde_json::json!({"by": actor.label()})),
        )
        .await?;
        self.mail_mfa_change(
            &txn,
            &user,
            "An administrator turned two-factor sign-in off for your account",
            ended > 0,
        )
        .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(find_user(&self.db, id).await?.view())
    }
}
