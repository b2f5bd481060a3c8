//! What can go wrong in an account operation. `AccountError` holds what any service may answer
//! (invalid input, a taken name, a wrong or expired token, a missing account, storage
//! failures); a service whose refusals are its own has its own type, wrapping `AccountError`:
//! `SignInError` (sessions and credentials), `MfaError`, `IdentityError`, `DeletionError` and
//! `AdminError`. The HTTP layer renders each variant as its own problem `code`.

use chrono::{DateTime, Utc};
use sea_orm::DbErr;

use super::passwords::HashError;
use crate::values::FieldProblem;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldProblem>),
    #[error("an account with this email address already exists")]
    EmailTaken,
    #[error("this username is already taken")]
    UsernameTaken,
    #[error("the current password is incorrect")]
    WrongPassword,
    #[error("this account has no password yet: set one with /auth/set-password")]
    PasswordNotSet,
    #[error("the token is invalid or was already used")]
    TokenInvalid,
    #[error("the token has expired")]
    TokenExpired,
    #[error("not found")]
    NotFound,
    /// The account asking or asked about is deleted (only an operator can restore it).
    #[error("the account is already deleted")]
    AccountDeleted,
    #[error("database error")]
    Db(#[from] DbErr),
    #[error(transparent)]
    Hash(#[from] HashError),
    /// `SECRET_KEY` could not be made into signing keys, or a token could not be signed.
    #[error("access tokens cannot be signed")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Signing in and authenticating: the password step, the second step, refresh tokens, access
/// tokens and API keys.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("incorrect email/username or password")]
    InvalidCredentials,
    #[error("too many failed sign-ins for this account; retry in {retry_after_secs} s")]
    TooManyFailedLogins { retry_after_secs: u64 },
    /// The limiter that guards sign-ins cannot be asked (`RATE_LIMIT_FAIL_OPEN=false`).
    #[error("the rate limiter cannot reach redis")]
    LimiterUnavailable,
    #[error("the email address of this account is not verified yet")]
    EmailNotVerified,
    #[error("the session has ended")]
    SessionRevoked,
    #[error("this API key was revoked")]
    ApiKeyRevoked,
    /// The password was right and the account has a second factor: sign-in goes on at
    /// `/auth/mfa/verify` with this token.
    #[error(
        "this account signs in with a second factor: send a code with the mfa_token to /auth/mfa/verify"
    )]
    MfaRequired { mfa_token: String },
    /// A wrong or already used code in the second step of a sign-in.
    #[error("{}", if *.challenge_ended { "the code is wrong or was already used; too many wrong codes ended this sign-in, start again with the password" } else { "the code is wrong or was already used" })]
    MfaCodeRejected { challenge_ended: bool },
    #[error("the mfa_token is invalid, was already used or ended after too many wrong codes")]
    MfaTokenInvalid,
    #[error("the mfa_token has expired; sign in with the password again")]
    MfaTokenExpired,
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// Setting up, using and removing a second factor.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// A wrong or already used code for a change to the factor itself.
    #[error("the two-factor code is wrong or was already used")]
    WrongCode,
    #[error("two-factor sign-in is already on for this account")]
    AlreadyEnabled,
    #[error("two-factor sign-in is not on for this account")]
    NotEnabled,
    #[error("no two-factor setup is in progress: call /auth/mfa/totp/setup first")]
    SetupRequired,
    /// An operator's reset is refused as other administrative changes are.
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// Signing in with a provider and the identities linked to an account.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
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
    StateInvalid,
    #[error("the sign-in took too long; start again")]
    StateExpired,
    /// A native app's ID token (its nonce) was already used for a sign-in.
    #[error("this ID token's nonce was already used for a sign-in")]
    NonceReused,
    #[error(
        "this is the account's last way to sign in: set a password or link another provider first"
    )]
    LastSignInMethod,
    #[error("this account already has a password: change it with /auth/change-password")]
    PasswordAlreadySet,
    #[error(transparent)]
    SignIn(#[from] SignInError),
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// Deleting one's account after the grace period.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// A deletion was requested for an account already scheduled for one.
    #[error("the account is already scheduled for deletion on {}", .at.to_rfc3339())]
    AlreadyScheduled { at: DateTime<Utc> },
    /// Cancelling or confirming a deletion nobody asked for.
    #[error("no deletion of this account is pending")]
    NotRequested,
    #[error(transparent)]
    Account(#[from] AccountError),
}

/// What administrators do to accounts.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Soft-deleting an account that is already deleted.
    #[error("the account is already deleted")]
    AlreadySoftDeleted,
    /// Restoring an account that is not deleted.
    #[error("the account is not deleted")]
    NotSoftDeleted,
    /// An administrator tried to demote, unverify or delete their own account.
    #[error("{0}")]
    CannotModifySelf(String),
    #[error(transparent)]
    Account(#[from] AccountError),
}

pub type Result<T, E = AccountError> = std::result::Result<T, E>;

/// `From` for every service error that wraps `AccountError`: storage and hashing failures
/// convert straight into it.
macro_rules! wraps_account_error {
    ($($error:ty),+) => {$(
        impl From<DbErr> for $error {
            fn from(e: DbErr) -> Self {
                AccountError::Db(e).into()
            }
        }

        impl From<HashError> for $error {
            fn from(e: HashError) -> Self {
                AccountError::Hash(e).into()
            }
        }
    )+};
}

wraps_account_error!(
    SignInError,
    MfaError,
    IdentityError,
    DeletionError,
    AdminError
);
