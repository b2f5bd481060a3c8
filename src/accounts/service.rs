use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    FieldProblem,
    passwords::{HashError, PasswordHasher},
    tokens::{self, AccessClaims, JwtError, JwtKeys, Purpose},
    validation,
};
use crate::{
    cache::Cache,
    config::Settings,
    db,
    entities::{audit_log, one_time_token, refresh_token, session, user},
    jobs::JobQueue,
    mail::{Email, templates},
    ratelimit::{self, Limiter},
};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldProblem>),
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error("this username is already taken")]
    UsernameTaken,
    #[error("incorrect email/username or password")]
    InvalidCredentials,
    #[error("too many failed sign-ins for this account; retry in {retry_after_secs} s")]
    TooManyFailedLogins { retry_after_secs: u64 },
    /// The limiter that guards sign-ins cannot be asked (`RATE_LIMIT_FAIL_OPEN=false`).
    #[error("the rate limiter cannot reach redis")]
    LimiterUnavailable,
    #[error("the email address of this account is not verified yet")]
    EmailNotVerified,
    #[error("the current password is incorrect")]
    WrongPassword,
    #[error("the token is invalid or was already used")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the session has ended")]
    SessionRevoked,
    #[error("this API key was revoked")]
    ApiKeyRevoked,
    #[error("not found")]
    NotFound,
    /// The request contradicts the account's state, e.g. cancelling a deletion nobody asked for.
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// An administrator tried to demote, unverify or delete their own account.
    #[error("{0}")]
    CannotModifySelf(String),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = AccountError> = std::result::Result<T, E>;

/// Where a request came from, for the audit log and the session list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub session_id: Uuid,
}

/// How a request authenticated.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An access token of this session.
    Session(Uuid),
    /// An API key, acting only within its scopes.
    ApiKey { key_id: Uuid, scopes: Vec<String> },
}

/// Who is making an authenticated request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: user::Model,
    pub credential: Credential,
    /// The users version Redis reported while authenticating, when it did: the request's view
    /// of the user cache, fresh as of the request's start.
    pub users_version: Option<u64>,
}

impl Principal {
    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session(id) => Some(id),
            Credential::ApiKey { .. } => None,
        }
    }

    /// Whether the credential allows `scope`: a session allows everything its user may do.
    pub fn has_scope(&self, scope: &str) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey { scopes, .. } => scopes.iter().any(|s| s == scope),
        }
    }
}

pub struct NewAccount {
    pub email: String,
    pub username: String,
    pub password: String,
}

/// The account operations, shared by the HTTP API, the CLI and the start-up bootstrap.
#[derive(Clone)]
pub struct Accounts {
    db: DatabaseConnection,
    settings: Arc<Settings>,
    hasher: PasswordHasher,
    jwt: JwtKeys,
    jobs: JobQueue,
    cache: Cache,
    /// With rate limiting on: failed sign-ins counted per account, whatever address they come
    /// from, so guessing from many addresses slows down too.
    login_throttle: Option<Limiter>,
}

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

fn after(d: std::time::Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(super) fn is_unique_violation(e: &DbErr) -> Option<String> {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(msg)) => Some(msg),
        _ => None,
    }
}

fn truncate(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| s.chars().take(max).collect())
}

impl Accounts {
    pub fn new(
        db: DatabaseConnection,
        settings: Arc<Settings>,
        hasher: PasswordHasher,
        jobs: JobQueue,
        cache: Cache,
    ) -> Result<Self> {
        let jwt = JwtKeys::new(&settings.auth.secret_key)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        Ok(Self {
            db,
            settings,
            hasher,
            jwt,
            jobs,
            cache,
            login_throttle: None,
        })
    }

