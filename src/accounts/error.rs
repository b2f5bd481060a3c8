//! What can go wrong in an account operation: one error type for the account domain, each
//! variant rendered by the HTTP layer as its own problem `code`.

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
