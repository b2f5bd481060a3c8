//! `/auth` sign-in: registration, login, token refresh and logout.

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Cookie,
    payload::{Form, Json},
};
use serde::Deserialize;

use super::{
    ApiTags,
    models::{Message, UserOut},
    payload::OptionalJson,
};
use crate::http::extractors::{bearer_token, client_info};
use crate::{
    accounts::{NewAccount, TokenPair},
    http::error::{ApiError, ApiResult},
    http::state::AppState,
};

pub const REFRESH_COOKIE: &str = "refresh_token";

#[derive(Object, Debug)]
pub struct RegisterRequest {
    /// A valid address; stored lower-cased.
    pub email: String,
    /// 3–30 characters of letters, digits, `_` and `-`.
    pub username: String,
    /// 8–128 characters with an upper- and a lower-case letter (A–Z, a–z), a digit and a
    /// character that is none of these; a password on Keel's list of common passwords is
    /// refused too.
    #[oai(write_only)]
    pub password: String,
}

/// OAuth2 password grant form (RFC 6749 §4.3); `username` may be the email or the username.
#[derive(Object, Deserialize, Debug)]
pub struct LoginForm {
    pub username: String,
    #[oai(write_only)]
    pub password: String,
    /// Accepted for OAuth2 clients; only `password` is meaningful.
    #[oai(nullable)]
    pub grant_type: Option<String>,
    #[oai(nullable)]
    pub scope: Option<String>,
    #[oai(nullable)]
    pub client_id: Option<String>,
    #[oai(nullable)]
    pub client_secret: Option<String>,
}

#[derive(Object, Debug)]
pub struct TokenResponse {
    /// A JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// An opaque token for `/auth/refresh`; each use returns a new one and retires this one.
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Object, Debug)]
pub struct RefreshRequest {
    /// The refresh token; may be omitted when the `refresh_token` cookie is sent.
    #[oai(nullable)]
    pub refresh_token: Option<String>,
}

#[derive(ApiResponse)]
pub enum Created {
    /// The account was created and a verification mail is on its way.
    #[oai(status = 201)]
    Created(Json<UserOut>),
}

#[derive(ApiResponse)]
pub enum Tokens {
    /// A new token pair; the refresh token is also set as an HttpOnly cookie.
    #[oai(status = 200)]
    Ok(Json<TokenResponse>, #[oai(header = "Set-Cookie")] String),
}

#[derive(ApiResponse)]
pub enum LoggedOut {
    /// The session has ended; the refresh cookie is cleared.
    #[oai(status = 200)]
    Ok(Json<Message>, #[oai(header = "Set-Cookie")] String),
}

fn refresh_cookie(state: &AppState, value: &str, max_age: u64) -> String {
    format!(
        "{REFRESH_COOKIE}={value}; Path={}/auth; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        state.settings.http.api_prefix,
        if state.settings.auth.cookie_secure {
            "; Secure"
        } else {
            ""
        }
    )
}

pub(super) fn tokens_response(state: &AppState, pair: TokenPair) -> Tokens {
    let cookie = refresh_cookie(
        state,
        &pair.refresh_token,
        state.settings.auth.refresh_token_ttl.as_secs(),
    );
    Tokens::Ok(
        Json(TokenResponse {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "bearer".into(),
            expires_in: pair.expires_in,
        }),
        cookie,
    )
}

pub struct AuthApi;

#[OpenApi(prefix_path = "/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Sends a verification mail. Fields other than email, username and password are ignored.
    #[oai(path = "/register", method = "post", operation_id = "auth_register")]
    async fn register(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<RegisterRequest>,
    ) -> ApiResult<Created> {
        let body = body.0;
        let user = state
            .accounts
            .registration()
            .register(
                NewAccount {
                    email: body.email,
                    username: body.username,
                    password: body.password,
                },
                &client_info(req),
            )
            .await?;
        Ok(Created::Created(Json(user.into())))
    }

    /// Log in with email or username and password
    ///
    /// OAuth2 password grant: `application/x-www-form-urlencoded` with `username` and `password`.
    /// On an account with two-factor sign-in the right password answers `401` with `code:
    /// mfa_required` and an `mfa_token` to finish at `/auth/mfa/verify`.
    #[oai(path = "/login", method = "post", operation_id = "auth_login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        req: &Request,
        form: Form<LoginForm>,
    ) -> ApiResult<Tokens> {
        let form = form.0;
        let outcome = state
            .accounts
            .sessions()
            .login(&form.username, form.password, &client_info(req))
            .await;
        Ok(tokens_response(&state, outcome?))
    }

    /// Exchange a refresh token for a new pair
    ///
    /// The token comes from the `refresh_token` cookie or the body. The old token stops working;
    /// presenting it again ends the session.
    #[oai(path = "/refresh", method = "post", operation_id = "auth_refresh")]
    async fn refresh(
        &self,
        state: Data<&AppState>,
        req: &Request,
        #[oai(name = "refresh_token")] cookie: Cookie<Option<String>>,
        body: OptionalJson<RefreshRequest>,
    ) -> ApiResult<Tokens> {
        let token = body
            .0
            .and_then(|b| b.refresh_token)
            .or(cookie.0)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "not_authenticated",
                    "no refresh token in the body or cookie",
                )
            })?;
        let pair = state
            .accounts
            .sessions()
            .refresh(&token, &client_info(req))
            .await
            .map_err(|e| ApiError::from(e).as_auth_failure())?;
        Ok(tokens_response(&state, pair))
    }

    /// End the current session
    ///
    /// Identifies the session by the refresh token (cookie or body) or the bearer access token.
    /// Its access tokens stop working at once.
    #[oai(path = "/logout", method = "post", operation_id = "auth_logout")]
    async fn logout(
        &self,
        state: Data<&AppState>,
        req: &Request,
        #[oai(name = "refresh_token")] cookie: Cookie<Option<String>>,
        body: OptionalJson<RefreshRequest>,
    ) -> ApiResult<LoggedOut> {
        let client = client_info(req);
        if let Some(token) = body.0.and_then(|b| b.refresh_token).or(cookie.0) {
            state
                .accounts
                .sessions()
                .logout_with_refresh(&token, &client)
                .await
                .map_err(|e| ApiError::from(e).as_auth_failure())?;
        } else if let Some(bearer) = bearer_token(req) {
            let principal = state
                .accounts
                .sessions()
                .authenticate(&bearer)
                .await
                .map_err(|e| ApiError::from(e).as_auth_failure())?;
            state
                .accounts
                .sessions()
                .logout_session(
                    principal.user.id,
                    principal.session_id().unwrap_or_default(),
                    &client,
                )
                .await?;
        } else {
            return Err(ApiError::unauthorized(
                "not_authenticated",
                "send the refresh token (cookie or body) or a bearer access token",
            ));
        }
        Ok(LoggedOut::Ok(
            Json(Message::new("logged out")),
            refresh_cookie(&state, "", 0),
        ))
    }
}
