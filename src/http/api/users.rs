//! `/users`: your own profile, the user directory, and (superusers) soft delete and restore.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use sha2::Digest;
use uuid::Uuid;

use super::{
    ApiTags,
    models::{AdminUser, AdminUserPage, ListingMetadata, Me, Message, UserOut},
    payload::EncodedJson,
};
use crate::http::extractors::Auth;
use crate::{
    accounts::{
        Principal,
        directory::{Deleted, SortBy, UserQuery},
    },
    http::error::{ApiError, ApiResult},
    http::state::AppState,
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
    pub metadata: ListingMetadata,
}

#[derive(Enum, Debug, Clone, Copy, Default)]
#[oai(rename_all = "snake_case")]
pub enum UserSortBy {
    #[default]
    CreatedAt,
    Email,
    Username,
}

#[derive(Enum, Debug, Clone, Copy, Default)]
#[oai(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

impl From<UserSortBy> for SortBy {
    fn from(s: UserSortBy) -> Self {
        match s {
            UserSortBy::CreatedAt => SortBy::CreatedAt,
            UserSortBy::Email => SortBy::Email,
            UserSortBy::Username => SortBy::Username,
        }
    }
}

#[derive(ApiResponse)]
pub enum CachedUserPage {
    /// A page of users; `X-Cache` says whether it came from the cache (`HIT`), was just loaded
    /// into it (`MISS`), or the cache was unavailable (`BYPASS`).
    #[oai(status = 200)]
    Ok(EncodedJson<UserPage>, #[oai(header = "X-Cache")] String),
}

/// Serves a page of users through the cache: keyed by the viewer's role and the whole query.
async fn cached_page(
    state: &AppState,
    viewer: &Principal,
    query: UserQuery,
    page: u64,
    cursor: Option<String>,
    size: u64,
) -> ApiResult<CachedUserPage> {
    use poem_openapi::types::ToJSON;
    let at = super::models::position(page, cursor.as_deref(), &query)?;
    let scope = if viewer.user.is_superuser {
        "superuser"
    } else {
        "user"
    };
    let start = match &cursor {
        Some(cursor) => format!("after={cursor}"),
        None => format!("page={page}"),
    };
    let key = hex::encode(sha2::Sha256::digest(format!(
        "{}|{start}|{size}",
        query.cache_key()
    )));
    let version = viewer.users_version;
    let (body, outcome) = state
        .cache
        .users_page(scope, &key, version, || async {
            let listing = state
                .accounts
                .directory()
                .list(&query, &at, size, version)
                .await?;
            let page = UserPage {
                metadata: ListingMetadata::new(&listing, size),
                items: listing.items.into_iter().map(UserOut::from).collect(),
            };
            Ok::<_, ApiError>(page.to_json().unwrap_or_default().to_string())
        })
        .await?;
    Ok(CachedUserPage::Ok(
        EncodedJson::new(body),
        outcome.as_str().into(),
    ))
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
            validator(minimum(value = "1"), maximum(value = "2147483647"))
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
        /// Where to continue: the `next_cursor` of the page before. With a cursor the page
        /// starts just after that page's last account and `page` is not used.
        #[oai(validator(min_length = 1, max_length = 512))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<CachedUserPage> {
        let viewer = auth.session()?;
        let deleted = if include_deleted.0 && viewer.user.is_superuser {
            Deleted::Include
        } else {
            Deleted::Exclude
        };
        let query = UserQuery {
            deleted,
            ..Default::default()
        };
        cached_page(&state, viewer, query, page.0, cursor.0, size.0).await
    }