    /// Limits failed sign-ins per account with `limiter` (`ENABLE_RATE_LIMITING`).
    pub fn throttling_logins(mut self, limiter: Limiter) -> Self {
        self.login_throttle = Some(limiter);
        self
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Reads of the accounts: lists, one account, counts.
    pub fn directory(&self) -> super::directory::Directory {
        super::directory::Directory::new(self.db.clone())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Marks again every session revoked within an access token's lifetime: run when Redis
    /// comes back, for the revocations it missed while away.
    pub async fn resync_revocations(&self) -> Result<usize> {
        let since = now()
            - chrono::Duration::from_std(self.settings.auth.access_token_ttl)
                .unwrap_or(chrono::Duration::MAX);
        let ids: Vec<Uuid> = session::Entity::find()
            .filter(session::Column::RevokedAt.gt(since))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        self.cache.mark_revoked(&ids).await;
        Ok(ids.len())
    }

    /// After a committed write to users: cached user pages are stale.
    pub(super) async fn users_changed(&self) {
        self.cache.invalidate_users().await;
    }

    /// Ends one session. The revocation is marked for every instance before the transaction
    /// commits: should the commit fail, the session is refused rather than wrongly accepted.
    pub(super) async fn revoke_session_row(
        &self,
        conn: &impl ConnectionTrait,
        session_id: Uuid,
        reason: &str,
    ) -> Result<()> {
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now()))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.eq(session_id))
            .filter(session::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        self.cache.mark_revoked(&[session_id]).await;
        Ok(())
    }

    /// Ends every live session of the user but `except`; returns how many ended.
    pub(super) async fn revoke_sessions(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        except: Option<Uuid>,
        reason: &str,
    ) -> Result<u64> {
        let mut live = session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null());
        if let Some(keep) = except {
            live = live.filter(session::Column::Id.ne(keep));
        }
        let ids: Vec<Uuid> = live.all(conn).await?.into_iter().map(|s| s.id).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        session::Entity::update_many()
            .col_expr(session::Column::RevokedAt, Expr::value(now()))
            .col_expr(session::Column::RevokedReason, Expr::value(reason))
            .filter(session::Column::Id.is_in(ids.clone()))
            .filter(session::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        self.cache.mark_revoked(&ids).await;
        Ok(ids.len() as u64)
    }

    /// Queues a mail in the caller's transaction, so it commits (or not) with the change.
    pub(super) async fn queue_mail(&self, txn: &impl ConnectionTrait, email: Email) -> Result<()> {
        self.jobs.enqueue(txn, email.into_job()).await?;
        Ok(())
    }

    /// Commits and wakes the job dispatcher for the mail just queued.
    pub(super) async fn commit_and_dispatch(
        &self,
        txn: sea_orm::DatabaseTransaction,
    ) -> Result<()> {
        txn.commit().await?;
        self.jobs.wake();
        Ok(())
    }

    /// Audits an event about one object (a key, a session) of the user.
    pub(super) async fn audit_event(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        event: &str,
        client: &ClientInfo,
        object_id: Uuid,
    ) -> Result<()> {
        self.audit(
            conn,
            Some(user_id),
            event,
            client,
            Some(serde_json::json!({"id": object_id})),
        )
        .await
    }

    pub(super) async fn audit(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Option<Uuid>,
        event: &str,
        client: &ClientInfo,
        details: Option<serde_json::Value>,
    ) -> Result<()> {
        write_audit(conn, user_id, event, client, details).await
    }

    // ---- registration and verification -------------------------------------------------------

