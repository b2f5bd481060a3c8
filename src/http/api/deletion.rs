//! `/auth/*-deletion`: deleting your own account, with a grace period in which it can be undone.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    models::{Accepted, Message},
    payload::OptionalJson,
};
use crate::http::extractors::{Auth, bearer_token, client_info, note_request_user};
use crate::{
    accounts::Principal,
    http::error::{ApiError, ApiResult, FieldError},
    http::state::AppState,
};

#[derive(Object, Debug)]
pub struct DeletionRequest {
    /// The account's address; needed only when not signed in.
    #[oai(nullable)]
    pub email: Option<String>,
}

#[derive(Object, Debug)]
pub struct CancelDeletionRequest {
    /// The cancel token from a deletion mail; needed only when not signed in.
    #[oai(nullable)]
    pub token: Option<String>,
}

#[derive(Object, Debug)]
pub struct ConfirmDeletionRequest {
    /// The token from the confirmation mail.
    pub token: String,
}

#[derive(Object, Debug)]
pub struct DeletionScheduled {
    /// When the account will be deleted for good, unless cancelled before.
    pub deletion_scheduled_for: DateTime<Utc>,
}

#[derive(Object, Debug)]
pub struct DeletionCancelled {
    pub deletion_cancelled: bool,
}

#[derive(Object, Debug)]
pub struct DeletionStatusOut {
    /// A deletion was asked for (confirmed or not).
    pub deletion_requested: bool,
    /// It was confirmed, and is scheduled.
    pub deletion_confirmed: bool,
    #[oai(nullable)]
    pub deletion_scheduled_for: Option<DateTime<Utc>>,
    pub can_cancel: bool,
    pub grace_period_days: u32,
}

/// The signed-in caller when a bearer token is sent; `None` without one. A bad token is a 401,
/// never a silent fall-back to the anonymous form of the operation.
async fn optional_user(state: &AppState, req: &Request) -> ApiResult<Option<Principal>> {
    let Some(token) = bearer_token(req) else {
        return Ok(None);
    };
    let principal = state
        .accounts
        .sessions()
        .authenticate(&token)
        .await
        .map_err(|e| ApiError::from(e).as_auth_failure())?;
    note_request_user(&principal);
    Ok(Some(principal))
}

fn missing(field: &str, message: &str) -> ApiError {
    ApiError::validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

pub struct DeletionApi;

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Deletion")]
impl DeletionApi {
    /// Ask to delete your account
    ///
    /// Signed in (bearer access token), or with `{"email"}`: mails a single-use confirmation link
    /// (valid for `DELETION_TOKEN_EXPIRE_HOURS`, 24 by default). Nothing is deleted until it is confirmed. Without a token the answer is
    /// the same whether or not the account exists.
    #[oai(
        path = "/request-deletion",
        method = "post",
        operation_id = "auth_request_deletion"
    )]
    async fn request_deletion(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: OptionalJson<DeletionRequest>,
    ) -> ApiResult<Accepted> {
        let client = client_info(req);
        let email = body.0.and_then(|b| b.email);
        // An address is checked even when the caller is signed in and it is not needed: a
        // malformed one is a mistake the client should hear about.
        if let Some(email) = &email {
            crate::accounts::EmailAddress::parse(email)
                .map_err(|p| ApiError::validation(vec![p.into()]))?;
        }
        if let Some(principal) = optional_user(&state, req).await? {
            state
                .accounts
                .deletion()
                .request_deletion(&principal.user, &client)
                .await?;
        } else {
            let email = email.ok_or_else(|| missing("email", "is required when not signed in"))?;
            state
                .accounts
                .deletion()
                .request_deletion_by_email(&email, &client)
                .await?;
        }
        Ok(Accepted::Accepted(Json(Message::new(
            "if the account exists, a mail with a confirmation link is on its way",
        ))))
    }

    /// Confirm the deletion of your account with the mailed token
    ///
    /// The account is deleted permanently when the grace period is over; until then it works as
    /// before and the deletion can be cancelled.
    #[oai(
        path = "/confirm-deletion",
        method = "post",
        operation_id = "auth_confirm_deletion"
    )]
    async fn confirm_deletion(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<ConfirmDeletionRequest>,
    ) -> ApiResult<Json<DeletionScheduled>> {
        let user = state
            .accounts
            .deletion()
            .confirm_deletion(&body.0.token, &client_info(req))
            .await?;
        let deletion_scheduled_for = user
            .deletion_scheduled_for
            .ok_or_else(|| ApiError::internal("confirmed deletion has no date"))?;
        Ok(Json(DeletionScheduled {
            deletion_scheduled_for,
        }))
    }

    /// Cancel the deletion of your account
    ///
    /// Signed in, or with `{"token"}` from a deletion mail.
    #[oai(
        path = "/cancel-deletion",
        method = "post",
        operation_id = "auth_cancel_deletion"
    )]
    async fn cancel_deletion(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: OptionalJson<CancelDeletionRequest>,
    ) -> ApiResult<Json<DeletionCancelled>> {
        let client = client_info(req);
        if let Some(principal) = optional_user(&state, req).await? {
            state
                .accounts
                .deletion()
                .cancel_deletion(principal.user.id, &client, "user")
                .await?;
        } else {
            let token = body
                .0
                .and_then(|b| b.token)
                .ok_or_else(|| missing("token", "is required when not signed in"))?;
            state
                .accounts
                .deletion()
                .cancel_deletion_with_token(&token, &client)
                .await?;
        }
        Ok(Json(DeletionCancelled {
            deletion_cancelled: true,
        }))
    }

    /// Where the deletion of your account stands
    #[oai(
        path = "/deletion-status",
        method = "get",
        operation_id = "auth_deletion_status"
    )]
    async fn deletion_status(
        &self,
        state: Data<&AppState>,
        auth: Auth,
    ) -> ApiResult<Json<DeletionStatusOut>> {
        let s = state
            .accounts
            .deletion()
            .deletion_status(&auth.session()?.user);
        Ok(Json(DeletionStatusOut {
            deletion_requested: s.requested,
            deletion_confirmed: s.confirmed,
            deletion_scheduled_for: s.scheduled_for,
            can_cancel: s.can_cancel,
            grace_period_days: s.grace_period_days,
        }))
    }
}
