//! Signing in and the sessions it opens: login (and its throttle), refresh-token rotation,
//! logout, revocation, and authenticating access tokens and API keys.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, sea_query::Expr,
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{
    Session, User,
    service::*,
    storage::*,
    tokens::{self, AccessClaims, JwtError},
};
use crate::values::EmailAddress;
use crate::{
    db,
    entities::{View, refresh_token, session, user},
    ratelimit::{self},
};

/// Refuses a sign-in for an account (`subject`) with too many recent failures, without
/// counting this attempt.
pub(super) async fn refuse_throttled(
    limiter: &ratelimit::Limiter,
    subject: &str,
) -> Result<(), SignInError> {
    let d = limiter
        .check(limiter.rules().account_failures, subject, false)
        .await
        .map_err(|_| SignInError::LimiterUnavailable)?;
    if d.allowed {
        return Ok(());
    }
    crate::metrics::metrics()
        .rate_limited
        .with_label_values(&[limiter.rules().account_failures.name])
        .inc();
    Err(SignInError::TooManyFailedLogins {
        retry_after_secs: d.retry_after_secs,
    })
}

impl Accounts {
    async fn login_unthrottled(
        &self,
        identifier: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<TokenPair, SignInError> {
        let identifier = identifier.trim();
        let found = if identifier.contains('@') {
            // An address that breaks the rules belongs to no account: a dummy check follows.
            match EmailAddress::parse(identifier) {
                Ok(email) => find_user_by_email(&self.db, &email).await?,
                Err(_) => None,
            }
        } else {
            user::Entity::find()
                .filter(user::Column::UsernameLower.eq(identifier.to_lowercase()))
                .one(&self.db)
                .await?
        };
        let Some(user) = found.filter(|u| !u.is_deleted) else {
            self.hasher.verify_dummy(password).await?;
            self.audit(
                &self.db,
                None,
                AuditEvent::LoginFailed,
                client,
                Some(serde_json::json!({"reason": "unknown_account"})),
            )
            .await?;
            return Err(SignInError::InvalidCredentials);
        };
        if !user.has_password() {
            // Made by a provider sign-in: no password is right, and it takes as long to say.
            self.hasher.verify_dummy(password).await?;
            self.audit(
                &self.db,
                Some(user.id),
                AuditEvent::LoginFailed,
                client,
                Some(serde_json::json!({"reason": "no_password"})),
            )
            .await?;
            return Err(SignInError::InvalidCredentials);
        }
        if !self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            self.audit(
                &self.db,
                Some(user.id),
                AuditEvent::LoginFailed,
                client,
                Some(serde_json::json!({"reason": "wrong_password"})),
            )
            .await?;
            return Err(SignInError::InvalidCredentials);
        }
        if self.settings.auth.require_email_verification && !user.is_verified {
            self.audit(
                &self.db,
                Some(user.id),
                AuditEvent::LoginFailed,
                client,
                Some(serde_json::json!({"reason": "email_not_verified"})),
            )
            .await?;
            return Err(SignInError::EmailNotVerified);
        }
        self.finish_sign_in(&user, client, serde_json::json!({"method": "password"}))
            .await
    }

