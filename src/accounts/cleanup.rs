//! The `cleanup_expired_tokens` job: removes one-time and refresh tokens past their use, and
//! the expired leftovers of provider sign-ins.

use chrono::{Duration, Utc};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::json;

use crate::{
    entities::{
        mfa_challenge, oidc_authorization, oidc_used_nonce, one_time_token, refresh_token, session,
    },
    jobs::{JobError, JobResult},
};

pub const CLEANUP_EXPIRED_TOKENS: &str = "cleanup_expired_tokens";

/// Ended sessions are kept this long for the user's and the operator's history.
const KEEP_ENDED_SESSIONS: Duration = Duration::days(30);

pub async fn cleanup_expired_tokens(db: &DatabaseConnection) -> JobResult {
    let now = Utc::now();
    let fail = |e: sea_orm::DbErr| JobError::retry(e.to_string());
    let one_time = one_time_token::Entity::delete_many()
        .filter(
            Condition::any()
                .add(one_time_token::Column::ExpiresAt.lt(now))
                .add(one_time_token::Column::UsedAt.is_not_null()),
        )
        .exec(db)
        .await
        .map_err(fail)?;
    let refresh = refresh_token::Entity::delete_many()
        .filter(refresh_token::Column::ExpiresAt.lt(now))
        .exec(db)
        .await
        .map_err(fail)?;
    let challenges = mfa_challenge::Entity::delete_many()
        .filter(
            Condition::any()
                .add(mfa_challenge::Column::ExpiresAt.lt(now))
                .add(mfa_challenge::Column::UsedAt.is_not_null()),
        )
        .exec(db)
        .await
        .map_err(fail)?;
    let authorizations = oidc_authorization::Entity::delete_many()
        .filter(oidc_authorization::Column::ExpiresAt.lt(now))
        .exec(db)
        .await
        .map_err(fail)?;
    // A nonce is remembered for as long as a token carrying it could still be accepted.
    let nonces = oidc_used_nonce::Entity::delete_many()
        .filter(oidc_used_nonce::Column::ExpiresAt.lt(now))
        .exec(db)
        .await
        .map_err(fail)?;
    let cutoff = now - KEEP_ENDED_SESSIONS;
    let sessions = session::Entity::delete_many()
        .filter(
            Condition::any()
                .add(session::Column::ExpiresAt.lt(cutoff))
                .add(session::Column::RevokedAt.lt(cutoff)),
        )
        .exec(db)
        .await
        .map_err(fail)?;
    Ok(json!({
        "one_time_tokens_deleted": one_time.rows_affected,
        "refresh_tokens_deleted": refresh.rows_affected,
        "sessions_deleted": sessions.rows_affected,
        "mfa_challenges_deleted": challenges.rows_affected,
        "oidc_authorizations_deleted": authorizations.rows_affected,
        "oidc_nonces_deleted": nonces.rows_affected,
    }))
}
