//! The `Accounts` service and the types its operations share; each group of operations
//! lives in its own file (registration, recovery, sessions, profile), the tables in storage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr,
    sea_query::Expr,
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{
    FieldProblem,
    passwords::{HashError, PasswordHasher},
    storage::*,
    tokens::JwtKeys,
};
use crate::{
    cache::Cache,
    config::Settings,
    entities::{session, user},
    jobs::JobQueue,
    mail::Email,
    ratelimit::Limiter,
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
    /// A deletion was requested for an account already scheduled for one.
    #[error("the account is already scheduled for deletion on {}", .at.to_rfc3339())]
    DeletionAlreadyScheduled { at: DateTime<Utc> },
    /// The account asking is itself deleted (it can only be restored by an operator).
    #[error("the account is already deleted")]
    AccountDeleted,
    /// Cancelling or confirming a deletion nobody asked for.
    #[error("no deletion of this account is pending")]
    DeletionNotRequested,
    /// An operator soft-deleting an account that is already deleted.
    #[error("the account is already deleted")]
    AlreadySoftDeleted,
    /// An operator restoring an account that is not deleted.
    #[error("the account is not deleted")]
    NotSoftDeleted,
    /// An administrator tried to demote, unverify or delete their own account.
    #[error("{0}")]
    CannotModifySelf(String),
    /// The password was right and the account has a second factor: sign-in goes on at
    /// `/auth/mfa/verify` with this token.
    #[error(
        "this account signs in with a second factor: send a code with the mfa_token to /auth/mfa/verify"
    )]
    MfaRequired { mfa_token: String },
    /// A wrong or already used code in the second step of a sign-in.
    #[error("{}", if *.challenge_ended { "the code is wrong or was already used; too many wrong codes ended this sign-in, start again with the password" } else { "the code is wrong or was already used" })]
    MfaCodeRejected { challenge_ended: bool },
    /// A wrong or already used code for a change to the factor itself.
    #[error("the two-factor code is wrong or was already used")]
    WrongMfaCode,
    #[error("the mfa_token is invalid, was already used or ended after too many wrong codes")]
    MfaTokenInvalid,
    #[error("the mfa_token has expired; sign in with the password again")]
    MfaTokenExpired,
    #[error("two-factor sign-in is already on for this account")]
    MfaAlreadyEnabled,
    #[error("two-factor sign-in is not on for this account")]
    MfaNotEnabled,
    #[error("no two-factor setup is in progress: call /auth/mfa/totp/setup first")]
    MfaSetupRequired,
    /// A provider sign-in for an address whose account here never proved it owns it.
    #[error(
        "an account with this email address exists but has not verified it; sign in with its password and verify the address first"
    )]
    AccountExistsUnverified,
    /// A provider sign-in without a verified address, for which no account is linked yet.
    #[error(
        "the provider did not assert a verified email address, so no account can be made or found for it"
    )]
    ProviderEmailUnverified,
    #[error("the sign-in's state is unknown, was already used or belongs to another browser")]
    OidcStateInvalid,
    #[error("the sign-in took too long; start again")]
    OidcStateExpired,
    /// A native app's ID token (its nonce) was already used for a sign-in.
    #[error("this ID token's nonce was already used for a sign-in")]
    NonceReused,
    #[error(
        "this is the account's last way to sign in: set a password or link another provider first"
    )]
    LastSignInMethod,
    #[error("this account has no password yet: set one with /auth/set-password")]
    PasswordNotSet,
    #[error("this account already has a password: change it with /auth/change-password")]
    PasswordAlreadySet,
    #[error("database error")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Hash(#[from] HashError),
    /// `SECRET_KEY` could not be made into signing keys, or a token could not be signed.
    #[error("access tokens cannot be signed")]
    Signing(#[source] jsonwebtoken::errors::Error),
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
    ApiKey {
        key_id: Uuid,
        scopes: Vec<super::api_keys::Scope>,
    },
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
    pub fn has_scope(&self, scope: super::api_keys::Scope) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey { scopes, .. } => scopes.contains(&scope),
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
    pub(super) db: DatabaseConnection,
    pub(super) settings: Arc<Settings>,
    pub(super) hasher: PasswordHasher,
    pub(super) jwt: JwtKeys,
    pub(super) jobs: JobQueue,
    pub(super) cache: Cache,
    /// With rate limiting on: failed sign-ins counted per account, whatever address they come
    /// from, so guessing from many addresses slows down too.
    pub(super) login_throttle: Option<Limiter>,
}

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(super) fn after(d: std::time::Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

pub(super) fn is_unique_violation(e: &DbErr) -> Option<String> {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(msg)) => Some(msg),
        _ => None,
    }
}

pub(super) fn truncate(s: Option<String>, max: usize) -> Option<String> {
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
        let jwt = JwtKeys::new(&settings.auth.secret_key).map_err(AccountError::Signing)?;
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
        super::directory::Directory::new(self.db.clone(), self.cache.clone())
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
        event: AuditEvent,
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
        event: AuditEvent,
        client: &ClientInfo,
        details: Option<serde_json::Value>,
    ) -> Result<()> {
        write_audit(conn, user_id, event, client, details).await
    }
}
