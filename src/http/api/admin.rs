//! `/admin`: account management for superusers. An administrator cannot demote, unverify or
//! delete their own account (403 `cannot_modify_self`).

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;

use super::{
    ApiTags,
    models::{AdminUser, AdminUserPage},
};
use crate::http::extractors::Auth;
use crate::{
    accounts::{
        NewAccount,
        admin::{BulkOperation, UserChanges},
        directory::{Deleted, UserQuery},
    },
    http::error::{ApiError, ApiResult},
    http::state::AppState,
};

#[derive(Object, Debug)]
pub struct AdminCreateUser {
    pub email: String,
    pub username: String,
    #[oai(write_only)]
    pub password: String,
    #[oai(default)]
    pub is_superuser: bool,
    /// Accounts created by an administrator are verified unless this says otherwise; no
    /// verification mail is sent.
    #[oai(default = "default_true")]
    pub is_verified: bool,
}

fn default_true() -> bool {
    true
}

/// Fields to change; those left out stay as they are. A new password signs the user out
/// everywhere.
#[derive(Object, Debug)]
pub struct AdminUpdateUser {
    #[oai(nullable)]
    pub email: Option<String>,
    #[oai(nullable)]
    pub username: Option<String>,
    #[oai(nullable, write_only)]
    pub password: Option<String>,
    #[oai(nullable)]
    pub is_superuser: Option<bool>,
    #[oai(nullable)]
    pub is_verified: Option<bool>,
}

#[derive(Object, Debug)]
pub struct JobStatusCount {
    pub status: String,
    pub count: u64,
}

#[derive(Object, Debug)]
pub struct Statistics {
    /// Accounts not deleted; the next three count among these.
    pub total_users: u64,
    pub superusers: u64,
    pub verified_users: u64,
    pub unverified_users: u64,
    /// Soft-deleted accounts.
    pub deleted_users: u64,
    /// Accounts scheduled for permanent deletion.
    pub pending_deletion: u64,
    pub active_sessions: u64,
    /// Every job status (PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED) with its count.
    pub jobs_by_status: std::collections::BTreeMap<String, u64>,
}

#[derive(Enum, Debug, Clone, Copy)]
#[oai(rename_all = "snake_case")]
pub enum BulkOperationName {
    Verify,
    Unverify,
    MakeSuperuser,
    RemoveSuperuser,
    SoftDelete,
    Restore,
}

impl From<BulkOperationName> for BulkOperation {
    fn from(o: BulkOperationName) -> Self {
        match o {
            BulkOperationName::Verify => Self::Verify,
            BulkOperationName::Unverify => Self::Unverify,
            BulkOperationName::MakeSuperuser => Self::MakeSuperuser,
            BulkOperationName::RemoveSuperuser => Self::RemoveSuperuser,
            BulkOperationName::SoftDelete => Self::SoftDelete,
            BulkOperationName::Restore => Self::Restore,
        }
    }
}

#[derive(Object, Debug)]
pub struct BulkRequest {
    /// 1 to 100 account ids; duplicates count once.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub user_ids: Vec<Uuid>,
    pub operation: BulkOperationName,
}

#[derive(Object, Debug)]
pub struct BulkFailure {
    pub user_id: Uuid,
    /// The problem code the single operation would have answered, e.g. `not_found`.
    pub code: String,
    pub detail: String,
}

#[derive(Object, Debug)]
pub struct BulkResult {
    pub operation: BulkOperationName,
    pub succeeded: Vec<Uuid>,
    pub failed: Vec<BulkFailure>,
}

#[derive(ApiResponse)]
pub enum UserCreated {
    #[oai(status = 201)]
    Created(Json<AdminUser>),
}

pub struct AdminApi;

#[OpenApi(prefix_path = "/admin", tag = "ApiTags::Admin")]
impl AdminApi {
    /// List accounts (superuser)
    #[oai(path = "/users", method = "get", operation_id = "admin_users_list")]
    #[allow(clippy::too_many_arguments)] // one per query parameter, as poem-openapi takes them
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        /// Part of the email address or username.
        q: Query<Option<String>>,
        /// Include soft-deleted accounts.
        #[oai(default)]
        include_deleted: Query<bool>,
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
            text: super::models::search_text(q.0)?,
            deleted: if include_deleted.0 {
                Deleted::Include
            } else {
                Deleted::Exclude
            },
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