    /// The first factor was proven (a password, a provider): opens the session, or with a
    /// second factor on answers `MfaRequired` for the second step. `details` go to the audit.
    pub(super) async fn finish_sign_in(
        &self,
        user: &user::Model,
        client: &ClientInfo,
        mut details: serde_json::Value,
    ) -> Result<TokenPair, SignInError> {
        if user.mfa_enabled {
            let mfa_token = self.open_mfa_challenge(user, client).await?;
            return Err(SignInError::MfaRequired { mfa_token });
        }
        let txn = db::begin_write(&self.db).await?;
        let pair = self.open_session(&txn, user, client).await?;
        details["session_id"] = serde_json::json!(pair.session_id);
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::LoginSuccess,
            client,
            Some(details),
        )
        .await?;
        txn.commit().await?;
        Ok(pair)
    }

    pub(super) async fn open_session(
        &self,
        conn: &impl ConnectionTrait,
        user: &user::Model,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let at = now();
        // Concurrent logins of one user queue on the user row, so the session limit below holds
        // exactly. (SQLite's IMMEDIATE transactions already serialise all writers.)
        if conn.get_database_backend() == DbBackend::Postgres {
            user::Entity::find_by_id(user.id)
                .lock_exclusive()
                .one(conn)
                .await?;
        }
        // Keep at most MAX_SESSIONS_PER_USER live sessions, counting the one being opened.
        let live: Vec<session::Model> = session::Entity::find()
            .filter(session::Column::UserId.eq(user.id))
            .filter(session::Column::RevokedAt.is_null())
            .order_by_asc(session::Column::CreatedAt)
            .all(conn)
            .await?
            .into_iter()
            .filter(|s| s.is_live(at))
            .collect();
        let max = self.settings.auth.max_sessions_per_user as usize;
        if live.len() >= max {
            let excess: Vec<Uuid> = live
                .iter()
                .take(live.len() + 1 - max)
                .map(|s| s.id)
                .collect();
            session::Entity::update_many()
                .col_expr(session::Column::RevokedAt, Expr::value(at))
                .col_expr(session::Column::RevokedReason, Expr::value("session_limit"))
                .filter(session::Column::Id.is_in(excess.clone()))
                .exec(conn)
                .await?;
            self.cache.mark_revoked(&excess).await;
        }
        let session = session::Model {
            id: Uuid::new_v4(),
            user_id: user.id,
            created_at: at,
            last_used_at: at,
            expires_at: after(self.settings.auth.refresh_token_ttl),
            revoked_at: None,
            revoked_reason: None,
            device_info: truncate(client.user_agent.clone(), 512),
            ip_address: truncate(client.ip.clone(), 64),
        };
        session::Entity::insert(session::ActiveModel::from(session.clone()))
            .exec_without_returning(conn)
            .await?;
        self.issue_pair(conn, user.id, &session).await
    }

    async fn issue_pair(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        session: &session::Model,
    ) -> Result<TokenPair> {
        let raw = tokens::new_opaque_token();
        refresh_token::Entity::insert(refresh_token::ActiveModel {
            id: Set(Uuid::new_v4()),
            session_id: Set(session.id),
            token_hash: Set(tokens::hash_token(&raw)),
            created_at: Set(now()),
            // A refresh token never outlives its session.
            expires_at: Set(after(self.settings.auth.refresh_token_ttl).min(session.expires_at)),
            used_at: Set(None),
        })
        .exec_without_returning(conn)
        .await?;
        let issued = now().timestamp();
        let ttl = self.settings.auth.access_token_ttl.as_secs();
        let access = self
            .jwt
            .issue(&AccessClaims {
                sub: user_id,
                sid: session.id,
                iat: issued,
                exp: issued + ttl as i64,
                jti: Uuid::new_v4(),
            })
            .map_err(AccountError::Signing)?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: raw,
            expires_in: ttl,
            session_id: session.id,
        })
    }
}

