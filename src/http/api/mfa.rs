//! `/auth/mfa`: two-factor sign-in with TOTP and recovery codes.

use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{
    ApiTags,
    auth::{Tokens, tokens_response},
    models::Message,
};
use crate::http::extractors::{Auth, client_info};
use crate::{http::error::ApiResult, http::state::AppState};

#[derive(Object, Debug)]
pub struct TotpSetupRequest {
    /// Your current password.
    #[oai(write_only)]
    pub password: String,
}

#[derive(Object, Debug)]
pub struct TotpSetupResponse {
    /// The shared secret, base32 (RFC 4648) without padding, for typing into an app.
    pub secret: String,
    /// The same as an `otpauth://` URI, for a QR code.
    pub otpauth_uri: String,
}

#[derive(Object, Debug)]
pub struct MfaCodeRequest {
    /// The 6-digit code the authenticator app shows now.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub code: String,
}

#[derive(Object, Debug)]
pub struct RecoveryCodes {
    /// Ten single-use codes, each standing in for an app code once. Shown only now: keep
    /// them somewhere safe.
    pub recovery_codes: Vec<String>,
}

#[derive(Object, Debug)]
pub struct MfaVerifyRequest {
    /// The `mfa_token` of the `mfa_required` answer to the login.
    #[oai(validator(min_length = 1, max_length = 128))]
    pub mfa_token: String,
    /// A current 6-digit code, or one unused recovery code.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub code: String,
}

#[derive(Object, Debug)]
pub struct TotpDisableRequest {
    #[oai(write_only)]
    pub password: String,
    /// A current 6-digit code, or one unused recovery code.
    #[oai(validator(min_length = 1, max_length = 64))]
    pub code: String,
}

pub struct MfaApi;

#[OpenApi(prefix_path = "/auth/mfa", tag = "ApiTags::Auth")]
impl MfaApi {
    /// Start setting up two-factor sign-in
    ///
    /// Returns a new TOTP secret (RFC 6238: SHA-1, 6 digits, 30 seconds) to add to an
    /// authenticator app. Nothing changes at sign-in until it is confirmed with a code; asking
    /// again replaces an unconfirmed secret.
    #[oai(
        path = "/totp/setup",
        method = "post",
        operation_id = "auth_mfa_totp_setup"
    )]
    async fn setup(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<TotpSetupRequest>,
    ) -> ApiResult<Json<TotpSetupResponse>> {
        let setup = state
            .accounts
            .mfa()
            .totp_setup(auth.session()?, body.0.password, &client_info(req))
            .await?;
        Ok(Json(TotpSetupResponse {
            secret: setup.secret,
            otpauth_uri: setup.otpauth_uri,
        }))
    }

    /// Turn two-factor sign-in on with a first code
    ///
    /// From now on a login with the right password answers `401 mfa_required` with an
    /// `mfa_token` for `/auth/mfa/verify`. Returns the recovery codes, once. Every other
    /// session is signed out and a notice is mailed.
    #[oai(
        path = "/totp/confirm",
        method = "post",
        operation_id = "auth_mfa_totp_confirm"
    )]
    async fn confirm(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<MfaCodeRequest>,
    ) -> ApiResult<Json<RecoveryCodes>> {
        let recovery_codes = state
            .accounts
            .mfa()
            .totp_confirm(auth.session()?, &body.0.code, &client_info(req))
            .await?;
        Ok(Json(RecoveryCodes { recovery_codes }))
    }

    /// Finish a sign-in with a second factor
    ///
    /// Takes the `mfa_token` of the login's `mfa_required` answer and a current code (a code
    /// serves once) or an unused recovery code; answers with the token pair. Wrong codes count
    /// towards the account's failed sign-ins, and the fifth for one token ends it.
    #[oai(path = "/verify", method = "post", operation_id = "auth_mfa_verify")]
    async fn verify(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<MfaVerifyRequest>,
    ) -> ApiResult<Tokens> {
        let body = body.0;
        let pair = state
            .accounts
            .sessions()
            .mfa_verify(&body.mfa_token, &body.code, &client_info(req))
            .await?;
        Ok(tokens_response(&state, pair))
    }

    /// Replace your recovery codes
    ///
    /// Needs a current app code. The earlier codes stop working; every other session is
    /// signed out and a notice is mailed.
    #[oai(
        path = "/recovery-codes",
        method = "post",
        operation_id = "auth_mfa_recovery_codes"
    )]
    async fn recovery_codes(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<MfaCodeRequest>,
    ) -> ApiResult<Json<RecoveryCodes>> {
        let recovery_codes = state
            .accounts
            .mfa()
            .regenerate_recovery_codes(auth.session()?, &body.0.code, &client_info(req))
            .await?;
        Ok(Json(RecoveryCodes { recovery_codes }))
    }

    /// Turn two-factor sign-in off
    ///
    /// Needs the password and a current code or a recovery code. Every other session is
    /// signed out and a notice is mailed.
    #[oai(
        path = "/totp",
        method = "delete",
        operation_id = "auth_mfa_totp_disable"
    )]
    async fn disable(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<TotpDisableRequest>,
    ) -> ApiResult<Json<Message>> {
        let body = body.0;
        state
            .accounts
            .mfa()
            .totp_disable(
                auth.session()?,
                body.password,
                &body.code,
                &client_info(req),
            )
            .await?;
        Ok(Json(Message::new("two-factor sign-in is off")))
    }
}
