//! `/auth`: registration, login, token refresh, logout, sessions, verification and passwords.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OAuthScopes, Object, OpenApi, SecurityScheme,
    auth::Bearer,
    param::{Cookie, Path},
    payload::{Form, Json},
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    ApiTags,
    models::{Message, UserOut},
    payload::OptionalJson,
};
use crate::{
    accounts::{
        ClientInfo, Credential, NewAccount, Principal, TokenPair,
        api_keys::{KEY_PREFIX, NewApiKey},
    },
    entities::api_key,
    error::{ApiError, ApiResult},
    state::AppState,
};

pub const REFRESH_COOKIE: &str = "refresh_token";

/// Scopes that API keys can carry. Access tokens from a password login act with the user's own
/// rights and need no scope.
#[derive(OAuthScopes)]
pub enum Scopes {
    /// Read system status
    #[oai(rename = "system:read")]
    SystemRead,
    /// Read background task status
    #[oai(rename = "tasks:read")]
    TasksRead,
    /// Submit background tasks
    #[oai(rename = "tasks:write")]
    TasksWrite,
}

/// `Authorization: Bearer <access token>`; the docs' Authorize button logs in through the
/// OAuth2 password flow at `/auth/login`.
#[derive(SecurityScheme)]
#[oai(
    rename = "OAuth2PasswordBearer",
    ty = "oauth2",
    flows(password(token_url = "/auth/login", scopes = "Scopes")),
    checker = "check_bearer"
)]
pub struct Auth(Principal);

impl Auth {
    /// The caller, for operations that need a signed-in user: API keys are refused (403), as
    /// they act only within their scopes.
    pub fn session(&self) -> ApiResult<&Principal> {
        match self.0.credential {
            Credential::Session(_) => Ok(&self.0),
            Credential::ApiKey { .. } => Err(ApiError::new(
                poem::http::StatusCode::FORBIDDEN,
                "api_key_not_allowed",
                "API keys can only call operations their scopes cover; sign in for this one",
            )),
        }
    }

    /// The caller, for operations an API key with `scope` may call too.
    pub fn scoped(&self, scope: &str) -> ApiResult<&Principal> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                poem::http::StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this API key lacks the `{scope}` scope"),
            ))
        }
    }

    /// A signed-in superuser, or an API key with `scope`.
    pub fn superuser_or_scope(&self, scope: &str) -> ApiResult<&Principal> {
        match self.0.credential {
            Credential::Session(_) => self.require_superuser().map(|()| &self.0),
            Credential::ApiKey { .. } => self.scoped(scope),
        }
    }

    /// A signed-in superuser, who acts under their own id (API keys are refused).
    pub fn admin(&self) -> ApiResult<crate::accounts::admin::Actor> {
        self.require_superuser()?;
        let principal = self.session()?;
        Ok(crate::accounts::admin::Actor::User(principal.user.id))
    }

    /// 403 unless the caller is a superuser.
    pub fn require_superuser(&self) -> ApiResult<()> {
        if self.0.user.is_superuser {
            Ok(())
        } else {
            Err(ApiError::new(
                poem::http::StatusCode::FORBIDDEN,
                "superuser_required",
                "this operation is for superusers",
            ))
        }
    }
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Principal> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| poem::Error::from(ApiError::internal("application state missing")))?;
    Ok(authenticate_token(state, &bearer.token).await?)
}

/// The caller behind an access token or an API key (`sk_...`), noted for the request log; a bad
/// one is a 401.
pub(super) async fn authenticate_token(state: &AppState, token: &str) -> ApiResult<Principal> {
    let principal = if token.starts_with(KEY_PREFIX) {
        state.accounts.authenticate_api_key(token).await
    } else {
        state.accounts.authenticate(token).await
    }
    .map_err(|e| ApiError::from(e).as_auth_failure())?;
    note_request_user(&principal);
    Ok(principal)
}

/// Records who is making the request, for the request log line.
pub(super) fn note_request_user(principal: &Principal) {
    let _ = crate::error::REQUEST_USER.try_with(|u| u.set(Some(principal.user.id)));
}