    /// Validates every field, reporting all problems at once, and checks uniqueness.
    pub(super) async fn check_new_account(&self, new: &NewAccount) -> Result<(String, String)> {
        let mut problems = Vec::new();
        let email = validation::normalise_email(&new.email)
            .map_err(|p| problems.push(p))
            .ok();
        let username = validation::validate_username(&new.username)
            .map_err(|p| problems.extend(p))
            .ok();
        if let Err(p) = validation::validate_password("password", &new.password) {
            problems.extend(p);
        }
        let (Some(email), Some(username)) = (email, username) else {
            return Err(AccountError::Validation(problems));
        };
        if !problems.is_empty() {
            return Err(AccountError::Validation(problems));
        }
        if user::Entity::find()
            .filter(user::Column::Email.eq(&email))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(AccountError::EmailTaken);
        }
        if user::Entity::find()
            .filter(user::Column::UsernameLower.eq(username.to_lowercase()))
            .one(&self.db)
            .await?
            .is_some()
        {
            return Err(AccountError::UsernameTaken);
        }
        Ok((email, username))
    }

    pub async fn register(&self, new: NewAccount, client: &ClientInfo) -> Result<user::Model> {
        let (email, username) = self.check_new_account(&new).await?;
        let hash = self.hasher.hash(new.password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, false, false).await?;
        let raw = self
            .issue_one_time_token(&txn, user.id, Purpose::VerifyEmail)
            .await?;
        self.audit(&txn, Some(user.id), "register", client, None)
            .await?;
        self.queue_mail(&txn, self.verification_mail(&user, &raw))
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    fn verification_mail(&self, user: &user::Model, raw: &str) -> Email {
        templates::verify_email(
            &self.settings.project_name,
            &user.email,
            &user.username,
            &format!(
                "{}/verify-email?token={raw}",
                self.settings.auth.frontend_url
            ),
            self.settings.auth.verification_token_ttl.as_secs() / 3600,
        )
    }

    fn password_changed_mail(&self, user: &user::Model) -> Email {
        templates::password_changed(
            &self.settings.project_name,
            &user.email,
            &user.username,
            &now().to_rfc3339(),
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
        // each must keep working until the deletion is cancelled.
        if purpose != Purpose::CancelDeletion {
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
            .filter(one_time_token::Column::Purpose.eq(purpose.as_str()))
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

    pub async fn verify_email(&self, raw: &str, client: &ClientInfo) -> Result<user::Model> {
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
        self.audit(&txn, Some(user.id), "email_verified", client, None)
            .await?;
        if !was_verified {
            self.queue_mail(
                &txn,
                templates::welcome(
                    &self.settings.project_name,
                    &user.email,
                    &user.username,
                    &self.settings.auth.frontend_url,
                ),
            )
            .await?;
        }
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(user)
    }

    /// Sends a fresh verification mail when the account exists and is unverified; says nothing
    /// either way so the endpoint cannot be used to discover accounts.
    pub async fn resend_verification(&self, email: &str) -> Result<()> {
        // A malformed address is the caller's mistake, said as such; whether an account has a
        // well-formed one is never told.
        let email =
            validation::normalise_email(email).map_err(|p| AccountError::Validation(vec![p]))?;
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

    // ---- passwords ---------------------------------------------------------------------------

    pub async fn forgot_password(&self, email: &str, client: &ClientInfo) -> Result<()> {
        // A malformed address is the caller's mistake, said as such; whether an account has a
        // well-formed one is never told.
        let email =
            validation::normalise_email(email).map_err(|p| AccountError::Validation(vec![p]))?;
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
            "password_reset_requested",
            client,
            None,
        )
        .await?;
        self.queue_mail(
            &txn,
            templates::password_reset(
                &self.settings.project_name,
                &user.email,
                &user.username,
                &format!(
                    "{}/reset-password?token={raw}",
                    self.settings.auth.frontend_url
                ),
                self.settings.auth.password_reset_token_ttl.as_secs() / 60,
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
        validation::validate_password("new_password", &new_password)
            .map_err(AccountError::Validation)?;
        let hash = self.hasher.hash(new_password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user_id = self
            .consume_one_time_token(&txn, raw, Purpose::ResetPassword)
            .await?;
        let user = find_user(&txn, user_id).await?;
        let mut active: user::ActiveModel = user.into();
        active.password_hash = Set(hash);
        // Following the mailed link proves the address belongs to the user.
        active.is_verified = Set(true);
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.revoke_sessions(&txn, user.id, None, "password_reset")
            .await?;
        self.audit(&txn, Some(user.id), "password_reset", client, None)
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
        validation::validate_password("new_password", &new_password)
            .map_err(AccountError::Validation)?;
        if current == new_password {
            return Err(AccountError::Validation(vec![FieldProblem::new(
                "new_password",
                "must differ from the current password",
            )]));
        }
        let user = find_user(&self.db, principal.user.id).await?;
        if !self
            .hasher
            .verify(current, user.password_hash.clone())
            .await?
        {
            self.audit(
                &self.db,
                Some(user.id),
                "password_change_failed",
                client,
                None,
            )
            .await?;
            return Err(AccountError::WrongPassword);
        }
        let hash = self.hasher.hash(new_password).await?;
        let txn = db::begin_write(&self.db).await?;
        let mut active: user::ActiveModel = user.into();
        active.password_hash = Set(hash);
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.revoke_sessions(&txn, user.id, principal.session_id(), "password_changed")
            .await?;
        self.audit(&txn, Some(user.id), "password_changed", client, None)
            .await?;
        self.queue_mail(&txn, self.password_changed_mail(&user))
            .await?;
        self.commit_and_dispatch(txn).await?;
        Ok(())
    }

    // ---- login and sessions ------------------------------------------------------------------

    /// Signs in with an email address or username and the password. With a login throttle,
    /// an account with too many recent failures is refused before its password is checked.
    pub async fn login(
        &self,
        identifier: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let Some(limiter) = &self.login_throttle else {
            return self.login_unthrottled(identifier, password, client).await;
        };
        let account = ratelimit::account_subject(identifier);
        let unavailable = |_| AccountError::LimiterUnavailable;
        let d = limiter
            .check(ratelimit::ACCOUNT_FAILURES, &account, false)
            .await
            .map_err(unavailable)?;
        if !d.allowed {
            crate::metrics::metrics()
                .rate_limited
                .with_label_values(&[ratelimit::ACCOUNT_FAILURES.name])
                .inc();
            return Err(AccountError::TooManyFailedLogins {
                retry_after_secs: d.retry_after_secs,
            });
        }
        let outcome = self.login_unthrottled(identifier, password, client).await;
        match &outcome {
            Err(AccountError::InvalidCredentials) => {
                let _ = limiter
                    .check(ratelimit::ACCOUNT_FAILURES, &account, true)
                    .await;
            }
            Ok(_) => limiter.reset(ratelimit::ACCOUNT_FAILURES, &account).await,
            Err(_) => {}
        }
        outcome
    }

    async fn login_unthrottled(
        &self,
        identifier: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<TokenPair> {
        let identifier = identifier.trim();
        let found = if identifier.contains('@') {
            find_user_by_email(&self.db, &identifier.to_lowercase()).await?
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
                "login_failed",
                client,
                Some(serde_json::json!({"reason": "unknown_account"})),
            )
            .await?;
            return Err(AccountError::InvalidCredentials);
        };
        if !self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            self.audit(
                &self.db,
                Some(user.id),
                "login_failed",
                client,
                Some(serde_json::json!({"reason": "wrong_password"})),
            )
            .await?;
            return Err(AccountError::InvalidCredentials);
        }
        if self.settings.auth.require_email_verification && !user.is_verified {
            self.audit(
                &self.db,
                Some(user.id),
                "login_failed",
                client,
                Some(serde_json::json!({"reason": "email_not_verified"})),
            )
            .await?;
            return Err(AccountError::EmailNotVerified);
        }
        let txn = db::begin_write(&self.db).await?;
        let pair = self.open_session(&txn, &user, client).await?;
        self.audit(
            &txn,
            Some(user.id),
            "login_success",
            client,
            Some(serde_json::json!({"session_id": pair.session_id})),
        )
        .await?;
        txn.commit().await?;
        Ok(pair)
    }

    async fn open_session(
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
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: raw,
            expires_in: ttl,
            session_id: session.id,
        })
    }

    /// Exchanges a refresh token for a new pair. A token that was already exchanged means it was
    /// copied: the whole session is revoked, so neither the thief nor the user can go on with it.
    pub async fn refresh(&self, raw: &str, client: &ClientInfo) -> Result<TokenPair> {
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
                    "refresh_token_reuse",
                    client,
                    Some(serde_json::json!({"session_id": session.id})),
                )
                .await?;
                txn.commit().await?;
            }
            return Err(AccountError::TokenInvalid);
        }
        if !session.is_live(at) {
            return Err(AccountError::SessionRevoked);
        }
        if token.expires_at <= at {
            return Err(AccountError::TokenExpired);
        }
        let user = find_user(&txn, session.user_id).await?;
        if user.is_deleted {
            return Err(AccountError::SessionRevoked);
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
    pub async fn authenticate(&self, access_token: &str) -> Result<Principal> {
        let claims = self.jwt.verify(access_token).map_err(|e| match e {
            JwtError::Expired => AccountError::TokenExpired,
            JwtError::Invalid => AccountError::TokenInvalid,
        })?;
        // With Redis: one round trip answers whether the session was revoked (on any
        // instance) and whether the remembered account row is still current.
        let state = self.cache.session_state(claims.sid).await;
        if let Some((revoked, version)) = state {
            if revoked {
                return Err(AccountError::SessionRevoked);
            }
            if let Some(user) = self.cache.snapshot(claims.sub, version) {
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
            return Err(AccountError::SessionRevoked);
        }
        let user = user::Entity::find_by_id(claims.sub)
            .one(&self.db)
            .await?
            .filter(|u| !u.is_deleted)
            .ok_or(AccountError::SessionRevoked)?;
        if let Some((_, version)) = state {
            self.cache.remember(&user, version);
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
    ) -> Result<()> {
        let txn = db::begin_write(&self.db).await?;
        self.revoke_session_row(&txn, session_id, "logout").await?;
        self.audit(
            &txn,
            Some(user_id),
            "logout",
            client,
            Some(serde_json::json!({"session_id": session_id})),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Logs out the session a refresh token belongs to; an unknown token is refused.
    pub async fn logout_with_refresh(&self, raw: &str, client: &ClientInfo) -> Result<()> {
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

    pub async fn list_sessions(&self, user_id: Uuid) -> Result<Vec<session::Model>> {
        let at = now();
        Ok(session::Entity::find()
            .filter(session::Column::UserId.eq(user_id))
            .filter(session::Column::RevokedAt.is_null())
            .order_by_desc(session::Column::LastUsedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|s| s.is_live(at))
            .collect())
    }

    /// Revokes one of the user's own sessions; another user's session id is "not found".
    pub async fn revoke_session(
        &self,
        principal: &Principal,
        session_id: Uuid,
        client: &ClientInfo,
    ) -> Result<()> {
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
            "session_revoked",
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
    ) -> Result<u64> {
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
            "sessions_revoked",
            client,
            Some(serde_json::json!({"count": n})),
        )
        .await?;
        txn.commit().await?;
        Ok(n)
    }

    // ---- profile -----------------------------------------------------------------------------

    pub async fn update_username(
        &self,
        principal: &Principal,
        username: &str,
    ) -> Result<user::Model> {
        let username = validation::validate_username(username).map_err(AccountError::Validation)?;
        let user = find_user(&self.db, principal.user.id).await?;
        if user.username == username {
            return Ok(user);
        }
        let mut active: user::ActiveModel = user.into();
        active.username = Set(username.clone());
        active.username_lower = Set(username.to_lowercase());
        active.updated_at = Set(now());
        let user = active
            .update(&self.db)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                Some(_) => AccountError::UsernameTaken,
                None => e.into(),
            })?;
        self.users_changed().await;
        Ok(user)
    }

    /// Creates the configured first superuser (verified) unless that email already exists.
    pub async fn ensure_first_superuser(&self) -> Result<Option<user::Model>> {
        let Some(first) = self.settings.auth.first_superuser.clone() else {
            return Ok(None);
        };
        let email = validation::normalise_email(&first.email)
            .map_err(|p| AccountError::Validation(vec![p]))?;
        if find_user_by_email(&self.db, &email).await?.is_some() {
            return Ok(None);
        }
        let (username, password) = (first.username, first.password);
        let hash = self.hasher.hash(password).await?;
        let user = insert_user(&self.db, &email, &username, hash, true, true).await?;
        self.audit(
            &self.db,
            Some(user.id),
            "superuser_created",
            &ClientInfo::default(),
            None,
        )
        .await?;
        self.users_changed().await;
        Ok(Some(user))
    }

    /// Creates a verified superuser after checking every account rule (operator CLI).
    pub async fn create_superuser(
        &self,
        email: &str,
        username: &str,
        password: String,
    ) -> Result<user::Model> {
        let (email, username) = self
            .check_new_account(&NewAccount {
                email: email.to_string(),
                username: username.to_string(),
                password: password.clone(),
            })
            .await?;
        let hash = self.hasher.hash(password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, true, true).await?;
        self.audit(
            &txn,
            Some(user.id),
            "superuser_created",
            &ClientInfo::default(),
            None,
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user)
    }
}

/// Finds a user by email (case-insensitive) or by id.
pub async fn find_user_by_ident(
    conn: &impl ConnectionTrait,
    ident: &str,
) -> Result<Option<user::Model>> {
    if let Ok(id) = Uuid::parse_str(ident.trim()) {
        return Ok(user::Entity::find_by_id(id).one(conn).await?);
    }
    find_user_by_email(conn, &ident.trim().to_lowercase()).await
}

pub async fn find_user(conn: &impl ConnectionTrait, id: Uuid) -> Result<user::Model> {
    user::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(AccountError::NotFound)
}

pub async fn find_user_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(conn)
        .await?)
}

pub(super) async fn insert_user(
    conn: &impl ConnectionTrait,
    email: &str,
    username: &str,
    password_hash: String,
    is_superuser: bool,
    is_verified: bool,
) -> Result<user::Model> {
    let at = now();
    user::ActiveModel {
        id: Set(Uuid::new_v4()),
        email: Set(email.to_string()),
        username: Set(username.to_string()),
        username_lower: Set(username.to_lowercase()),
        password_hash: Set(password_hash),
        is_superuser: Set(is_superuser),
        is_verified: Set(is_verified),
        created_at: Set(at),
        updated_at: Set(at),
        is_deleted: Set(false),
        deleted_at: Set(None),
        deletion_scheduled_for: Set(None),
        deletion_requested_at: Set(None),
        deletion_reminder_days: Set(None),
        deletion_reason: Set(None),
        deleted_by: Set(None),
    }
    .insert(conn)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        // Two registrations racing past the up-front check: the index has the last word.
        Some(msg) if msg.contains("email") => AccountError::EmailTaken,
        Some(_) => AccountError::UsernameTaken,
        None => e.into(),
    })
}

