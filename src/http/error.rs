//! The one HTTP error type: RFC 9457 `application/problem+json` bodies with a stable `code`.
//!
//! Handlers return [`ApiError`]; the outer middleware in `app.rs` turns every other error (unknown
//! route, wrong method, a panic) into the same shape, so a client never sees anything else.

use poem::http::StatusCode;
use poem_openapi::{ApiResponse, Object, payload::Json};
use serde::Serialize;

use crate::accounts::{
    AccountError, AdminError, DeletionError, FieldProblem, IdentityError, MfaError, SignInError,
};

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

pub use crate::telemetry::REQUEST_ID;

tokio::task_local! {
    /// The authenticated user of the request being served, once known, for the request log.
    pub static REQUEST_USER: std::cell::Cell<Option<uuid::Uuid>>;
}

/// The id of the request being served; empty outside one.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// One invalid input field.
#[derive(Object, Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The request field, e.g. `password`.
    pub field: String,
    /// What is wrong with it, readable by a person.
    pub message: String,
}

impl From<FieldProblem> for FieldError {
    fn from(p: FieldProblem) -> Self {
        Self {
            field: p.field,
            message: p.message,
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Object, Serialize, Debug, Clone)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:keel:problem:<code>`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub type_: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine-readable code such as `invalid_credentials`.
    pub code: String,
    /// The request's `X-Request-Id`, for support.
    pub request_id: String,
    /// Field-level problems, when the request had invalid fields.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// With `code: mfa_required`: the token for `/auth/mfa/verify` (single use, 5 minutes).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("urn:keel:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            request_id: current_request_id(),
            errors: None,
            mfa_token: None,
        }
    }
}

/// Every error an operation can answer with, each as `application/problem+json`.
#[derive(ApiResponse, Debug)]
#[oai(bad_request_handler = "from_request_error")]
pub enum ApiError {
    /// The request is malformed.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Box<Problem>>),
    /// Missing, invalid or expired credentials.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(
        Json<Box<Problem>>,
        #[oai(header = "WWW-Authenticate")] String,
    ),
    /// Authenticated, but not allowed to do this.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Box<Problem>>),
    /// No such resource.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Box<Problem>>),
    /// The request conflicts with existing data.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Box<Problem>>),
    /// The request body is too large.
    #[oai(status = 413, content_type = "application/problem+json")]
    PayloadTooLarge(Json<Box<Problem>>),
    /// The request body has a content type this operation does not take.
    #[oai(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Json<Box<Problem>>),
    /// The request is well-formed but its fields break the rules; see `errors`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Box<Problem>>),
    /// Too many requests; retry after the given number of seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(
        Json<Box<Problem>>,
        #[oai(header = "Retry-After")] Option<u64>,
    ),
    /// An unexpected server fault; the body carries no internals.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Box<Problem>>),
    /// A dependency is unavailable; retry later.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Box<Problem>>),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self::from_problem(Problem::new(status, code, detail))
    }

    pub fn from_problem(problem: Problem) -> Self {
        let json = Json(Box::new(problem));
        match json.0.status {
            400 => Self::BadRequest(json),
            401 => Self::Unauthorized(json, "Bearer".to_string()),
            403 => Self::Forbidden(json),
            404 => Self::NotFound(json),
            409 => Self::Conflict(json),
            413 => Self::PayloadTooLarge(json),
            415 => Self::UnsupportedMediaType(json),
            422 => Self::Unprocessable(json),
            429 => Self::TooManyRequests(json, None),
            503 => Self::Unavailable(json),
            // Any other 4xx is reported as a bad request rather than lost.
            s if (400..500).contains(&s) => Self::BadRequest(Json(Box::new(Problem {
                status: 400,
                ..*json.0
            }))),
            _ => Self::Internal(json),
        }
    }

    pub fn problem(&self) -> &Problem {
        match self {
            Self::BadRequest(p)
            | Self::Unauthorized(p, _)
            | Self::Forbidden(p)
            | Self::NotFound(p)
            | Self::Conflict(p)
            | Self::PayloadTooLarge(p)
            | Self::UnsupportedMediaType(p)
            | Self::Unprocessable(p)
            | Self::TooManyRequests(p, _)
            | Self::Internal(p)
            | Self::Unavailable(p) => &p.0,
        }
    }

    pub fn status(&self) -> u16 {
        self.problem().status
    }

    pub fn code(&self) -> &str {
        &self.problem().code
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let problem = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail);
        Self::TooManyRequests(Json(Box::new(problem)), Some(retry_after_secs))
    }

    pub fn unauthorized(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "one or more fields are invalid; see errors",
        );
        p.errors = Some(errors);
        Self::from_problem(p)
    }

    /// A server fault with a cause: logged with its whole chain of sources, reported to the
    /// client without any of it.
    pub fn internal_error(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::internal(crate::telemetry::cause_chain(error))
    }

    /// A server fault: logged in full here, reported to the client without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, request_id = %current_request_id(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an unexpected error occurred; quote the request_id when reporting it",
        )
    }

    /// Turns token errors into 401s, for operations where the token is the credential.
    pub fn as_auth_failure(self) -> Self {
        match self.code() {
            "token_invalid" | "token_expired" => {
                let detail = self.problem().detail.clone();
                let code = self.code().to_string();
                Self::unauthorized(&code, detail)
            }
            _ => self,
        }
    }
}

/// A database failure is a server fault: logged with its cause, answered as a 500.
impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::internal_error(&e)
    }
}

/// The problem for a poem or poem-openapi error: parse failures, missing auth, unknown routes.
pub fn problem_for_poem_error(err: &poem::Error) -> Problem {
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseMultipartError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };
    let status = err.status();
    let (code, detail) = if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        (
            "invalid_body",
            format!("the request body could not be read: {}", e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        (
            "invalid_parameter",
            format!("parameter `{}` is invalid: {}", e.name, e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        (
            "invalid_parameter",
            format!("a path parameter is invalid: {}", e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ParseMultipartError>() {
        (
            "invalid_body",
            format!("the multipart body could not be read: {}", e.reason),
        )
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        ("unsupported_media_type", e.to_string())
    } else if err.is::<AuthorizationError>() {
        (
            "not_authenticated",
            "this operation needs an `Authorization: Bearer <token>` header".to_string(),
        )
    } else {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::UNAUTHORIZED => "not_authenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::LENGTH_REQUIRED => "length_required",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            s if s.is_server_error() => "internal_error",
            _ => "bad_request",
        };
        let detail = if status.is_server_error() {
            "an unexpected error occurred; quote the request_id when reporting it".to_string()
        } else {
            match err.to_string() {
                s if s.is_empty() => status.canonical_reason().unwrap_or("error").to_lowercase(),
                s => s,
            }
        };
        (code, detail)
    };
    Problem::new(status, code, detail)
}

fn from_request_error(err: poem::Error) -> ApiError {
    ApiError::from_problem(problem_for_poem_error(&err))
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        use AccountError as E;
        match e {
            E::Validation(problems) => {
                Self::validation(problems.into_iter().map(Into::into).collect())
            }
            E::EmailTaken => taken(
                e.to_string(),
                "email_already_exists",
                "email",
                "is already registered",
            ),
            E::UsernameTaken => taken(
                e.to_string(),
                "username_already_exists",
                "username",
                "is already taken",
            ),
            // The request is well formed; the credential in it is refused.
            E::WrongPassword => Self::new(
                StatusCode::FORBIDDEN,
                "invalid_current_password",
                e.to_string(),
            ),
            E::PasswordNotSet => Self::new(StatusCode::CONFLICT, "password_not_set", e.to_string()),
            E::TokenInvalid => Self::new(StatusCode::BAD_REQUEST, "token_invalid", e.to_string()),
            E::TokenExpired => Self::new(StatusCode::BAD_REQUEST, "token_expired", e.to_string()),
            E::NotFound => Self::not_found("no such resource"),
            E::AccountDeleted => Self::new(StatusCode::CONFLICT, "account_deleted", e.to_string()),
            E::Db(_) | E::Hash(_) | E::Signing(_) => Self::internal_error(&e),
        }
    }
}

/// A 409 for a name already in use, pointing at its field.
fn taken(detail: String, code: &str, field: &str, message: &str) -> ApiError {
    let mut p = Problem::new(StatusCode::CONFLICT, code, detail);
    p.errors = Some(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }]);
    ApiError::from_problem(p)
}

impl From<SignInError> for ApiError {
    fn from(e: SignInError) -> Self {
        use SignInError as E;
        match e {
            E::InvalidCredentials => Self::unauthorized("invalid_credentials", e.to_string()),
            E::TooManyFailedLogins { retry_after_secs } => {
                Self::too_many_requests(e.to_string(), retry_after_secs)
            }
            E::LimiterUnavailable => crate::ratelimit::Unavailable.into(),
            E::EmailNotVerified => {
                Self::new(StatusCode::FORBIDDEN, "email_not_verified", e.to_string())
            }
            E::SessionRevoked => Self::unauthorized("session_revoked", e.to_string()),
            E::ApiKeyRevoked => Self::unauthorized("api_key_revoked", e.to_string()),
            E::MfaRequired { ref mfa_token } => {
                let mut p = Problem::new(StatusCode::UNAUTHORIZED, "mfa_required", e.to_string());
                p.mfa_token = Some(mfa_token.clone());
                Self::from_problem(p)
            }
            E::MfaCodeRejected { .. } => Self::unauthorized("invalid_mfa_code", e.to_string()),
            E::MfaTokenInvalid => Self::unauthorized("mfa_token_invalid", e.to_string()),
            E::MfaTokenExpired => Self::unauthorized("mfa_token_expired", e.to_string()),
            E::Account(e) => e.into(),
        }
    }
}

impl From<MfaError> for ApiError {
    fn from(e: MfaError) -> Self {
        use MfaError as E;
        let code = match e {
            E::WrongCode => {
                return Self::new(StatusCode::FORBIDDEN, "invalid_mfa_code", e.to_string());
            }
            E::AlreadyEnabled => "mfa_already_enabled",
            E::NotEnabled => "mfa_not_enabled",
            E::SetupRequired => "mfa_setup_required",
            E::Admin(e) => return e.into(),
            E::Account(e) => return e.into(),
        };
        Self::new(StatusCode::CONFLICT, code, e.to_string())
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        use IdentityError as E;
        let (status, code) = match e {
            E::AccountExistsUnverified => (StatusCode::CONFLICT, "account_exists_unverified"),
            E::ProviderEmailUnverified => (StatusCode::FORBIDDEN, "provider_email_unverified"),
            E::StateInvalid => (StatusCode::BAD_REQUEST, "oidc_state_invalid"),
            E::StateExpired => (StatusCode::BAD_REQUEST, "oidc_state_expired"),
            E::NonceReused => return Self::unauthorized("nonce_reused", e.to_string()),
            E::LastSignInMethod => (StatusCode::CONFLICT, "last_sign_in_method"),
            E::PasswordAlreadySet => (StatusCode::CONFLICT, "password_already_set"),
            E::SignIn(e) => return e.into(),
            E::Account(e) => return e.into(),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<DeletionError> for ApiError {
    fn from(e: DeletionError) -> Self {
        use DeletionError as E;
        let code = match e {
            E::AlreadyScheduled { .. } => "deletion_already_scheduled",
            E::NotRequested => "deletion_not_requested",
            E::Account(e) => return e.into(),
        };
        Self::new(StatusCode::CONFLICT, code, e.to_string())
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        use AdminError as E;
        match e {
            E::AlreadySoftDeleted => {
                Self::new(StatusCode::CONFLICT, "already_deleted", e.to_string())
            }
            E::NotSoftDeleted => Self::new(StatusCode::CONFLICT, "not_deleted", e.to_string()),
            E::CannotModifySelf(detail) => {
                Self::new(StatusCode::FORBIDDEN, "cannot_modify_self", detail)
            }
            E::Account(e) => e.into(),
        }
    }
}

impl From<crate::oidc::OidcError> for ApiError {
    fn from(e: crate::oidc::OidcError) -> Self {
        use crate::oidc::OidcError as E;
        match e {
            E::UnknownProvider => {
                Self::new(StatusCode::NOT_FOUND, "unknown_provider", e.to_string())
            }
            E::Unavailable(_) => {
                tracing::warn!(error = %e, "an OpenID Connect provider failed");
                // A dependency that is away, like the database or Redis: 503, retry later.
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "oidc_provider_unavailable",
                    e.to_string(),
                )
            }
            E::CodeRejected(_) => {
                Self::new(StatusCode::BAD_REQUEST, "oidc_code_rejected", e.to_string())
            }
            E::TokenInvalid(_) => Self::unauthorized("id_token_invalid", e.to_string()),
        }
    }
}

/// 503 `rate_limiter_unavailable`: with `RATE_LIMIT_FAIL_OPEN=false`, a limit that cannot be
/// checked refuses the request, whichever limit it is.
impl From<crate::ratelimit::Unavailable> for ApiError {
    fn from(_: crate::ratelimit::Unavailable) -> Self {
        ApiError::new(
            poem::http::StatusCode::SERVICE_UNAVAILABLE,
            "rate_limiter_unavailable",
            "the service cannot check request limits right now; retry shortly",
        )
    }
}