/// The bearer token of an `Authorization` header, for operations where it is optional.
pub(super) fn bearer_token(req: &Request) -> Option<String> {
    let value = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

/// The caller's address and user agent, for the audit log and the session list.
pub fn client_info(req: &Request) -> ClientInfo {
    ClientInfo {
        ip: Some(crate::security::client_ip(req)).filter(|ip| !ip.is_empty()),
        user_agent: req
            .headers()
            .get(poem::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

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

#[derive(Object, Debug)]
pub struct SessionOut {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    #[oai(nullable)]
    pub device_info: Option<String>,
    #[oai(nullable)]
    pub ip_address: Option<String>,
    /// True for the session the request was made with.
    pub is_current: bool,
}

#[derive(Object, Debug)]
pub struct SessionList {
    pub sessions: Vec<SessionOut>,
    pub total_sessions: u64,
}

#[derive(Object, Debug)]
pub struct RevokedSessions {
    pub message: String,
    pub revoked: u64,
}

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

impl From<api_key::Model> for ApiKeyOut {
    fn from(k: api_key::Model) -> Self {
        let is_active = k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > Utc::now());
        Self {
            scopes: k.scope_list(),
            id: k.id,
            label: k.label,
            prefix: k.prefix,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
            is_active,
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

#[derive(ApiResponse)]
pub enum Accepted {
    /// Accepted; the same answer whether or not an account exists for the address.
    #[oai(status = 202)]
    Accepted(Json<Message>),
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

fn tokens_response(state: &AppState, pair: TokenPair) -> Tokens {
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
                .logout_with_refresh(&token, &client)
                .await
                .map_err(|e| ApiError::from(e).as_auth_failure())?;
        } else if let Some(bearer) = bearer_token(req) {
            let principal = state
                .accounts
                .authenticate(&bearer)
                .await
                .map_err(|e| ApiError::from(e).as_auth_failure())?;
            state
                .accounts
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

    /// List your active sessions
    #[oai(
        path = "/sessions",
        method = "get",
        operation_id = "auth_sessions_list"
    )]
    async fn sessions(&self, state: Data<&AppState>, auth: Auth) -> ApiResult<Json<SessionList>> {
        let principal = auth.session()?;
        let current = principal.session_id();
        let sessions: Vec<SessionOut> = state
            .accounts
            .list_sessions(principal.user.id)
            .await?
            .into_iter()
            .map(|s| SessionOut {
                is_current: Some(s.id) == current,
                id: s.id,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                device_info: s.device_info,
                ip_address: s.ip_address,
            })
            .collect();
        Ok(Json(SessionList {
            total_sessions: sessions.len() as u64,
            sessions,
        }))
    }

    /// Revoke one of your sessions
    #[oai(
        path = "/sessions/:session_id",
        method = "delete",
        operation_id = "auth_sessions_revoke"
    )]
    async fn revoke_session(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        session_id: Path<Uuid>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .revoke_session(auth.session()?, session_id.0, &client_info(req))
            .await?;
        Ok(Json(Message::new("session revoked")))
    }

    /// Revoke all your sessions except this one
    #[oai(
        path = "/sessions",
        method = "delete",
        operation_id = "auth_sessions_revoke_others"
    )]
    async fn revoke_others(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
    ) -> ApiResult<Json<RevokedSessions>> {
        let revoked = state
            .accounts
            .revoke_other_sessions(auth.session()?, &client_info(req))
            .await?;
        Ok(Json(RevokedSessions {
            message: "all other sessions revoked".into(),
            revoked,
        }))
    }

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
        state.accounts.resend_verification(&body.0.email).await?;
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
            .reset_password(&body.token, body.new_password, &client_info(req))
            .await?;
        Ok(Json(Message::new(
            "password reset; sign in with the new password",
        )))
    }

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
            .rotate_api_key(auth.session()?, key_id.0, &client_info(req))
            .await?;
        Ok(KeyCreated::Created(Json(CreatedApiKey {
            api_key: key.into(),
            raw_key,
        })))
    }
}
