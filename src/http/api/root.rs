//! `/` and `/features`: the service name, version and which optional features are on.

use poem_openapi::{Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::http::{error::ApiError, state::AppState};

#[derive(Object)]
pub struct ServiceInfo {
    pub name: String,
    pub version: String,
    /// Where the interactive API documentation is served.
    pub docs: String,
}

/// Which optional features this instance runs with.
#[derive(Object)]
pub struct Features {
    pub redis: bool,
    pub websockets: bool,
    pub rabbitmq: bool,
    pub email: bool,
    pub rate_limiting: bool,
    pub security_headers: bool,
}

pub struct RootApi;

#[OpenApi(tag = "ApiTags::Root")]
impl RootApi {
    /// Service name and version
    #[oai(path = "/", method = "get", operation_id = "root")]
    async fn root(&self, state: poem::web::Data<&AppState>) -> Result<Json<ServiceInfo>, ApiError> {
        Ok(Json(ServiceInfo {
            name: state.settings.project_name.clone(),
            version: crate::VERSION.to_string(),
            docs: format!("{}/docs", state.settings.http.api_prefix),
        }))
    }

    /// Enabled optional features
    #[oai(path = "/features", method = "get", operation_id = "features")]
    async fn features(
        &self,
        state: poem::web::Data<&AppState>,
    ) -> Result<Json<Features>, ApiError> {
        let s = &state.settings;
        Ok(Json(Features {
            redis: s.redis.enabled,
            websockets: s.websockets.enabled,
            rabbitmq: s.rabbitmq.enabled,
            email: s.mail.smtp.is_some(),
            rate_limiting: s.rate_limit.enabled,
            security_headers: s.security.headers,
        }))
    }
}
