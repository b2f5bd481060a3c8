//! The account tables: finding and inserting users, the audit log, and one-time tokens.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set, SqlErr,
    sea_query::Expr,
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{
    error::{AccountError, Result},
    passwords::PasswordHash,
    principal::ClientInfo,
    tokens::{self, Purpose},
};
use crate::values::{EmailAddress, Username};
use crate::{
    config::Settings,
    entities::{audit_log, one_time_token, user},
};

/// The time now, for every row the account domain writes.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `d` from now (the far future when `d` overflows).
pub(super) fn after(d: std::time::Duration) -> DateTime<Utc> {
    now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The constraint a unique violation names, if `e` is one.
pub(super) fn is_unique_violation(e: &DbErr) -> Option<String> {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(msg)) => Some(msg),
        _ => None,
    }
}

/// At most `max` characters of `s`.
pub(super) fn truncate(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| s.chars().take(max).collect())
}

/// Finds a user by email (case-insensitive) or by id.
pub async fn find_user_by_ident(
    conn: &impl ConnectionTrait,
    ident: &str,
) -> Result<Option<user::Model>> {
    if let Ok(id) = Uuid::parse_str(ident.trim()) {
        return Ok(user::Entity::find_by_id(id).one(conn).await?);
    }
    match EmailAddress::parse(ident) {
        Ok(email) => find_user_by_email(conn, &email).await,
        // No account can have an address that breaks the rules.
        Err(_) => Ok(None),
    }
}

pub async fn find_user(conn: &impl ConnectionTrait, id: Uuid) -> Result<user::Model> {
    user::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(AccountError::NotFound)
}

pub async fn find_user_by_email(
    conn: &impl ConnectionTrait,
    email: &EmailAddress,
) -> Result<Option<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(conn)
        .await?)
}

pub(super) async fn insert_user(
    conn: &impl ConnectionTrait,
    email: &EmailAddress,
    username: &Username,
    password_hash: PasswordHash,
    is_superuser: bool,
    is_verified: bool,
) -> Result<user::Model> {
    let at = now();
    user::ActiveModel {
        id: Set(Uuid::new_v4()),
        email: Set(email.as_str().to_string()),
        username: Set(username.as_str().to_string()),
        username_lower: Set(username.as_str().to_lowercase()),
        password_hash: Set(password_hash.into_string()),
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
        mfa_enabled: Set(false),
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
    event: AuditEvent,
    client: &ClientInfo,
    details: Option<serde_json::Value>,
) -> Result<()> {
    // Nothing is read back: no RETURNING round trip for a row nobody looks at here.
    audit_log::Entity::insert(audit_log::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        event: Set(event.as_str().to_string()),
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
        Purpose::OidcLogin => crate::config::OIDC_LOGIN_CODE_TTL,
    };
    let raw = tokens::new_opaque_token();
    one_time_token::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        purpose: Set(purpose),
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
        .filter(one_time_token::Column::Purpose.is_in(purposes.iter().copied()))
        .filter(one_time_token::Column::UsedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}
