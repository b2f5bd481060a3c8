//! The second step of a sign-in on an account with a second factor: the challenge a correct
//! password opens, and the code (or recovery code) that completes it.

use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{service::*, storage::*, tokens};
use crate::{
    db,
    entities::{mfa_challenge, user},
    ratelimit,
};

use super::mfa::{CHALLENGE_TTL, MAX_CHALLENGE_FAILURES, Proof};

impl Accounts {
    /// The second step a correct password opens on an account with a factor: returns the
    /// opaque `mfa_token` that `mfa_verify` takes.
    pub(super) async fn open_mfa_challenge(
        &self,
        user: &user::Model,
        client: &ClientInfo,
    ) -> Result<String> {
        let raw = tokens::new_opaque_token();
        let at = now();
        let txn = db::begin_write(&self.db).await?;
        mfa_challenge::Entity::insert(mfa_challenge::ActiveModel {
            id: Set(Uuid::new_v4()),
            user_id: Set(user.id),
            token_hash: Set(tokens::hash_token(&raw)),
            created_at: Set(at),
            expires_at: Set(after(CHALLENGE_TTL)),
            failed_attempts: Set(0),
            used_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        self.audit(&txn, Some(user.id), AuditEvent::MfaChallenged, client, None)
            .await?;
        txn.commit().await?;
        Ok(raw)
    }

    /// Counts a wrong code: towards the challenge's limit and the account's login throttle.
    async fn mfa_failure(
        &self,
        challenge: &mfa_challenge::Model,
        subjects: &[String],
        client: &ClientInfo,
    ) -> Result<SignInError> {
        let txn = db::begin_write(&self.db).await?;
        mfa_challenge::Entity::update_many()
            .col_expr(
                mfa_challenge::Column::FailedAttempts,
                Expr::col(mfa_challenge::Column::FailedAttempts).add(1),
            )
            .filter(mfa_challenge::Column::Id.eq(challenge.id))
            .exec(&txn)
            .await?;
        let ended = mfa_challenge::Entity::update_many()
            .col_expr(mfa_challenge::Column::UsedAt, Expr::value(now()))
            .filter(mfa_challenge::Column::Id.eq(challenge.id))
            .filter(mfa_challenge::Column::FailedAttempts.gte(MAX_CHALLENGE_FAILURES))
            .filter(mfa_challenge::Column::UsedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected
            == 1;
        self.audit(
            &txn,
            Some(challenge.user_id),
            AuditEvent::LoginFailed,
            client,
            Some(serde_json::json!({"reason": "wrong_mfa_code", "challenge_ended": ended})),
        )
        .await?;
        txn.commit().await?;
        if let Some(limiter) = &self.login_throttle {
            for subject in subjects {
                let _ = limiter
                    .check(limiter.rules().account_failures, subject, true)
                    .await;
            }
        }
        Ok(SignInError::MfaCodeRejected {
            challenge_ended: ended,
        })
    }
}

impl super::Sessions<'_> {
    /// The second step of a sign-in: the `mfa_token` and a current TOTP code or an unused
    /// recovery code give the token pair. Wrong codes count towards the account's login
    /// throttle; the fifth for one token ends it.
    pub async fn mfa_verify(
        &self,
        mfa_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<TokenPair, SignInError> {
        let challenge = mfa_challenge::Entity::find()
            .filter(mfa_challenge::Column::TokenHash.eq(tokens::hash_token(mfa_token.trim())))
            .one(&self.db)
            .await?
            .filter(|c| c.used_at.is_none())
            .ok_or(SignInError::MfaTokenInvalid)?;
        if challenge.expires_at <= now() {
            return Err(SignInError::MfaTokenExpired);
        }
        let user = user::Entity::find_by_id(challenge.user_id)
            .one(&self.db)
            .await?
            .filter(|u| !u.is_deleted && u.mfa_enabled)
            .ok_or(SignInError::MfaTokenInvalid)?;
        let subjects = [
            ratelimit::account_subject(&user.email),
            ratelimit::account_subject(&user.username),
        ];
        if let Some(limiter) = &self.login_throttle {
            for subject in &subjects {
                super::sessions::refuse_throttled(limiter, subject).await?;
            }
        }
        let txn = db::begin_write(&self.db).await?;
        let factor = self
            .factor(&txn, user.id)
            .await?
            .filter(|f| f.confirmed_at.is_some())
            .ok_or(SignInError::MfaTokenInvalid)?;
        let Some(proof) = self.accept_second_factor(&txn, &factor, code, true).await? else {
            drop(txn);
            return Err(self.mfa_failure(&challenge, &subjects, client).await?);
        };
        // Single use: of two concurrent verifications of one token, one wins.
        let claimed = mfa_challenge::Entity::update_many()
            .col_expr(mfa_challenge::Column::UsedAt, Expr::value(now()))
            .filter(mfa_challenge::Column::Id.eq(challenge.id))
            .filter(mfa_challenge::Column::UsedAt.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            return Err(SignInError::MfaTokenInvalid);
        }
        let pair = self.open_session(&txn, &user, client).await?;
        let method = match proof {
            Proof::Totp => "totp",
            Proof::RecoveryCode => "recovery_code",
        };
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::LoginSuccess,
            client,
            Some(serde_json::json!({"session_id": pair.session_id, "mfa": method})),
        )
        .await?;
        if matches!(proof, Proof::RecoveryCode) {
            self.audit(
                &txn,
                Some(user.id),
                AuditEvent::MfaRecoveryCodeUsed,
                client,
                None,
            )
            .await?;
        }
        txn.commit().await?;
        if let Some(limiter) = &self.login_throttle {
            for subject in &subjects {
                limiter
                    .reset(limiter.rules().account_failures, subject)
                    .await;
            }
        }
        Ok(pair)
    }
}
