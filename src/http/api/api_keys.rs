//! `/auth/api-keys`: long-lived keys with scopes, for scripts and services.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use uuid::Uuid;

use super::{ApiTags, models::Message};
use crate::http::extractors::{Auth, client_info};
use crate::{
    accounts::{ApiKey, api_keys::NewApiKey},
    http::error::ApiResult,
    http::state::AppState,
};

#[derive(Object, Debug)]
pub struct ApiKeyRequest {
    /// What the key is for, e.g. `ci-deploy`.
    pub label: String,
    /// Any of `system:read`, `tasks:read`, `tasks:write`.
    pub scopes: Vec<String>,
    /// When the key stops working (it must lie in the future); never, if left out.
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed; the key itself is never shown again after creation.
#[derive(Object, Debug)]
pub struct ApiKeyOut {
    pub id: Uuid,
    pub label: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Neither revoked nor expired.
    pub is_active: bool,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            is_active: k.is_active(Utc::now()),
            scopes: k.scopes,
            id: k.id,
            label: k.label,
            prefix: k.prefix,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Object, Debug)]
pub struct CreatedApiKey {
    pub api_key: ApiKeyOut,
    /// The key: send it as `Authorization: Bearer <raw_key>`. Shown this once only.
    pub raw_key: String,
}

#[derive(Object, Debug)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyOut>,
    pub total: u64,
}

#[derive(ApiResponse)]
pub enum KeyCreated {
    /// The new key; its raw value is in `raw_key` and is not shown again.
    #[oai(status = 201)]
    Created(Json<CreatedApiKey>),
}

pub struct ApiKeysApi;

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl ApiKeysApi {
    /// Create an API key
    ///
    /// The raw key (`sk_...`) is returned once. Keys act only within their scopes.
    #[oai(
        path = "/api-keys",
        method = "post",
        operation_id = "auth_api_keys_create"
    )]
    async fn create_api_key(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<ApiKeyRequest>,
    ) -> ApiResult<KeyCreated> {
        let body = body.0;
        let (key, raw_key) = state
            .accounts
            .api_keys()
            .create_api_key(
                auth.session()?,
                NewApiKey {
                    label: body.label,
                    scopes: body.scopes,
                    expires_at: body.expires_at,
                },
                &client_info(req),
            )
            .await?;
        Ok(KeyCreated::Created(Json(CreatedApiKey {
            api_key: key.into(),
            raw_key,
        })))
    }

    /// List your API keys
    #[oai(
        path = "/api-keys",
        method = "get",
        operation_id = "auth_api_keys_list"
    )]
    async fn list_api_keys(
        &self,
        state: Data<&AppState>,
        auth: Auth,
    ) -> ApiResult<Json<ApiKeyList>> {
        let keys: Vec<ApiKeyOut> = state
            .accounts
            .api_keys()
            .list_api_keys(auth.session()?.user.id)
            .await?
            .into_iter()
            .map(ApiKeyOut::from)
            .collect();
        Ok(Json(ApiKeyList {
            total: keys.len() as u64,
            api_keys: keys,
        }))
    }

    /// Revoke one of your API keys
    #[oai(
        path = "/api-keys/:key_id",
        method = "delete",
        operation_id = "auth_api_keys_revoke"
    )]
    async fn revoke_api_key(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        key_id: Path<Uuid>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .api_keys()
            .revoke_api_key(auth.session()?, key_id.0, &client_info(req))
            .await?;
        Ok(Json(Message::new("API key revoked")))
    }

    /// Replace an API key with a new one
    ///
    /// Same label, scopes and expiry; the old key stops working at once.
    #[oai(
        path = "/api-keys/:key_id/rotate",
        method = "post",
        operation_id = "auth_api_keys_rotate"
    )]
    async fn rotate_api_key(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        key_id: Path<Uuid>,
    ) -> ApiResult<KeyCreated> {
        let (key, raw_key) = state
            .accounts
            .api_keys()
            .rotate_api_key(auth.session()?, key_id.0, &client_info(req))
            .await?;
        Ok(KeyCreated::Created(Json(CreatedApiKey {
            api_key: key.into(),
            raw_key,
        })))
    }
}
