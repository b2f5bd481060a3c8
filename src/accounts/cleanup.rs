//! The `cleanup_expired_tokens` job: removes one-time and refresh tokens past their use, and
//! the expired leftovers of provider sign-ins.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    entities::{
        mfa_challenge, oidc_authorization, oidc_used_nonce, one_time_token, refresh_token, session,
    },
    jobs::{Deps, Job, JobContext, JobError, JobResult, Queue, Scheduled},
};

/// The periodic job that deletes the tokens, challenges and sessions past their use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CleanupExpiredTokens {
    /// The slot of the schedule this run is for; absent for a run queued by hand.
    #[serde(default)]
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl Job for CleanupExpiredTokens {
    const NAME: &'static str = "cleanup_expired_tokens";
    const QUEUE: Queue = Queue::Maintenance;

    async fn run(self, _ctx: &JobContext, deps: &Deps) -> JobResult {
        cleanup_expired_tokens(deps.get::<DatabaseConnection>()?).await
    }
}

impl Scheduled for CleanupExpiredTokens {
    const SETTING: &'static str = "SCHEDULE_CLEANUP_EXPIRED_TOKENS";
    const SCHEDULE: &'static str = "0 30 3 * * *";
    fn at(slot: DateTime<Utc>) -> Self {
        Self {
            scheduled_for: Some(slot),
        }
    }
}

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
