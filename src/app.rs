//! The composition point: the route tree, its middleware, and serving. The state it serves is
//! `state::AppState`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route, Server,
    http::Method,
    http::{HeaderValue, StatusCode, header},
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    middleware::{CatchPanic, CookieJarManager, Cors},
};

use tokio_util::sync::CancellationToken;

use crate::{
    api, db,
    error::{PROBLEM_CONTENT_TYPE, Problem, REQUEST_ID, REQUEST_USER, problem_for_poem_error},
    jobs::Jobs,
    security::{self, SecurityConfig},
    state::AppState,
};

/// The whole route tree with its middleware.
pub fn routes(state: AppState) -> impl Endpoint<Output = Response> + 'static {
    let prefix = state.settings.http.api_prefix.clone();
    let service = api::service(&state.settings.project_name, &prefix);
    let docs = service.swagger_ui();
    // The spec served at `/openapi.json`, rendered once; the same spec as a routing table
    // gives `Allow` headers and the JSON type checks.
    let spec: Arc<str> = api::spec_json(&state.settings.project_name, &prefix).into();
    let contract = Arc::new(api::contract::Contract::from_spec(
        &spec,
        &prefix,
        &["/metrics", "/openapi.json"],
    ));
    let openapi_json = poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(spec.to_string())
    });
    let metrics = metrics_endpoint(state.jobs.clone(), state.db.clone());
    let inner = Route::new()
        .nest("/", service)
        .at("/metrics", poem::get(metrics))
        .nest("/docs", docs)
        .at("/openapi.json", openapi_json);
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
    tree.with(CookieJarManager::new())
        .with(CatchPanic::new())
        .data(state)
        .around(move |ep, req| crate::input::check_input(ep, req, contract.clone()))
        .around(move |ep, req| security::validate(ep, req, validation.clone()))
        .around(move |ep, req| {
            let limiter = limited.then(|| limiter.clone());
            let prefix = limit_prefix.clone();
            async move {
                match limiter {
                    Some(l) => crate::ratelimit::enforce(ep, req, l, prefix).await,
                    None => ep.call(req).await.map(IntoResponse::into_response),
                }
            }
        })
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .around(move |ep, mut req| {
            security::resolve_client_addr(&mut req, &trusted);
            problem_and_request_id(ep, req, security.clone(), allow.clone())
        })
        .into_endpoint()
        .map_to_response()
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
                .map(|d| d.into_iter().map(|(s, n)| (s.as_str(), n)).collect())
                .unwrap_or_default();
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

fn problem_response(problem: &Problem) -> Response {
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
async fn problem_and_request_id<E: Endpoint>(
    next: E,
    req: Request,
    security: Arc<SecurityConfig>,
    contract: Arc<api::contract::Contract>,
) -> poem::Result<Response> {
    let request_id = request_id_for(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let (outcome, user_id) = REQUEST_ID
        .scope(
            request_id.clone(),
            REQUEST_USER.scope(std::cell::Cell::new(None), async {
                let outcome = next.call(req).await;
                (outcome, REQUEST_USER.with(std::cell::Cell::get))
            }),
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
    crate::metrics::metrics().observe_request(
        method.as_str(),
        &crate::metrics::route_label(&path, &security.prefix, unmatched),
        status,
        started.elapsed().as_secs_f64(),
    );
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

/// A server bound to its port, not yet serving: lets callers learn the port before it starts.
pub struct BoundServer {
    acceptor: TcpAcceptor,
    state: AppState,
}

impl BoundServer {
    pub async fn bind(state: AppState, addr: SocketAddr) -> std::io::Result<Self> {
        let acceptor = TcpListener::bind(addr).into_acceptor().await?;
        Ok(Self { acceptor, state })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and jobs finish within
    /// `grace`.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
        grace: Duration,
    ) -> std::io::Result<()> {
        let stop_background = CancellationToken::new();
        let background = self.state.spawn_background(stop_background.clone());
        let hub = self.state.hub.clone();
        if let Some(hub) = &hub {
            hub.start(stop_background.clone());
        }
        // Open WebSockets would hold the graceful shutdown to its timeout: they are told to go
        // away (close code 1001) as soon as the shutdown begins.
        let shutdown = async move {
            shutdown.await;
            if let Some(hub) = hub {
                hub.close_all();
            }
        };
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes(self.state), shutdown, Some(grace))
            .await;
        stop_background.cancel();
        if tokio::time::timeout(grace + Duration::from_secs(1), background)
            .await
            .is_err()
        {
            tracing::warn!("background jobs did not stop within the shutdown timeout");
        }
        served
    }
}
