//! What the audit log records: one named event per change to an account or its credentials.
//! The names are the rows' `event` column, which operators query; they never change.

/// One kind of audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    Register,
    EmailVerified,
    SuperuserCreated,
    LoginSuccess,
    LoginFailed,
    Logout,
    RefreshTokenReuse,
    SessionRevoked,
    SessionsRevoked,
    PasswordChanged,
    PasswordChangeFailed,
    PasswordResetRequested,
    PasswordReset,
    ApiKeyCreated,
    ApiKeyRevoked,
    ApiKeyRotated,
    UserCreatedByAdmin,
    UserUpdatedByAdmin,
    AccountSoftDeleted,
    AccountRestored,
    AccountDeleted,
    DeletionRequested,
    DeletionScheduled,
    DeletionCancelled,
    DeletionReminderSent,
    AccountPurged,
}

impl AuditEvent {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::EmailVerified => "email_verified",
            Self::SuperuserCreated => "superuser_created",
            Self::LoginSuccess => "login_success",
            Self::LoginFailed => "login_failed",
            Self::Logout => "logout",
            Self::RefreshTokenReuse => "refresh_token_reuse",
            Self::SessionRevoked => "session_revoked",
            Self::SessionsRevoked => "sessions_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordChangeFailed => "password_change_failed",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::ApiKeyRotated => "api_key_rotated",
            Self::UserCreatedByAdmin => "user_created_by_admin",
            Self::UserUpdatedByAdmin => "user_updated_by_admin",
            Self::AccountSoftDeleted => "account_soft_deleted",
            Self::AccountRestored => "account_restored",
            Self::AccountDeleted => "account_deleted",
            Self::DeletionRequested => "deletion_requested",
            Self::DeletionScheduled => "deletion_scheduled",
            Self::DeletionCancelled => "deletion_cancelled",
            Self::DeletionReminderSent => "deletion_reminder_sent",
            Self::AccountPurged => "account_purged",
        }
    }
}
