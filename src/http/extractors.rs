//! What handlers take from a request besides their parameters: the caller (a bearer access
//! token or an API key, checked once by poem-openapi's security scheme) with the rights it
//! carries, the scopes API keys can hold, and the caller's address and user agent.

use poem::Request;
use poem_openapi::{OAuthScopes, SecurityScheme, auth::Bearer};

use crate::{
    accounts::{
        ClientInfo, Credential, Principal,
        api_keys::{KEY_PREFIX, Scope},
    },
    http::{
        error::{ApiError, ApiResult},
        state::AppState,
    },
};

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
    pub fn scoped(&self, scope: Scope) -> ApiResult<&Principal> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                poem::http::StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this API key lacks the `{}` scope", scope.as_str()),
            ))
        }
    }

    /// A signed-in superuser, or an API key with `scope`.
    pub fn superuser_or_scope(&self, scope: Scope) -> ApiResult<&Principal> {
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
pub async fn authenticate_token(state: &AppState, token: &str) -> ApiResult<Principal> {
    let principal = if token.starts_with(KEY_PREFIX) {
        state.accounts.api_keys().authenticate_api_key(token).await
    } else {
        state.accounts.sessions().authenticate(token).await
    }
    .map_err(|e| ApiError::from(e).as_auth_failure())?;
    note_request_user(&principal);
    Ok(principal)
}

/// Records who is making the request, for the request log line.
pub fn note_request_user(principal: &Principal) {
    let _ = super::error::REQUEST_USER.try_with(|u| u.set(Some(principal.user.id)));
}

/// The bearer token of an `Authorization` header, for operations where it is optional.
pub fn bearer_token(req: &Request) -> Option<String> {
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
        ip: Some(super::client_addr::client_ip(req)).filter(|ip| !ip.is_empty()),
        user_agent: req
            .headers()
            .get(poem::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}
