//! `/auth/oidc` and `/auth/identities`: signing in with OpenID Connect providers (the web flow
//! with a one-time login code, and native apps' ID tokens), the provider identities of an
//! account, and a first password for an account a provider made.

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Cookie, Path, Query},
    payload::{Form, Json},
};
use uuid::Uuid;

pub use super::oidc_schemas::*;
use super::{
    ApiTags,
    auth::{Tokens, tokens_response},
    models::Message,
};
use crate::http::extractors::{Auth, client_info};
use crate::{
    accounts::{ClientInfo, PendingAuthorization, VerifiedIdentity, tokens},
    config::ResponseMode,
    http::error::{ApiError, ApiResult},
    http::state::AppState,
    oidc::{ExpectedNonce, IdClaims},
};

/// Ties a web sign-in to the browser that started it.
pub const BINDING_COOKIE: &str = "keel_oidc_binding";

#[derive(ApiResponse)]
pub enum Redirect {
    /// To the provider (from `authorize`), or back to the app (from `callback`).
    #[oai(status = 302)]
    Found(
        #[oai(header = "Location")] String,
        #[oai(header = "Set-Cookie")] Option<String>,
        #[oai(header = "Cache-Control")] String,
    ),
}

impl Redirect {
    fn to(location: String, cookie: Option<String>) -> Self {
        Self::Found(location, cookie, "no-store".into())
    }
}

fn verified(provider: &str, claims: IdClaims) -> VerifiedIdentity {
    VerifiedIdentity {
        provider: provider.to_string(),
        subject: claims.subject,
        email: claims.email,
        email_verified: claims.email_verified,
        name: claims.name,
        preferred_username: claims.preferred_username,
    }
}

/// The URL providers send the browser back to.
fn callback_url(state: &AppState, provider: &str) -> String {
    format!(
        "{}{}/auth/oidc/{provider}/callback",
        state.settings.http.public_url, state.settings.http.api_prefix
    )
}

/// `uri` with `pairs` added to its query.
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.into()
        }
        Err(_) => uri.to_string(),
    }
}

fn binding_cookie(state: &AppState, value: &str, mode: ResponseMode) -> String {
    // A form_post callback is a cross-site POST: only a SameSite=None cookie comes along.
    let same_site = match mode {
        ResponseMode::Query => "Lax",
        ResponseMode::FormPost => "None; Secure",
    };
    let secure = if state.settings.auth.cookie_secure && mode == ResponseMode::Query {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{BINDING_COOKIE}={value}; Path={}/auth/oidc; Max-Age={}; HttpOnly; SameSite={same_site}{secure}",
        state.settings.http.api_prefix,
        crate::accounts::OIDC_AUTHORIZATION_TTL.as_secs(),
    )
}

/// The callback after the state checked out: the code exchanged, the token verified, the
/// account found, linked or made, and a login code for the app.
async fn finish_web_sign_in(
    state: &AppState,
    provider: &str,
    code: Option<String>,
    pending: &PendingAuthorization,
    client: &ClientInfo,
) -> ApiResult<String> {
    let code = code.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::new(
            poem::http::StatusCode::BAD_REQUEST,
            "oidc_code_rejected",
            "the provider sent neither a code nor an error",
        )
    })?;
    let callback = callback_url(state, provider);
    let id_token = state
        .oidc
        .exchange_code(provider, &code, &pending.code_verifier, &callback)
        .await?;
    let config = state.oidc.config(provider)?;
    let claims = state
        .oidc
        .verify_id_token(
            provider,
            &id_token,
            &config.client_ids[..1],
            ExpectedNonce::Exact(&pending.nonce),
        )
        .await?;
    let user = state
        .accounts
        .identities()
        .account_for_identity(&verified(provider, claims), client)
        .await?;
    Ok(state
        .accounts
        .identities()
        .issue_login_code(user.id)
        .await?)
}

async fn callback(
    state: &AppState,
    req: &Request,
    provider: &str,
    answer: CallbackForm,
    binding: Option<String>,
) -> ApiResult<Redirect> {
    state.oidc.config(provider)?;
    let st = answer
        .state
        .filter(|s| !s.is_empty())
        .ok_or(crate::accounts::IdentityError::StateInvalid)?;
    // Until the state checks out, nothing says where the browser may safely go: a problem.
    let pending = state
        .accounts
        .identities()
        .take_oidc_authorization(provider, &st, binding.as_deref())
        .await?;
    let client = client_info(req);
    let outcome = match answer.error {
        Some(error) => {
            // The person declined, or the provider refused: the app hears the provider's code.
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            Err((error, answer.error_description.unwrap_or_default()))
        }
        None => finish_web_sign_in(state, provider, answer.code, &pending, &client)
            .await
            .map_err(|e| {
                if e.status() >= 500 {
                    (
                        "server_error".to_string(),
                        "the sign-in could not be finished".into(),
                    )
                } else {
                    (e.code().to_string(), e.problem().detail.clone())
                }
            }),
    };
    let location = match outcome {
        Ok(login_code) => with_query(&pending.redirect_uri, &[("login_code", &login_code)]),
        Err((error, description)) => with_query(
            &pending.redirect_uri,
            &[
                ("error", &error),
                (
                    "error_description",
                    &description.chars().take(200).collect::<String>(),
                ),
            ],
        ),
    };
    Ok(Redirect::to(location, None))
}