    /// Search users
    ///
    /// `q` matches part of the email address or username, case-insensitively; every other
    /// filter given is applied as well.
    #[oai(path = "/search", method = "get", operation_id = "users_search")]
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Part of an email address or username.
        q: Query<Option<String>>,
        is_verified: Query<Option<bool>>,
        is_superuser: Query<Option<bool>>,
        /// Created at or after this time (RFC 3339).
        created_after: Query<Option<DateTime<Utc>>>,
        /// Created before this time (RFC 3339).
        created_before: Query<Option<DateTime<Utc>>>,
        /// Default `created_at`.
        sort_by: Query<Option<UserSortBy>>,
        /// Default `asc`.
        sort_order: Query<Option<SortOrder>>,
        #[oai(
            default = "super::models::default_page",
            validator(minimum(value = "1"), maximum(value = "2147483647"))
        )]
        page: Query<u64>,
        #[oai(
            default = "super::models::default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u64>,
        /// Where to continue: the `next_cursor` of the page before, from a search in the same
        /// order (`sort_by`, `sort_order`). With a cursor the page starts just after that page's
        /// last account and `page` is not used.
        #[oai(validator(min_length = 1, max_length = 512))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<CachedUserPage> {
        let viewer = auth.session()?;
        let query = UserQuery {
            text: super::models::search_text(q.0)?,
            is_verified: is_verified.0,
            is_superuser: is_superuser.0,
            created_after: created_after.0,
            created_before: created_before.0,
            deleted: Deleted::Exclude,
            sort_by: sort_by.0.unwrap_or_default().into(),
            descending: matches!(sort_order.0, Some(SortOrder::Desc)),
        };
        cached_page(&state, viewer, query, page.0, cursor.0, size.0).await
    }

    /// Your account
    #[oai(path = "/me", method = "get", operation_id = "users_me")]
    async fn me(&self, auth: Auth) -> ApiResult<Json<Me>> {
        Ok(Json(auth.session()?.user.clone().into()))
    }

    /// Update your account
    #[oai(path = "/me", method = "patch", operation_id = "users_update_me")]
    async fn update_me(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<UpdateMe>,
    ) -> ApiResult<Json<Me>> {
        let Some(username) = body.0.username else {
            return Ok(Json(auth.session()?.user.clone().into()));
        };
        let user = state
            .accounts
            .profile()
            .update_username(auth.session()?, &username)
            .await
            .map_err(ApiError::from)?;
        Ok(Json(user.into()))
    }

    /// Soft-deleted accounts, most recently deleted first (superuser)
    #[oai(path = "/deleted", method = "get", operation_id = "users_list_deleted")]
    async fn deleted(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        #[oai(
            default = "super::models::default_page",
            validator(minimum(value = "1"), maximum(value = "2147483647"))
        )]
        page: Query<u64>,
        #[oai(
            default = "super::models::default_size",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        size: Query<u64>,
        /// Where to continue: the `next_cursor` of the page before. With a cursor the page
        /// starts just after that page's last account and `page` is not used.
        #[oai(validator(min_length = 1, max_length = 512))]
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<AdminUserPage>> {
        auth.admin()?;
        let version = auth.session()?.users_version;
        let query = UserQuery {
            deleted: Deleted::Only,
            descending: true,
            ..Default::default()
        };
        let at = super::models::position(page.0, cursor.0.as_deref(), &query)?;
        let listing = state
            .accounts
            .directory()
            .list(&query, &at, size.0, version)
            .await?;
        Ok(Json(AdminUserPage::new(listing, size.0)))
    }

    /// Soft-delete an account (superuser)
    ///
    /// The account stops working at once (its sessions end) and can be restored.
    #[oai(
        path = "/:user_id/soft",
        method = "delete",
        operation_id = "users_soft_delete"
    )]
    async fn soft_delete(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
        /// Why, kept with the account (at most 500 characters).
        reason: Query<Option<String>>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let user = state
            .accounts
            .admin()
            .soft_delete(user_id.0, reason.0, actor)
            .await?;
        Ok(Json(user.into()))
    }

    /// Restore a soft-deleted account (superuser)
    #[oai(
        path = "/:user_id/restore",
        method = "post",
        operation_id = "users_restore"
    )]
    async fn restore(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let user = state.accounts.admin().restore(user_id.0, actor).await?;
        Ok(Json(user.into()))
    }

    /// Delete an account permanently (superuser)
    ///
    /// The account, its sessions, tokens and API keys are gone at once; the audit log keeps the
    /// event without personal data.
    #[oai(
        path = "/:user_id/permanent",
        method = "delete",
        operation_id = "users_delete_permanently"
    )]
    async fn permanent(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<Message>> {
        let actor = auth.admin()?;
        state.accounts.admin().hard_delete(user_id.0, actor).await?;
        Ok(Json(Message::new("the account was deleted permanently")))
    }
}
