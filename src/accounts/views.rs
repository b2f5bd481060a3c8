//! What the account domain hands out: the HTTP layer, the CLI and the cache get these views,
//! never its rows (password and key hashes stay in the domain).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::entities::{View, api_key, identity, session, user};

/// An account: every column but the password hash and the bookkeeping behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    pub is_superuser: bool,
    pub is_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    /// When a requested or administrative deletion takes effect.
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// Why an administrator deleted the account.
    pub deletion_reason: Option<String>,
    /// The administrator who deleted it.
    pub deleted_by: Option<Uuid>,
    /// A password sign-in needs a second factor (a confirmed TOTP factor exists).
    pub mfa_enabled: bool,
    /// False for an account a sign-in provider made, until it sets a password.
    pub has_password: bool,
}

impl View for user::Model {
    type Of = User;
    fn view(self) -> User {
        let u = self;
        User {
            has_password: u.has_password(),
            id: u.id,
            email: u.email,
            username: u.username,
            is_superuser: u.is_superuser,
            is_verified: u.is_verified,
            created_at: u.created_at,
            updated_at: u.updated_at,
            is_deleted: u.is_deleted,
            deleted_at: u.deleted_at,
            deletion_scheduled_for: u.deletion_scheduled_for,
            deletion_requested_at: u.deletion_requested_at,
            deletion_reason: u.deletion_reason,
            deleted_by: u.deleted_by,
            mfa_enabled: u.mfa_enabled,
        }
    }
}

/// A sign-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub device_info: Option<String>,
    pub ip_address: Option<String>,
}

impl View for session::Model {
    type Of = Session;
    fn view(self) -> Session {
        let s = self;
        Session {
            id: s.id,
            user_id: s.user_id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            revoked_at: s.revoked_at,
            device_info: s.device_info,
            ip_address: s.ip_address,
        }
    }
}

/// An API key, without its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub user_id: Uuid,
    pub label: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

impl View for api_key::Model {
    type Of = ApiKey;
    fn view(self) -> ApiKey {
        let k = self;
        ApiKey {
            scopes: k.scope_list(),
            id: k.id,
            user_id: k.user_id,
            label: k.label,
            prefix: k.prefix,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A sign-in provider's identity linked to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The provider's name as configured (`google`, `apple`, …).
    pub provider: String,
    /// The address the provider asserted at the last sign-in.
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: DateTime<Utc>,
}

impl View for identity::Model {
    type Of = Identity;
    fn view(self) -> Identity {
        let i = self;
        Identity {
            id: i.id,
            user_id: i.user_id,
            provider: i.provider,
            email: i.email,
            created_at: i.created_at,
            last_sign_in_at: i.last_sign_in_at,
        }
    }
}