pub struct OidcApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl OidcApi {
    /// Start signing in with a provider (web)
    ///
    /// Redirects the browser to the provider with `state`, `nonce` and a PKCE (S256)
    /// challenge, and sets a cookie that ties the sign-in to this browser. `redirect_uri` is
    /// where the browser comes back to with a `login_code` (or an `error`): one of
    /// `OIDC_REDIRECT_URIS`, the first when omitted; any other is refused with 422. The
    /// sign-in must come back within 10 minutes. Errors: 404 `unknown_provider`, 503
    /// `oidc_provider_unavailable`.
    #[oai(
        path = "/auth/oidc/:provider/authorize",
        method = "get",
        operation_id = "auth_oidc_authorize"
    )]
    async fn authorize(
        &self,
        state: Data<&AppState>,
        provider: Path<String>,
        redirect_uri: Query<Option<String>>,
        #[oai(name = "keel_oidc_binding")] binding: Cookie<Option<String>>,
    ) -> ApiResult<Redirect> {
        let provider = provider.0;
        let config = state.oidc.config(&provider)?;
        let allowed = &state.settings.oidc.redirect_uris;
        let redirect_uri = match redirect_uri.0 {
            None => allowed.first().cloned().unwrap_or_default(),
            Some(uri) if allowed.contains(&uri) => uri,
            Some(_) => {
                return Err(ApiError::validation(vec![crate::http::error::FieldError {
                    field: "redirect_uri".into(),
                    message:
                        "is not one of the redirect URIs this server allows (OIDC_REDIRECT_URIS)"
                            .into(),
                }]));
            }
        };
        // One binding per browser, kept across tabs; a malformed cookie gets a new one.
        let binding = binding
            .0
            .filter(|b| {
                b.len() == 43
                    && b.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
            .unwrap_or_else(tokens::new_opaque_token);
        let started = state
            .accounts
            .identities()
            .begin_oidc_authorization(&provider, &redirect_uri, &binding)
            .await?;
        let location = state
            .oidc
            .authorization_url(
                &provider,
                &callback_url(&state, &provider),
                &started.state,
                &started.nonce,
                &started.code_challenge,
            )
            .await?;
        Ok(Redirect::to(
            location,
            Some(binding_cookie(&state, &binding, config.response_mode)),
        ))
    }

    /// The provider's answer (web)
    ///
    /// Where the provider sends the browser back. With a valid `state` from this browser,
    /// exchanges the code, verifies the ID token and redirects to the sign-in's
    /// `redirect_uri` with a one-time `login_code` for `/auth/oidc/exchange` — or with
    /// `error` and `error_description` (`account_exists_unverified`,
    /// `provider_email_unverified`, `id_token_invalid`, `oidc_code_rejected`,
    /// `oidc_provider_unavailable`, `account_deleted`, or the provider's own code such as
    /// `access_denied`). Tokens never travel in a URL. An unknown, used, expired or other
    /// browser's `state` is a 400 (`oidc_state_invalid`, `oidc_state_expired`).
    #[oai(
        path = "/auth/oidc/:provider/callback",
        method = "get",
        operation_id = "auth_oidc_callback"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn callback_get(
        &self,
        state: Data<&AppState>,
        req: &Request,
        provider: Path<String>,
        code: Query<Option<String>>,
        #[oai(name = "state")] oidc_state: Query<Option<String>>,
        error: Query<Option<String>>,
        error_description: Query<Option<String>>,
        #[oai(name = "keel_oidc_binding")] binding: Cookie<Option<String>>,
    ) -> ApiResult<Redirect> {
        let answer = CallbackForm {
            code: code.0,
            state: oidc_state.0,
            error: error.0,
            error_description: error_description.0,
            user: None,
        };
        callback(&state, req, &provider.0, answer, binding.0).await
    }

    /// The provider's answer, posted (web)
    ///
    /// The same as the `GET` callback, for providers that post it (`response_mode=form_post`:
    /// Apple).
    #[oai(
        path = "/auth/oidc/:provider/callback",
        method = "post",
        operation_id = "auth_oidc_callback_form"
    )]
    async fn callback_post(
        &self,
        state: Data<&AppState>,
        req: &Request,
        provider: Path<String>,
        form: Form<CallbackForm>,
        #[oai(name = "keel_oidc_binding")] binding: Cookie<Option<String>>,
    ) -> ApiResult<Redirect> {
        callback(&state, req, &provider.0, form.0, binding.0).await
    }

    /// Finish a web sign-in
    ///
    /// Trades the `login_code` of the callback's redirect for the token pair. A code serves
    /// once within 60 seconds (400 `token_invalid`, `token_expired`). An account with
    /// two-factor sign-in answers `401 mfa_required` with an `mfa_token` for
    /// `/auth/mfa/verify`.
    #[oai(
        path = "/auth/oidc/exchange",
        method = "post",
        operation_id = "auth_oidc_exchange"
    )]
    async fn exchange(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: Json<ExchangeRequest>,
    ) -> ApiResult<Tokens> {
        let pair = state
            .accounts
            .identities()
            .exchange_login_code(&body.0.login_code, &client_info(req))
            .await?;
        Ok(tokens_response(&state, pair))
    }

    /// Sign in with a provider's ID token (native apps)
    ///
    /// For an app that signed in with the provider's SDK: the ID token must be signed by the
    /// provider (RS256 or ES256, its published keys), issued by it for one of the configured
    /// client IDs, current (60 seconds of clock skew), and carry the request's `nonce` (raw or
    /// SHA-256 hex); each nonce serves once. The first sign-in makes a verified account when
    /// the provider asserts a verified email, or links the account with that address when it
    /// verified it too. Errors: 401 `id_token_invalid` (the detail says why), 401
    /// `nonce_reused`, 409 `account_exists_unverified`, 403 `provider_email_unverified`,
    /// 401 `mfa_required`, 404 `unknown_provider`, 503 `oidc_provider_unavailable`.
    #[oai(
        path = "/auth/oidc/:provider/token",
        method = "post",
        operation_id = "auth_oidc_token"
    )]
    async fn native_token(
        &self,
        state: Data<&AppState>,
        req: &Request,
        provider: Path<String>,
        body: Json<NativeTokenRequest>,
    ) -> ApiResult<Tokens> {
        let provider = provider.0;
        let config = state.oidc.config(&provider)?;
        let claims = state
            .oidc
            .verify_id_token(
                &provider,
                &body.0.id_token,
                &config.client_ids,
                ExpectedNonce::RawOrSha256(&body.0.nonce),
            )
            .await?;
        state
            .accounts
            .identities()
            .use_native_nonce(&provider, &claims.nonce, claims.expires_at)
            .await?;
        let client = client_info(req);
        let pair = state
            .accounts
            .identities()
            .sign_in_with_identity(&verified(&provider, claims), &client)
            .await?;
        Ok(tokens_response(&state, pair))
    }

    /// List your sign-in providers
    #[oai(
        path = "/auth/identities",
        method = "get",
        operation_id = "auth_identities_list"
    )]
    async fn identities(
        &self,
        state: Data<&AppState>,
        auth: Auth,
    ) -> ApiResult<Json<IdentityList>> {
        let identities = state.accounts.identities().list(auth.session()?).await?;
        Ok(Json(IdentityList {
            identities: identities.into_iter().map(Into::into).collect(),
        }))
    }

    /// Remove a sign-in provider
    ///
    /// Refused with 409 `last_sign_in_method` when the account has no password and this is
    /// its only provider. A notice is mailed.
    #[oai(
        path = "/auth/identities/:id",
        method = "delete",
        operation_id = "auth_identities_delete"
    )]
    async fn unlink(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        id: Path<Uuid>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .identities()
            .unlink_identity(auth.session()?, id.0, &client_info(req))
            .await?;
        Ok(Json(Message::new("sign-in provider removed")))
    }

    /// Set a first password
    ///
    /// For an account a provider made, which has none (`has_password: false` at
    /// `/users/me`): from now on it can sign in with it too. 409 `password_already_set` when
    /// it has one (change it at `/auth/change-password`). A notice is mailed; sessions stay.
    #[oai(
        path = "/auth/set-password",
        method = "post",
        operation_id = "auth_set_password"
    )]
    async fn set_password(
        &self,
        state: Data<&AppState>,
        req: &Request,
        auth: Auth,
        body: Json<SetPasswordRequest>,
    ) -> ApiResult<Json<Message>> {
        state
            .accounts
            .identities()
            .set_password(auth.session()?, body.0.new_password, &client_info(req))
            .await?;
        Ok(Json(Message::new("password set")))
    }
}
