//! Two-factor sign-in with TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps) and
//! single-use recovery codes: setting a factor up, confirming it, the second step of a sign-in,
//! new recovery codes, turning it off, and an operator's reset.
//!
//! The secret is stored encrypted (AES-256-GCM under a key derived from `MFA_ENCRYPTION_KEY`,
//! or `SECRET_KEY` without one, bound to the account's id); recovery codes and challenge tokens
//! only as SHA-256 hashes.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::Engine as _;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::admin::Actor;
use super::audit::AuditEvent;
use super::{service::*, storage::*, tokens};
use crate::{
    db,
    entities::{mfa_challenge, recovery_code, totp_factor, user},
    mail::templates,
    ratelimit,
};

/// How long the `mfa_token` of a password sign-in stays good.
pub const CHALLENGE_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Wrong codes one challenge takes before it ends.
pub const MAX_CHALLENGE_FAILURES: i32 = 5;
/// Recovery codes per set.
pub const RECOVERY_CODES: usize = 10;

/// RFC 6238 with the parameters every authenticator app defaults to.
pub mod totp {
    use hmac::{Hmac, Mac};

    pub const STEP_SECONDS: u64 = 30;
    pub const DIGITS: u32 = 6;

    /// The 30-second step a Unix time falls in.
    pub fn step_at(unix_seconds: i64) -> i64 {
        unix_seconds.div_euclid(STEP_SECONDS as i64)
    }

    /// The code of one step (RFC 4226 dynamic truncation), as a number below 10^6.
    pub fn code(secret: &[u8], step: i64) -> u32 {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key size");
        mac.update(&(step as u64).to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[19] & 0x0f);
        let bin = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        bin % 10u32.pow(DIGITS)
    }

    /// The step, one before `now_step` to one after (clock drift), whose code `typed` is.
    pub fn matching_step(secret: &[u8], typed: &str, now_step: i64) -> Option<i64> {
        let typed = typed.trim();
        if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let wanted: u32 = typed.parse().ok()?;
        let mut found = None;
        // Every candidate is computed, so the time taken does not tell which one matched.
        for step in [now_step - 1, now_step, now_step + 1] {
            if code(secret, step) == wanted {
                found = found.or(Some(step));
            }
        }
        found
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rfc_6238_sha1_vectors() {
            // RFC 6238 appendix B, SHA-1, truncated to 6 digits.
            let secret = b"12345678901234567890";
            for (time, expected) in [
                (59, 94_287_082u32),
                (1_111_111_109, 7_081_804),
                (1_111_111_111, 14_050_471),
                (1_234_567_890, 89_005_924),
                (2_000_000_000, 69_279_037),
                (20_000_000_000, 65_353_130),
            ] {
                assert_eq!(code(secret, step_at(time)), expected % 1_000_000, "{time}");
            }
        }

        #[test]
        fn a_code_matches_its_step_and_its_neighbours_only() {
            let secret = b"12345678901234567890";
            let now = step_at(1_234_567_890);
            let at = |s| format!("{:06}", code(secret, s));
            assert_eq!(matching_step(secret, &at(now), now), Some(now));
            assert_eq!(matching_step(secret, &at(now - 1), now), Some(now - 1));
            assert_eq!(matching_step(secret, &at(now + 1), now), Some(now + 1));
            assert_eq!(matching_step(secret, &at(now - 2), now), None);
            assert_eq!(matching_step(secret, "12345", now), None);
            assert_eq!(matching_step(secret, "abcdef", now), None);
        }
    }
}

/// Encrypts TOTP secrets at rest, each bound to its account.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    pub fn new(key_material: &str) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"keel-mfa-v1"), key_material.as_bytes())
            .expand(b"totp secret encryption", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    pub fn seal(&self, user_id: Uuid, secret: &[u8]) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: user_id.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any secret of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// `None` when the stored value was not sealed for this account under this key.
    pub fn open(&self, user_id: Uuid, stored: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(stored)
            .ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: user_id.as_bytes(),
                },
            )
            .ok()
    }
}

/// What `POST /auth/mfa/totp/setup` hands the user: the secret to type in or the URI to scan.
#[derive(Debug, Clone)]
pub struct TotpSetup {
    pub secret: String,
    pub otpauth_uri: String,
}

fn new_recovery_code() -> String {
    let bytes: [u8; 10] = rand::random();
    let raw = data_encoding::BASE32_NOPAD.encode(&bytes);
    raw.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("-")
}

/// A recovery code as stored: case, spaces and dashes do not matter when typed.
fn hash_recovery_code(typed: &str) -> String {
    let normal: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex::encode(Sha256::digest(format!("keel-recovery:{normal}").as_bytes()))
}

fn looks_like_totp(code: &str) -> bool {
    let code = code.trim();
    code.len() == totp::DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit())
}

fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let issuer = utf8_percent_encode(issuer, NON_ALPHANUMERIC).to_string();
    let account = utf8_percent_encode(account, NON_ALPHANUMERIC);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm=SHA1&digits={}&period={}",
        totp::DIGITS,
        totp::STEP_SECONDS
    )
}

/// Which second factor served.
enum Proof {
    Totp,
    RecoveryCode,
}

impl Accounts {
    fn secret_box(&self) -> SecretBox {
        SecretBox::new(
            self.settings
                .auth
                .mfa_encryption_key
                .as_deref()
                .unwrap_or(&self.settings.auth.secret_key),
        )
    }

