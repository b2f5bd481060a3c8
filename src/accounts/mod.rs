//! Account rules: registration, passwords, sessions and one-time tokens. Knows nothing of HTTP.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod passwords;
pub mod tokens;

mod cleanup;
mod deletion;
pub mod directory;
mod email_change;
mod error;
mod identities;
pub mod mfa;
pub mod principal;
mod profile;
mod provider_flow;
mod purge;
mod recovery;
mod registration;
mod second_step;
mod service;
mod sessions;
mod storage;
pub mod totp;
mod user_query;
mod views;

pub use crate::values::{EmailAddress, FieldProblem, Password, Username};
pub use audit::AuditEvent;
pub use cleanup::*;
pub use deletion::*;
pub use identities::VerifiedIdentity;
pub use passwords::PasswordHash;
pub use provider_flow::{
    AUTHORIZATION_TTL as OIDC_AUTHORIZATION_TTL, NewAuthorization, PendingAuthorization,
};
pub use purge::*;
pub use service::*;
use storage::{find_user, find_user_by_email, find_user_by_ident};
pub use views::{ApiKey, Identity, Session, User};
