//! `/users`: the signed-in user's own profile.

use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{ApiTags, auth::Auth, models::UserOut};
use crate::{
    app::AppState,
    error::{ApiError, ApiResult},
};

#[derive(Object, Debug)]
pub struct UpdateMe {
    /// A new username (same rules as at registration).
    pub username: Option<String>,
}

pub struct UsersApi;

#[OpenApi(prefix_path = "/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// Your account
    #[oai(path = "/me", method = "get", operation_id = "users_me")]
    async fn me(&self, auth: Auth) -> ApiResult<Json<UserOut>> {
        Ok(Json(auth.0.user.into()))
    }

    /// Update your account
    #[oai(path = "/me", method = "patch", operation_id = "users_update_me")]
    async fn update_me(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<UpdateMe>,
    ) -> ApiResult<Json<UserOut>> {
        let Some(username) = body.0.username else {
            return Ok(Json(auth.0.user.into()));
        };
        let user = state
            .accounts
            .update_username(&auth.0, &username)
            .await
            .map_err(ApiError::from)?;
        Ok(Json(user.into()))
    }
}
