//! Rate limiting by route and client address: which rule a path falls under, the 429 answer
//! and the `RateLimit-*` headers. The arithmetic and its store are `crate::ratelimit`.

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response, http::HeaderValue};

use super::request_id::problem_response;
use crate::http::client_addr::client_ip;
use crate::{
    http::error::{ApiError, problem_for_poem_error},
    metrics::metrics,
    ratelimit::{Decision, Limiter, Rule, Rules},
};

/// The rule for a path (without `API_PREFIX`); `None` for what is never limited: health
/// probes, metrics scrapes and the docs.
pub fn rule_for(path: &str, rules: &Rules) -> Option<Rule> {
    Some(match path {
        "/auth/login" => rules.login,
        "/auth/register" => rules.register,
        "/auth/verify-email"
        | "/auth/resend-verification"
        | "/users/me/email"
        | "/auth/confirm-email-change"
        | "/auth/revert-email-change" => rules.verification,
        "/auth/forgot-password" | "/auth/reset-password" | "/auth/set-password" => {
            rules.password_reset
        }
        "/auth/request-deletion" | "/auth/confirm-deletion" | "/auth/cancel-deletion" => {
            rules.deletion
        }
        p if p.starts_with("/auth/mfa/") => rules.mfa,
        p if p.starts_with("/auth/oidc/") => rules.oidc,
        "/metrics" | "/openapi.json" => return None,
        p if p.starts_with("/system/health") || p.starts_with("/docs") => return None,
        _ => rules.default,
    })
}

pub fn set_headers(resp: &mut Response, d: &Decision) {
    let headers = resp.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", u64::from(d.limit)),
        ("ratelimit-remaining", u64::from(d.remaining)),
        ("ratelimit-reset", d.reset_secs),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

/// The 429 answer: a `rate_limited` problem with `Retry-After` and the `RateLimit-*` headers.
pub fn too_many(rule: Rule, d: &Decision, detail: String) -> Response {
    metrics().rate_limited.with_label_values(&[rule.name]).inc();
    let mut resp = ApiError::too_many_requests(detail, d.retry_after_secs).into_response();
    set_headers(&mut resp, d);
    resp
}

/// The middleware: counts the request against its route's rule for the client's address.
pub async fn enforce<E: Endpoint>(
    next: E,
    req: Request,
    limiter: Limiter,
    prefix: Arc<str>,
) -> poem::Result<Response> {
    let path = req.uri().path();
    let path = path.strip_prefix(prefix.as_ref()).unwrap_or(path);
    let rule = if req.method() == poem::http::Method::OPTIONS {
        None
    } else {
        rule_for(path, limiter.rules())
    };
    let Some(rule) = rule else {
        return next.call(req).await.map(IntoResponse::into_response);
    };
    let ip = client_ip(&req);
    let decision = match limiter.check(rule, &ip, true).await {
        Ok(d) => d,
        Err(unavailable) => return Ok(ApiError::from(unavailable).into_response()),
    };
    if !decision.allowed {
        let detail = format!(
            "too many requests: at most {} per {} for this kind of request; retry in {} s",
            rule.limit,
            rule.period_words(),
            decision.retry_after_secs
        );
        return Ok(too_many(rule, &decision, detail));
    }
    // The answer gets the rate-limit headers, so an error becomes its problem here: the code
    // and detail of a parse or authorization error (`invalid_parameter`, ...) survive as they
    // do on a route without a limit.
    let mut resp = match next.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) if e.is_from_response() => e.into_response(),
        Err(e) => problem_response(&problem_for_poem_error(&e)),
    };
    set_headers(&mut resp, &decision);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_their_rules() {
        let rules = Rules::default();
        assert_eq!(rule_for("/auth/login", &rules), Some(rules.login));
        assert_eq!(
            rule_for("/auth/reset-password", &rules),
            Some(rules.password_reset)
        );
        assert_eq!(rule_for("/users/me", &rules), Some(rules.default));
        assert_eq!(rule_for("/system/health/live", &rules), None);
        assert_eq!(rule_for("/metrics", &rules), None);
    }
}
