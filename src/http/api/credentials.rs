//! `/auth` credentials: changing the password, verifying the email address, and the
//! forgotten-password reset.

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    models::{Accepted, Message},
};
use crate::http::extractors::{Auth, client_info};
use crate::{http::error::ApiResult, http::state::AppState};

#[derive(Object, Debug)]
pub struct ChangePasswordRequest {
    #[oai(write_only)]
    pub current_password: String,
    /// The password rules of registration; it must differ from the current one.
    #[oai(write_only)]
    pub new_password: String,
}

#[derive(Object, Debug)]
pub struct TokenRequest {
    /// The token from the mailed link.
    pub token: String,
}

#[derive(Object, Debug)]
pub struct Verified {
    pub verified: bool,
}

#[derive(Object, Debug)]
pub struct EmailRequest {
    pub email: String,
}

#[derive(Object, Debug)]
pub struct ResetPasswordRequest {
    pub token: String,
    /// The password rules of registration.
    #[oai(write_only)]
    pub new_password: String,
}

pub struct CredentialsApi;

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl CredentialsApi {
    /// Change your password
    ///
    /// Every other session is signed out and a notice is mailed.
    #[oai(
        path = "/change-password",
        method = "post",
        operation_id = "auth_change_password"
    )]
    async fn change_password(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<ChangePasswordRequest>,
    ) -> ApiResult<Json<Message>> {
        let body = body.0;
        state
            .accounts
            .passwords()
            .change_password(
                auth.session()?,
                body.current_password,
                body.new_password,
                &client_info(req),
            )
            .await?;
        Ok(Json(Message::new("password changed")))
    }

    /// Verify your email address with the mailed token
    #[oai(
        path = "/verify-email",
        method = "post",
        operation_id = "auth_verify_email"
    )]
    async fn verify_email(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<TokenRequest>,
    ) -> ApiResult<Json<Verified>> {
        state
            .accounts
            .registration()
            .verify_email(&body.0.token, &client_info(req))
            .await?;
        Ok(Json(Verified { verified: true }))
    }

    /// Send the verification mail again
    #[oai(
        path = "/resend-verification",
        method = "post",
        operation_id = "auth_resend_verification"
    )]
    async fn resend_verification(
        &self,
        state: Data<&AppState>,
        body: Json<EmailRequest>,
    ) -> ApiResult<Accepted> {
        state
            .accounts
            .registration()
            .resend_verification(&body.0.email)
            .await?;
        Ok(Accepted::Accepted(Json(Message::new(
            "if an unverified account exists for this address, a verification mail is on its way",
        ))))
    }

    /// Ask for a password reset mail
    #[oai(
        path = "/forgot-password",
        method = "post",
        operation_id = "auth_forgot_password"
    )]
    async fn forgot_password(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<EmailRequest>,
    ) -> ApiResult<Accepted> {
        state
            .accounts
            .passwords()
            .forgot_password(&body.0.email, &client_info(req))
            .await?;
        Ok(Accepted::Accepted(Json(Message::new(
            "if an account exists for this address, a password reset mail is on its way",
        ))))
    }

    /// Set a new password with the mailed token
    ///
    /// Every session of the account is signed out.
    #[oai(
        path = "/reset-password",
        method = "post",
        operation_id = "auth_reset_password"
    )]
    async fn reset_password(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<ResetPasswordRequest>,
    ) -> ApiResult<Json<Message>> {
        let body = body.0;
        state
            .accounts
            .passwords()
            .reset_password(&body.token, body.new_password, &client_info(req))
            .await?;
        Ok(Json(Message::new(
            "password reset; sign in with the new password",
        )))
    }
}

#[derive(Object, Debug)]
pub struct ChangeEmailRequest {
    /// The address to move the account to; a confirmation link is mailed there.
    pub new_email: String,
    /// Your current password.
    #[oai(write_only)]
    pub password: String,
}

pub struct EmailChangeApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl EmailChangeApi {
    /// Change your email address
    ///
    /// Mails a confirmation link (`FRONTEND_URL/confirm-email-change?token=`) to the new
    /// address; nothing changes until it is followed. The answer is the same whether or not
    /// the address belongs to another account.
    #[oai(
        path = "/users/me/email",
        method = "post",
        operation_id = "users_change_email"
    )]
    async fn change_email(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<ChangeEmailRequest>,
    ) -> ApiResult<Accepted> {
        let body = body.0;
        state
            .accounts
            .profile()
            .request_email_change(
                auth.session()?,
                &body.new_email,
                body.password,
                &client_info(req),
            )
            .await?;
        Ok(Accepted::Accepted(Json(Message::new(
            "a confirmation link is on its way to the new address",
        ))))
    }

    /// Confirm a new email address with the mailed token
    ///
    /// The account's address changes now (and counts as verified); the old address gets a
    /// notice with a link that undoes the change for 7 days.
    #[oai(
        path = "/auth/confirm-email-change",
        method = "post",
        operation_id = "auth_confirm_email_change"
    )]
    async fn confirm(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<TokenRequest>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .profile()
            .confirm_email_change(&body.0.token, &client_info(req))
            .await?;
        Ok(Json(Message::new("the email address was changed")))
    }

    /// Undo an email change with the token mailed to the old address
    ///
    /// The old address is the account's again, every session ends, and a password reset link
    /// is mailed to it.
    #[oai(
        path = "/auth/revert-email-change",
        method = "post",
        operation_id = "auth_revert_email_change"
    )]
    async fn revert(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<TokenRequest>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .profile()
            .revert_email_change(&body.0.token, &client_info(req))
            .await?;
        Ok(Json(Message::new(
            "the old address is back; every session was signed out and a password reset link was mailed to it",
        )))
    }
}
