//! Security headers, request size and content-type validation, and security event logging.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures_util::StreamExt;
use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
};

use crate::http::api::payload::is_json;
use crate::http::client_addr::client_ip;
use crate::{config::SecuritySettings, http::error::ApiError};

/// The strict policy for API responses.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
font-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'self'; \
form-action 'self'; object-src 'none'; media-src 'self'; worker-src 'self'";

/// The docs UI is inlined into its page (no CDN), so it needs inline script and style; it still
/// loads nothing from another origin.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; \
form-action 'self'; object-src 'none'; worker-src 'self' blob:";

const PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), \
microphone=(), payment=(), usb=()";

/// The headers every response gets, built at compile time: validating names and values is not
/// work to repeat per response.
const COMMON_HEADERS: [(HeaderName, HeaderValue); 8] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::X_XSS_PROTECTION,
        HeaderValue::from_static("1; mode=block"),
    ),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
    (
        HeaderName::from_static("x-download-options"),
        HeaderValue::from_static("noopen"),
    ),
    (
        HeaderName::from_static("x-permitted-cross-domain-policies"),
        HeaderValue::from_static("none"),
    ),
    (
        header::X_DNS_PREFETCH_CONTROL,
        HeaderValue::from_static("off"),
    ),
    (
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static(PERMISSIONS_POLICY),
    ),
];

/// Routes whose answers concern one account and must not be stored by any cache.
const PRIVATE_ROUTES: [&str; 3] = ["/auth", "/users", "/admin"];

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

/// The security middleware's policy: its settings, the HSTS header ready to send, and the
/// prefix the routes are nested under.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub settings: SecuritySettings,
    hsts: Option<HeaderValue>,
    pub prefix: String,
}

impl SecurityConfig {
    pub fn new(settings: &SecuritySettings, prefix: &str) -> Self {
        Self {
            // Only digits and fixed ASCII (see the settings): a value that fails is dropped.
            hsts: settings
                .hsts
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok()),
            settings: settings.clone(),
            prefix: prefix.to_string(),
        }
    }

    fn route<'a>(&self, path: &'a str) -> &'a str {
        path.strip_prefix(self.prefix.as_str()).unwrap_or(path)
    }

    /// Adds the security headers to a finished response (errors included).
    pub fn apply_headers(&self, path: &str, resp: &mut Response) {
        if !self.settings.headers {
            return;
        }
        let route = self.route(path);
        let docs = route == "/docs" || route.starts_with("/docs/");
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if docs { DOCS_CSP } else { CSP }),
        );
        for (name, value) in COMMON_HEADERS {
            h.insert(name, value);
        }
        if let Some(hsts) = &self.hsts {
            h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        let private = PRIVATE_ROUTES.iter().any(|p| {
            route
                .strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if private {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
    }

    /// The media types a route's body may have.
    fn allowed_types(&self, path: &str) -> &'static [&'static str] {
        let route = self.route(path);
        // The password grant, and providers posting a sign-in back (`form_post`).
        if route == "/auth/login"
            || (route.starts_with("/auth/oidc/") && route.ends_with("/callback"))
        {
            &[FORM]
        } else {
            &[JSON]
        }
    }
}

/// The request facts every security event records, taken before the body is consumed.
struct EventFields {
    client_ip: String,
    user_agent: String,
    path: String,
    method: String,
    content_type: String,
    content_length: String,
}

impl EventFields {
    fn of(req: &Request) -> Self {
        let text = |name: header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Self {
            client_ip: client_ip(req),
            user_agent: text(header::USER_AGENT),
            path: req.uri().path().to_string(),
            method: req.method().to_string(),
            content_type: text(header::CONTENT_TYPE),
            content_length: text(header::CONTENT_LENGTH),
        }
    }

    fn log(&self, config: &SecurityConfig, event_type: &'static str) {
        if !config.settings.event_logging {
            return;
        }
        tracing::warn!(
            target: "keel::security",
            event_type,
            client_ip = %self.client_ip,
            user_agent = %self.user_agent,
            path = %self.path,
            method = %self.method,
            content_type = %self.content_type,
            content_length = %self.content_length,
            "security event"
        );
    }
}

enum Length {
    None,
    Valid(u64),
    Invalid,
}

fn content_length(headers: &HeaderMap) -> Length {
    match headers.get(header::CONTENT_LENGTH) {
        None => Length::None,
        Some(v) => match v
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(n) => Length::Valid(n),
            None => Length::Invalid,
        },
    }
}

fn has_body(req: &Request) -> bool {
    match content_length(req.headers()) {
        Length::Valid(n) => n > 0,
        Length::Invalid => true,
        Length::None => req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

fn media_type(req: &Request) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn too_large(config: &SecurityConfig) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the request body is larger than {} bytes",
            config.settings.max_request_size
        ),
    )
}

/// Validates size and content type before the request reaches a handler, and enforces the size
/// limit while the body streams in, so a body is never buffered past the limit.
pub async fn validate<E: Endpoint>(
    next: E,
    mut req: Request,
    config: Arc<SecurityConfig>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_string();
    let event = EventFields::of(&req);
    if config.settings.size_validation {
        match content_length(req.headers()) {
            Length::Invalid => {
                event.log(&config, "invalid_content_length");
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_content_length",
                    "the Content-Length header is not a non-negative whole number",
                )
                .into());
            }
            Length::Valid(n) if n > config.settings.max_request_size => {
                event.log(&config, "request_too_large");
                return Err(too_large(&config).into());
            }
            _ => {}
        }
    }
    if config.settings.content_type_validation
        && has_body(&req)
        && !matches!(*req.method(), Method::GET | Method::HEAD)
    {
        let allowed = config.allowed_types(&path);
        let given = media_type(&req);
        let ok = given.as_deref().is_some_and(|t| {
            allowed
                .iter()
                .any(|a| t == *a || (*a == JSON && is_json(t)))
        });
        if !ok {
            event.log(&config, "unsupported_content_type");
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type {} is not accepted here; use {}",
                    given.map_or_else(|| "(none)".to_string(), |t| format!("`{t}`")),
                    allowed.join(" or ")
                ),
            )
            .into());
        }
    }
    if !config.settings.size_validation {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    // Chunked or understated bodies: count while reading and stop at the limit.
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let limit = config.settings.max_request_size;
    let mut seen: u64 = 0;
    let stream = req.take_body().into_bytes_stream().map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > limit {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(
                "request body exceeds MAX_REQUEST_SIZE",
            ));
        }
        Ok(chunk)
    });
    req.set_body(Body::from_bytes_stream(stream));
    let result = next.call(req).await.map(IntoResponse::into_response);
    if exceeded.load(Ordering::SeqCst) {
        event.log(&config, "request_too_large");
        return Err(too_large(&config).into());
    }
    result
}
