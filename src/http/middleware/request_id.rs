//! The outermost middleware: a request id for every request (the caller's `X-Request-Id` when
//! it is plain), a problem+json body for every error answer, the `Allow` header of a 405, the
//! security headers, the request metrics and the access log line.

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, StatusCode, header},
};

use super::security::SecurityConfig;
use crate::http::{
    api::contract::Contract,
    error::{PROBLEM_CONTENT_TYPE, Problem, REQUEST_ID, REQUEST_USER, problem_for_poem_error},
};

/// An id for the request: the caller's, when it is short and plain, else a new UUID.
fn request_id_for(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_problem(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_CONTENT_TYPE))
}

/// `problem` as an answer, with `WWW-Authenticate` on a 401.
pub(super) fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut resp = Response::builder()
        .status(status)
        .content_type(PROBLEM_CONTENT_TYPE)
        .body(body);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// Outermost middleware: gives every request an id, and every error response a problem body.
pub async fn problem_and_request_id<E: Endpoint>(
    next: E,
    req: Request,
    security: Arc<SecurityConfig>,
    contract: Arc<Contract>,
) -> poem::Result<Response> {
    let request_id = request_id_for(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    // One span per request, a child of the caller's trace when it sends one (`traceparent`),
    // named by its method and route (OpenTelemetry takes the name when the span starts, so the
    // contract says whether the path is a route: a scanner's paths share one name); its status
    // is known once it is answered.
    // Only when someone would see it: logs at INFO, or traces (which take INFO spans).
    let span = if tracing::enabled!(tracing::Level::INFO) {
        let known = contract.knows(&path);
        let guessed = crate::metrics::route_label(&path, &security.prefix, !known);
        let span = tracing::info_span!(
            "http.request",
            otel.name = format!("{method} {guessed}").as_str(),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            url.path = %path,
            request_id = %request_id,
        );
        crate::telemetry::otel::continue_from(&span, req.headers());
        span
    } else {
        tracing::Span::none()
    };
    let (outcome, user_id) = tracing::Instrument::instrument(
        REQUEST_ID.scope(
            request_id.clone(),
            REQUEST_USER.scope(std::cell::Cell::new(None), async {
                // Boxed: the route tree's type is deep enough without this middleware's
                // futures nested around it (rustc's layout depth limit).
                let call: std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(next.call(req));
                let outcome = call.await;
                (outcome, REQUEST_USER.with(std::cell::Cell::get))
            }),
        ),
        span.clone(),
    )
    .await;
    // A path no route matched, as opposed to a route answering 404 for a missing resource.
    let unmatched = matches!(&outcome, Err(e) if e.is::<poem::error::NotFoundError>());
    let mut resp = REQUEST_ID.sync_scope(request_id.clone(), || {
        let resp = match outcome {
            Ok(out) => out.into_response(),
            Err(err) if err.is_from_response() => err.into_response(),
            Err(err) => return problem_response(&problem_for_poem_error(&err)),
        };
        // An error answer that is not a problem document yet gets one for its status.
        let status = resp.status();
        if (status.is_client_error() || status.is_server_error()) && !is_problem(&resp) {
            problem_response(&problem_for_poem_error(&poem::Error::from_status(status)))
        } else {
            resp
        }
    });
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // RFC 9110: a 405 lists the methods the path does have.
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(v) = contract
            .allow(&path)
            .and_then(|methods| HeaderValue::from_str(&methods).ok())
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    security.apply_headers(&path, &mut resp);
    let status = resp.status().as_u16();
    let route = crate::metrics::route_label(&path, &security.prefix, unmatched);
    crate::metrics::metrics().observe_request(
        method.as_str(),
        &route,
        status,
        started.elapsed().as_secs_f64(),
    );
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let _inside = span.enter();
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        user_id = user_id.map(|u| u.to_string()),
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(resp)
}