    async fn factor(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> Result<Option<totp_factor::Model>> {
        Ok(totp_factor::Entity::find_by_id(user_id).one(conn).await?)
    }

    /// Checks a TOTP code against the factor and records its step, so that the same code (or
    /// an older one) never serves again. `false` when the code is wrong or already used.
    async fn accept_totp(
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
    async fn accept_recovery_code(
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
    async fn accept_second_factor(
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
    async fn prove_factor(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        code: &str,
        recovery: bool,
    ) -> Result<()> {
        let factor = self
            .factor(conn, user_id)
            .await?
            .filter(|f| f.confirmed_at.is_some())
            .ok_or(AccountError::MfaNotEnabled)?;
        match self
            .accept_second_factor(conn, &factor, code, recovery)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(AccountError::WrongMfaCode),
        }
    }

    /// Replaces the account's recovery codes with a new set and returns it, once.
    async fn new_recovery_codes(
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

    async fn set_mfa_enabled(
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
    async fn remove_factor(&self, conn: &impl ConnectionTrait, user_id: Uuid) -> Result<()> {
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
    async fn mail_mfa_change(
        &self,
        conn: &impl ConnectionTrait,
        user: &user::Model,
        what: &str,
        sessions_ended: bool,
    ) -> Result<()> {
        self.queue_mail(
            conn,
            templates::mfa_changed(
                &self.settings.project_name,
                &user.email,
                &user.username,
                what,
                &now().to_rfc3339(),
                sessions_ended,
            ),
        )
        .await
    }

    /// Starts setting up a TOTP factor: a new secret, not in force until confirmed with a code.
    /// Asking again replaces an unconfirmed secret.
    pub async fn totp_setup(
        &self,
        principal: &Principal,
        password: String,
        client: &ClientInfo,
    ) -> Result<TotpSetup> {
        let user = find_user(&self.db, principal.user.id).await?;
        self.check_password(&user, password, "mfa", client).await?;
        if user.mfa_enabled {
            return Err(AccountError::MfaAlreadyEnabled);
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
    ) -> Result<Vec<String>> {
        let user = find_user(&self.db, principal.user.id).await?;
        if user.mfa_enabled {
            return Err(AccountError::MfaAlreadyEnabled);
        }
        let txn = db::begin_write(&self.db).await?;
        let factor = self
            .factor(&txn, user.id)
            .await?
            .ok_or(AccountError::MfaSetupRequired)?;
        if !self.accept_totp(&txn, &factor, code).await? {
            return Err(AccountError::WrongMfaCode);
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
    ) -> Result<Vec<String>> {
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
    ) -> Result<()> {
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
    pub async fn reset_mfa(&self, id: Uuid, actor: Actor) -> Result<user::Model> {
        actor.refuse_self(id, "reset the second factor of")?;
        let user = find_user(&self.db, id).await?;
        if !user.mfa_enabled && self.factor(&self.db, id).await?.is_none() {
            return Err(AccountError::MfaNotEnabled);
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
        find_user(&self.db, id).await
    }

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

    /// The second step of a sign-in: the `mfa_token` and a current TOTP code or an unused
    /// recovery code give the token pair. Wrong codes count towards the account's login
    /// throttle; the fifth for one token ends it.
    pub async fn mfa_verify(
        &self,
        mfa_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let challenge = mfa_challenge::Entity::find()
            .filter(mfa_challenge::Column::TokenHash.eq(tokens::hash_token(mfa_token.trim())))
            .one(&self.db)
            .await?
            .filter(|c| c.used_at.is_none())
            .ok_or(AccountError::MfaTokenInvalid)?;
        if challenge.expires_at <= now() {
            return Err(AccountError::MfaTokenExpired);
        }
        let user = user::Entity::find_by_id(challenge.user_id)
            .one(&self.db)
            .await?
            .filter(|u| !u.is_deleted && u.mfa_enabled)
            .ok_or(AccountError::MfaTokenInvalid)?;
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
            .ok_or(AccountError::MfaTokenInvalid)?;
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
            return Err(AccountError::MfaTokenInvalid);
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

    /// Counts a wrong code: towards the challenge's limit and the account's login throttle.
    async fn mfa_failure(
        &self,
        challenge: &mfa_challenge::Model,
        subjects: &[String],
        client: &ClientInfo,
    ) -> Result<AccountError> {
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
        Ok(AccountError::MfaCodeRejected {
            challenge_ended: ended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_account_and_key() {
        let sealer = SecretBox::new("a key of some length for the test");
        let user = Uuid::new_v4();
        let sealed = sealer.seal(user, b"secret bytes");
        assert_eq!(
            sealer.open(user, &sealed).as_deref(),
            Some(&b"secret bytes"[..])
        );
        assert_eq!(sealer.open(Uuid::new_v4(), &sealed), None);
        assert_eq!(SecretBox::new("another key").open(user, &sealed), None);
        assert_ne!(
            sealed,
            sealer.seal(user, b"secret bytes"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn recovery_codes_are_typed_loosely() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 19);
        assert_eq!(
            hash_recovery_code(&code),
            hash_recovery_code(&code.to_lowercase().replace('-', " "))
        );
        assert_ne!(
            hash_recovery_code(&code),
            hash_recovery_code(&new_recovery_code())
        );
    }

    #[test]
    fn the_otpauth_uri_names_issuer_and_account() {
        let uri = otpauth_uri("My App", "a@b.example", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/My%20App:a%40b%2Eexample?secret=ABC&issuer=My%20App&algorithm=SHA1&digits=6&period=30"
        );
    }
}