pub(super) async fn write_audit(
    conn: &impl ConnectionTrait,
    user_id: Option<Uuid>,
    event: &str,
    client: &ClientInfo,
    details: Option<serde_json::Value>,
) -> Result<()> {
    // Nothing is read back: no RETURNING round trip for a row nobody looks at here.
    audit_log::Entity::insert(audit_log::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        event: Set(event.to_string()),
        ip_address: Set(truncate(client.ip.clone(), 64)),
        user_agent: Set(truncate(client.user_agent.clone(), 512)),
        details: Set(details),
        created_at: Set(now()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Stores a new one-time token (its hash) and returns the raw token for the mail.
pub(super) async fn insert_one_time_token(
    conn: &impl ConnectionTrait,
    settings: &Settings,
    user_id: Uuid,
    purpose: Purpose,
) -> Result<String> {
    let ttl = match purpose {
        Purpose::VerifyEmail => settings.auth.verification_token_ttl,
        Purpose::ResetPassword => settings.auth.password_reset_token_ttl,
        Purpose::ConfirmDeletion => settings.auth.deletion_token_ttl,
        // Valid for as long as there can be a scheduled deletion to cancel.
        Purpose::CancelDeletion => std::time::Duration::from_secs(
            86_400 * (u64::from(settings.auth.deletion_grace_period_days) + 1),
        ),
    };
    let raw = tokens::new_opaque_token();
    one_time_token::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().to_string()),
        token_hash: Set(tokens::hash_token(&raw)),
        created_at: Set(now()),
        expires_at: Set(after(ttl)),
        used_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(raw)
}

/// Makes the user's unused tokens of these purposes unusable.
pub(super) async fn retire_tokens(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    purposes: &[Purpose],
) -> Result<()> {
    one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::UsedAt, Expr::value(now()))
        .filter(one_time_token::Column::UserId.eq(user_id))
        .filter(one_time_token::Column::Purpose.is_in(purposes.iter().map(|p| p.as_str())))
        .filter(one_time_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}