impl super::Sessions<'_> {
    /// Signs in with an email address or username and the password. With a login throttle,
    /// an account with too many recent failures is refused before its password is checked.
    pub async fn login(
        &self,
        identifier: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<TokenPair, SignInError> {
        let Some(limiter) = &self.login_throttle else {
            return self.login_unthrottled(identifier, password, client).await;
        };
        let account = ratelimit::account_subject(identifier);
        refuse_throttled(limiter, &account).await?;
        let outcome = self.login_unthrottled(identifier, password, client).await;
        match &outcome {
            Err(SignInError::InvalidCredentials) => {
                let _ = limiter
                    .check(limiter.rules().account_failures, &account, true)
                    .await;
            }
            Ok(_) => {
                limiter
                    .reset(limiter.rules().account_failures, &account)
                    .await
            }
            Err(_) => {}
        }
        outcome
    }

    /// Exchanges a refresh token for a new pair. A token that was already exchanged means it was
    /// copied: the whole session is revoked, so neither the thief nor the user can go on with it.
    pub async fn refresh(&self, raw: &str, client: &ClientInfo) -> Result<TokenPair, SignInError> {
        let txn = db::begin_write(&self.db).await?;
        let token = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(tokens::hash_token(raw.trim())))
            .one(&txn)
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        let session = session::Entity::find_by_id(token.session_id)
            .one(&txn)
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        let at = now();
        let claimed = if token.used_at.is_none() {
            refresh_token::Entity::update_many()
                .col_expr(refresh_token::Column::UsedAt, Expr::value(at))
                .filter(refresh_token::Column::Id.eq(token.id))
                .filter(refresh_token::Column::UsedAt.is_null())
                .exec(&txn)
                .await?
                .rows_affected
                == 1
        } else {
            false
        };
        if !claimed {
            if session.revoked_at.is_none() {
                self.revoke_session_row(&txn, session.id, "refresh_token_reuse")
                    .await?;
                self.audit(
                    &txn,
                    Some(session.user_id),
                    AuditEvent::RefreshTokenReuse,
                    client,
                    Some(serde_json::json!({"session_id": session.id})),
                )
                .await?;
                txn.commit().await?;
            }
            return Err(AccountError::TokenInvalid.into());
        }
        if !session.is_live(at) {
            return Err(SignInError::SessionRevoked);
        }
        if token.expires_at <= at {
            return Err(AccountError::TokenExpired.into());
        }
        let user = find_user(&txn, session.user_id).await?;
        if user.is_deleted {
            return Err(SignInError::SessionRevoked);
        }
        let mut active: session::ActiveModel = session.into();
        active.last_used_at = Set(at);
        if let Some(ip) = &client.ip {
            active.ip_address = Set(truncate(Some(ip.clone()), 64));
        }
        let session = active.update(&txn).await?;
        let pair = self.issue_pair(&txn, user.id, &session).await?;
        txn.commit().await?;
        Ok(pair)
    }

    /// Resolves an access token to its user, refusing it at once when its session has ended.
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal, SignInError> {
        let claims = self.jwt.verify(access_token).map_err(|e| match e {
            JwtError::Expired => AccountError::TokenExpired,
            JwtError::Invalid => AccountError::TokenInvalid,
        })?;
        // With Redis: one round trip answers whether the session was revoked (on any
        // instance) and whether the remembered account row is still current.
        let state = self.cache.session_state(claims.sid).await;
        if let Some((revoked, version)) = state {
            if revoked {
                return Err(SignInError::SessionRevoked);
            }
            if let Some(user) = self.cache.snapshot::<User>(claims.sub, version) {
                return Ok(Principal {
                    user,
                    credential: Credential::Session(claims.sid),
                    users_version: Some(version),
                });
            }
        }
        let session = session::Entity::find_by_id(claims.sid)
            .one(&self.db)
            .await?
            .filter(|s| s.user_id == claims.sub)
            .ok_or(AccountError::TokenInvalid)?;
        if !session.is_live(now()) {
            return Err(SignInError::SessionRevoked);
        }
        let user = user::Entity::find_by_id(claims.sub)
            .one(&self.db)
            .await?
            .filter(|u| !u.is_deleted)
            .ok_or(SignInError::SessionRevoked)?;
        let user = user.view();
        if let Some((_, version)) = state {
            self.cache.remember(user.id, user.clone(), version);
        }
        Ok(Principal {
            user,
            credential: Credential::Session(session.id),
            users_version: state.map(|(_, v)| v),
        })
    }

    pub async fn logout_session(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        client: &ClientInfo,
    ) -> Result<(), SignInError> {
        let txn = db::begin_write(&self.db).await?;
        self.revoke_session_row(&txn, session_id, "logout").await?;
        self.audit(
            &txn,
            Some(user_id),
            AuditEvent::Logout,
            client,
            Some(serde_json::json!({"session_id": session_id})),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Logs out the session a refresh token belongs to; an unknown token is refused.
    pub async fn logout_with_refresh(
        &self,
        raw: &str,
        client: &ClientInfo,
    ) -> Result<(), SignInError> {
        let token = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(tokens::hash_token(raw.trim())))
            .one(&self.db)
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        let session = session::Entity::find_by_id(token.session_id)
            .one(&self.db)
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        self.logout_session(session.user_id, session.id, client)
            .await
    }

    pub async fn list_sessions(&self, user_id: Uuid) -> Result<Vec<Session>, SignInError> {
        let at = now();
        Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .order_by_desc(session::Column::LastUsedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|s| s.is_live(at))
            .map(View::view)
            .collect())
    }

    /// Revokes one of the user's own sessions; another user's session id is "not found".
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: Uuid,
        client: &ClientInfo,
    ) -> Result<(), SignInError> {
        let session = session::Entity::find_by_id(session_id)
            .one(&self.db)
            .await?
            .filter(|s| s.user_id == principal.user.id && s.revoked_at.is_none())
            .ok_or(AccountError::NotFound)?;
        let txn = db::begin_write(&self.db).await?;
        self.revoke_session_row(&txn, session.id, "revoked_by_user")
            .await?;
        self.audit(
            &txn,
            Some(principal.user.id),
            AuditEvent::SessionRevoked,
            client,
            Some(serde_json::json!({"session_id": session.id})),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Revokes every session of the user but the current one; returns how many ended.
    pub async fn revoke_other_sessions(
        &self,
        principal: &Principal,
        client: &ClientInfo,
    ) -> Result<u64, SignInError> {
        let txn = db::begin_write(&self.db).await?;
        let n = self
            .revoke_sessions(
                &txn,
                principal.user.id,
                principal.session_id(),
                "revoked_by_user",
            )
            .await?;
        self.audit(
            &txn,
            Some(principal.user.id),
            AuditEvent::SessionsRevoked,
            client,
            Some(serde_json::json!({"count": n})),
        )
        .await?;
        txn.commit().await?;
        Ok(n)
    }
}
