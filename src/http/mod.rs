//! The HTTP layer: the routes (one file per tag under `api/`), the extractors, the state, the
//! middleware (one file each under `middleware/`), the problem+json mapping, and serving.
//! Handlers parse, call a domain service and map the answer; nothing here holds a rule.

pub mod api;
pub mod client_addr;
pub mod error;
pub mod extractors;
pub mod middleware;
pub mod pages;
mod server;
pub mod startup;
pub mod state;

use std::sync::Arc;

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Response, Route,
    http::Method,
    middleware::{CatchPanic, CookieJarManager, Cors},
};

pub use server::BoundServer;

use poem_openapi::OpenApi;

use crate::db;
use crate::jobs::Jobs;
use middleware::{SecurityConfig, input, rate_limit, request_id, security};
use state::AppState;

/// The whole route tree with its middleware.
pub fn routes(state: AppState) -> impl Endpoint<Output = Response> + 'static {
    routes_with(state, ())
}

/// The route tree with `extra` route groups after Keel's (`api::service_with`), behind the
/// same middleware, in the same spec and docs.
pub fn routes_with<T: OpenApi + 'static>(
    state: AppState,
    extra: T,
) -> impl Endpoint<Output = Response> + 'static {
    let prefix = state.settings.http.api_prefix.clone();
    let service = api::service_with(extra, &state.settings.project_name, &prefix);
    let docs = service.swagger_ui();
    // The spec served at `/openapi.json`, rendered once; the same spec as a routing table
    // gives `Allow` headers and the JSON type checks.
    let spec: Arc<str> = api::spec_of(&service).into();
    // `/metrics` is served here unless `METRICS_ADDR` serves it apart.
    let public_metrics = state.settings.http.metrics_addr.is_none();
    let mut extra = vec!["/openapi.json"];
    if public_metrics {
        extra.push("/metrics");
    }
    extra.extend(pages::paths(&state.settings));
    let contract = Arc::new(api::contract::Contract::from_spec(&spec, &prefix, &extra));
    let openapi_json = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(spec.to_string())
    });
    let mut inner = Route::new()
        .nest("/", service)
        .nest("/docs", docs)
        .at("/openapi.json", openapi_json);
    if public_metrics {
        inner = inner.at("/metrics", server_metrics(&state));
    }
    let inner = pages::mount(inner, &state.settings, &state.mails);
    let tree = if prefix.is_empty() {
        inner
    } else {
        Route::new().nest(prefix, inner)
    };
    let security = Arc::new(SecurityConfig::new(
        &state.settings.security,
        &state.settings.http.api_prefix,
    ));
    let validation = security.clone();
    let cors = cors(&state.settings.http.cors_origins);
    let limiter = state.limiter.clone();
    let limited = state.settings.rate_limit.enabled;
    let limit_prefix: Arc<str> = state.settings.http.api_prefix.clone().into();
    let trusted = Arc::new(state.settings.http.trusted_proxies.clone());
    let allow = contract.clone();
    let startup = state.startup.clone();
    let probes: Arc<[String; 2]> = Arc::new(
        ["live", "ready"]
            .map(|probe| format!("{}/system/health/{probe}", state.settings.http.api_prefix)),
    );
    // The middleware, outermost first (each line below wraps the ones above it):
    //   1. client_addr + request_id: the client's address (TRUSTED_PROXIES), a request id,
    //      problem+json for every error, Allow on 405, security headers, metrics, access log;
    //   2. CORS, when BACKEND_CORS_ORIGINS is set (preflights answered here);
    //   3. rate_limit: the route's budget for the client's address (off: ENABLE_RATE_LIMITING);
    //   4. security::validate: request size and content type;
    //   5. input::check_input: NUL bytes and JSON types against the spec, before any handler;
    //   6. startup::gate: until the start-up checks pass, every request but the health probes
    //      waits for them;
    //   7. the state, panics caught as a 500, the cookie jar; then the routes.
    tree.with(CookieJarManager::new())
        .with(CatchPanic::new())
        .data(state)
        .around(move |ep, req| startup::gate(ep, req, startup.clone(), probes.clone()))
        .around(move |ep, req| input::check_input(ep, req, contract.clone()))
        .around(move |ep, req| security::validate(ep, req, validation.clone()))
        .around(move |ep, req| {
            let limiter = limited.then(|| limiter.clone());
            let prefix = limit_prefix.clone();
            async move {
                match limiter {
                    Some(l) => rate_limit::enforce(ep, req, l, prefix).await,
                    None => ep.call(req).await.map(IntoResponse::into_response),
                }
            }
        })
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .around(move |ep, mut req| {
            client_addr::resolve_client_addr(&mut req, &trusted);
            request_id::problem_and_request_id(ep, req, security.clone(), allow.clone())
        })
        .into_endpoint()
        .map_to_response()
}

/// The server's `GET /metrics`, beside the API or (`METRICS_ADDR`) apart: a scrape also checks
/// the dependencies, so `keel_dependency_up` is current.
pub fn server_metrics(state: &AppState) -> poem::RouteMethod {
    let checked = state.clone();
    poem::get(
        metrics_endpoint(state.jobs.clone(), state.db.clone()).before(move |req| {
            let state = checked.clone();
            async move {
                api::system::health(&state).await;
                Ok(req)
            }
        }),
    )
}

/// `GET /metrics` in the Prometheus text format, for the server and the worker alike: the
/// counters, plus the queue depth and the pool read at scrape time.
pub fn metrics_endpoint(jobs: Jobs, db: db::Connection) -> impl Endpoint<Output = Response> {
    poem::endpoint::make(move |_| {
        let (jobs, db) = (jobs.clone(), db.clone());
        async move {
            // A database hiccup leaves the depth gauges at their last values.
            let queue_depth = jobs
                .depth()
                .await
                .map(|d| d.into_iter().map(|(q, s, n)| (q, s.as_str(), n)).collect())
                .ok();
            let (pool_size, pool_idle) = db::pool_stats(&db);
            Response::builder()
                .content_type("text/plain; version=0.0.4")
                .body(crate::metrics::metrics().render(crate::metrics::Gauges {
                    queue_depth,
                    pool_size,
                    pool_idle,
                }))
        }
    })
}

/// CORS for the configured origins: credentials only for listed origins, never with `*`.
fn cors(origins: &[String]) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let base = Cors::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(["authorization", "content-type", "x-request-id"])
        .expose_headers([
            "x-request-id",
            "retry-after",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ])
        .max_age(600);
    Some(if origins.iter().any(|o| o == "*") {
        base.allow_credentials(false)
    } else {
        base.allow_origins(origins.iter().map(String::as_str))
            .allow_credentials(true)
    })
}
