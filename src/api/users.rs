//! `/users`: the signed-in user's own profile.

use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::{
    ApiTags,
    auth::Auth,
    models::{PageMetadata, UserOut, fetch_page},
};
use crate::entities::user;
use crate::{
    app::AppState,
    error::{ApiError, ApiResult},
};

#[derive(Object, Debug)]
pub struct UpdateMe {
    /// A new username (same rules as at registration).
    #[oai(nullable)]
    pub username: Option<String>,
}

/// One page of users.
#[derive(Object, Debug)]
pub struct UserPage {
    pub items: Vec<UserOut>,
    pub metadata: PageMetadata,
}

pub struct UsersApi;

#[OpenApi(prefix_path = "/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// List users, oldest first
    ///
    /// Deleted accounts are listed only for superusers who ask for them.
    #[oai(path = "/", method = "get", operation_id = "users_list")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Page number, from 1.
        #[oai(
            default = "super::models::default_page",
            validator(minimum(value = "1"))
        )]
        page: Query<u64>,
        /// Items per page, 1 to 100.
        #[oai(
            default = "super::models::default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u64>,
        /// Include soft-deleted accounts (superusers only).
        #[oai(default)]
        include_deleted: Query<bool>,
    ) -> ApiResult<Json<UserPage>> {
        let mut query = user::Entity::find()
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id);
        if !(include_deleted.0 && auth.session()?.user.is_superuser) {
            query = query.filter(user::Column::IsDeleted.eq(false));
        }
        let (rows, metadata) = fetch_page(query, &state.db, page.0, size.0).await?;
        Ok(Json(UserPage {
            items: rows.into_iter().map(UserOut::from).collect(),
            metadata,
        }))
    }

    /// Your account
    #[oai(path = "/me", method = "get", operation_id = "users_me")]
    async fn me(&self, auth: Auth) -> ApiResult<Json<UserOut>> {
        Ok(Json(auth.session()?.user.clone().into()))
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
            return Ok(Json(auth.session()?.user.clone().into()));
        };
        let user = state
            .accounts
            .update_username(auth.session()?, &username)
            .await
            .map_err(ApiError::from)?;
        Ok(Json(user.into()))
    }
}
