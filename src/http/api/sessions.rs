//! `/auth/sessions`: the signed-in devices of an account, and ending them.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{ApiTags, models::Message};
use crate::http::extractors::{Auth, client_info};
use crate::{http::error::ApiResult, http::state::AppState};

#[derive(Object, Debug)]
pub struct SessionOut {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    #[oai(nullable)]
    pub device_info: Option<String>,
    #[oai(nullable)]
    pub ip_address: Option<String>,
    /// True for the session the request was made with.
    pub is_current: bool,
}

#[derive(Object, Debug)]
pub struct SessionList {
    pub sessions: Vec<SessionOut>,
    pub total_sessions: u64,
}

#[derive(Object, Debug)]
pub struct RevokedSessions {
    pub message: String,
    pub revoked: u64,
}

pub struct SessionsApi;

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl SessionsApi {
    /// List your active sessions
    #[oai(
        path = "/sessions",
        method = "get",
        operation_id = "auth_sessions_list"
    )]
    async fn sessions(&self, state: Data<&AppState>, auth: Auth) -> ApiResult<Json<SessionList>> {
        let principal = auth.session()?;
        let current = principal.session_id();
        let sessions: Vec<SessionOut> = state
            .accounts
            .sessions()
            .list_sessions(principal.user.id)
            .await?
            .into_iter()
            .map(|s| SessionOut {
                is_current: Some(s.id) == current,
                id: s.id,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                device_info: s.device_info,
                ip_address: s.ip_address,
            })
            .collect();
        Ok(Json(SessionList {
            total_sessions: sessions.len() as u64,
            sessions,
        }))
    }

    /// Revoke one of your sessions
    #[oai(
        path = "/sessions/:session_id",
        method = "delete",
        operation_id = "auth_sessions_revoke"
    )]
    async fn revoke_session(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        session_id: Path<Uuid>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .sessions()
            .revoke_session(auth.session()?, session_id.0, &client_info(req))
            .await?;
        Ok(Json(Message::new("session revoked")))
    }

    /// Revoke all your sessions except this one
    #[oai(
        path = "/sessions",
        method = "delete",
        operation_id = "auth_sessions_revoke_others"
    )]
    async fn revoke_others(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
    ) -> ApiResult<Json<RevokedSessions>> {
        let revoked = state
            .accounts
            .sessions()
            .revoke_other_sessions(auth.session()?, &client_info(req))
            .await?;
        Ok(Json(RevokedSessions {
            message: "all other sessions revoked".into(),
            revoked,
        }))
    }
}
