//! The `Accounts` service and the types its operations share; each group of operations
//! lives in its own file (registration, recovery, sessions, profile), the tables in storage.

use std::sync::Arc;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, sea_query::Expr,
};
use uuid::Uuid;

pub use super::error::{
    AccountError, AdminError, DeletionError, IdentityError, MfaError, Result, SignInError,
};
pub use super::principal::{ClientInfo, Credential, Principal};
pub(super) use super::storage::{after, is_unique_violation, now, truncate};

use super::audit::AuditEvent;
use super::{passwords::PasswordHasher, storage::*, tokens::JwtKeys};
use crate::{
    cache::Cache,
    config::Settings,
    entities::session,
    jobs::JobQueue,
    mail::{Email, Mails},
    ratelimit::Limiter,
};

#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub session_id: Uuid,
}

pub struct NewAccount {
    pub email: String,
    pub username: String,
    pub password: String,
}

/// The account domain: what its services share (the database, the settings, the password
/// hasher, the signing keys, the job queue, the cache and the mails), and the services
/// themselves, each a handful of operations on one concern (`accounts.sessions().login(..)`).
/// The HTTP API, the CLI and the start-up bootstrap all go through them.
#[derive(Clone)]
pub struct Accounts {
    pub(super) db: DatabaseConnection,
    pub(super) settings: Arc<Settings>,
    pub(super) hasher: PasswordHasher,
    pub(super) jwt: JwtKeys,
    pub(super) jobs: JobQueue,
    pub(super) cache: Cache,
    /// The mails it sends, from their templates.
    pub(super) mails: Mails,
    /// With rate limiting on: failed sign-ins counted per account, whatever address they come
    /// from, so guessing from many addresses slows down too.
    pub(super) login_throttle: Option<Limiter>,
}

impl Accounts {
    pub fn new(
        db: DatabaseConnection,
        settings: Arc<Settings>,
        hasher: PasswordHasher,
        jobs: JobQueue,
        cache: Cache,
        mails: Mails,
    ) -> Result<Self> {
        let jwt = JwtKeys::new(&settings.auth.secret_key).map_err(AccountError::Signing)?;
        Ok(Self {
            db,
            settings,
            hasher,
            jwt,
            jobs,
            cache,
            mails,
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

/// Declares the services: each borrows the shared `Accounts` (and reads through to it), and
/// `Accounts` gives each out by its accessor.
macro_rules! services {
    ($($(#[doc = $doc:literal])+ $name:ident => $accessor:ident;)+) => {$(
        $(#[doc = $doc])+
        #[derive(Clone, Copy)]
        pub struct $name<'a>(&'a Accounts);

        impl std::ops::Deref for $name<'_> {
            type Target = Accounts;

            fn deref(&self) -> &Accounts {
                self.0
            }
        }

        impl Accounts {
            $(#[doc = $doc])+
            pub fn $accessor(&self) -> $name<'_> {
                $name(self)
            }
        }
    )+};
}

services! {
    /// Making an account and proving its address (`registration.rs`).
    Registration => registration;
    /// Signing in (the password, then a second factor when the account has one), refreshing,
    /// authenticating access tokens, signing out and the session list (`sessions.rs`,
    /// `second_step.rs`).
    Sessions => sessions;
    /// Forgotten and changed passwords (`recovery.rs`).
    Passwords => passwords;
    /// Two-factor sign-in: TOTP factors and recovery codes (`mfa.rs`).
    Mfa => mfa;
    /// Signing in with OpenID Connect providers and the identities they link (`identities.rs`).
    Identities => identities;
    /// Keys for scripts and integrations (`api_keys.rs`).
    ApiKeys => api_keys;
    /// Deleting one's account after a grace period, and cancelling it (`deletion.rs`).
    Deletion => deletion;
    /// What administrators and operators do to accounts (`admin.rs`).
    Admin => admin;
    /// One's own username and email address (`profile.rs`, `email_change.rs`).
    Profile => profile;
}