    /// Create an account (superuser)
    #[oai(path = "/users", method = "post", operation_id = "admin_users_create")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<AdminCreateUser>,
    ) -> ApiResult<UserCreated> {
        let actor = auth.admin()?;
        let b = body.0;
        let user = state
            .accounts
            .admin()
            .admin_create_user(
                NewAccount {
                    email: b.email,
                    username: b.username,
                    password: b.password,
                },
                b.is_superuser,
                b.is_verified,
                actor,
            )
            .await?;
        Ok(UserCreated::Created(Json(user.into())))
    }

    /// One account (superuser)
    #[oai(
        path = "/users/:user_id",
        method = "get",
        operation_id = "admin_users_get"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<AdminUser>> {
        auth.admin()?;
        let user = state.accounts.directory().user(user_id.0).await?;
        Ok(Json(user.into()))
    }

    /// Change an account (superuser)
    #[oai(
        path = "/users/:user_id",
        method = "put",
        operation_id = "admin_users_update"
    )]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
        body: Json<AdminUpdateUser>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let b = body.0;
        let user = state
            .accounts
            .admin()
            .admin_update_user(
                user_id.0,
                UserChanges {
                    email: b.email,
                    username: b.username,
                    password: b.password,
                    is_superuser: b.is_superuser,
                    is_verified: b.is_verified,
                },
                actor,
            )
            .await?;
        Ok(Json(user.into()))
    }

    /// Soft-delete an account (superuser)
    ///
    /// The same as `DELETE /users/{id}/soft`: restorable with `POST /users/{id}/restore`.
    #[oai(
        path = "/users/:user_id",
        method = "delete",
        operation_id = "admin_users_delete"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
        /// Why, kept with the account.
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

    /// Grant or remove superuser rights (superuser)
    #[oai(
        path = "/users/:user_id/toggle-superuser",
        method = "post",
        operation_id = "admin_users_toggle_superuser"
    )]
    async fn toggle_superuser(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let user = state.accounts.directory().user(user_id.0).await?;
        let user = state
            .accounts
            .admin()
            .set_superuser(user.id, !user.is_superuser, actor)
            .await?;
        Ok(Json(user.into()))
    }

    /// Mark an account verified or unverified (superuser)
    #[oai(
        path = "/users/:user_id/toggle-verification",
        method = "post",
        operation_id = "admin_users_toggle_verification"
    )]
    async fn toggle_verification(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let user = state.accounts.directory().user(user_id.0).await?;
        let user = state
            .accounts
            .admin()
            .set_verified(user.id, !user.is_verified, actor)
            .await?;
        Ok(Json(user.into()))
    }

    /// Turn off an account's two-factor sign-in (superuser)
    ///
    /// For a user who lost both the authenticator and the recovery codes. Every session of the
    /// account ends and a notice is mailed. Not for your own account.
    #[oai(
        path = "/users/:user_id/mfa",
        method = "delete",
        operation_id = "admin_users_reset_mfa"
    )]
    async fn reset_mfa(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        user_id: Path<Uuid>,
    ) -> ApiResult<Json<AdminUser>> {
        let actor = auth.admin()?;
        let user = state.accounts.mfa().reset_mfa(user_id.0, actor).await?;
        Ok(Json(user.into()))
    }

    /// Counts of accounts, sessions and jobs (superuser)
    #[oai(
        path = "/statistics",
        method = "get",
        operation_id = "admin_statistics"
    )]
    async fn statistics(&self, state: Data<&AppState>, auth: Auth) -> ApiResult<Json<Statistics>> {
        auth.admin()?;
        let s = state.accounts.directory().statistics().await?;
        Ok(Json(Statistics {
            total_users: s.total_users,
            superusers: s.superusers,
            verified_users: s.verified_users,
            unverified_users: s.unverified_users,
            deleted_users: s.deleted_users,
            pending_deletion: s.pending_deletion,
            active_sessions: s.active_sessions,
            jobs_by_status: s
                .jobs_by_status
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }))
    }

    /// Apply one operation to many accounts (superuser)
    ///
    /// Each account succeeds or fails on its own; failures carry the problem code the single
    /// operation would have answered (`not_found`, `cannot_modify_self`, `already_deleted`, ...).
    #[oai(
        path = "/bulk-operations",
        method = "post",
        operation_id = "admin_bulk_operations"
    )]
    async fn bulk(
        &self,
        state: Data<&AppState>,
        auth: Auth,
        body: Json<BulkRequest>,
    ) -> ApiResult<Json<BulkResult>> {
        let actor = auth.admin()?;
        let b = body.0;
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for (user_id, outcome) in state
            .accounts
            .admin()
            .bulk(&b.user_ids, b.operation.into(), actor)
            .await
        {
            match outcome {
                Ok(()) => succeeded.push(user_id),
                Err(e) => {
                    let e = ApiError::from(e);
                    let p = e.problem();
                    failed.push(BulkFailure {
                        user_id,
                        code: p.code.clone(),
                        detail: p.detail.clone(),
                    });
                }
            }
        }
        Ok(Json(BulkResult {
            operation: b.operation,
            succeeded,
            failed,
        }))
    }
}
