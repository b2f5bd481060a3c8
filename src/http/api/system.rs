//! `/system`: liveness, readiness and a detailed health report.

use crate::http::startup::Phase;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::jobs::heartbeat::HEARTBEAT_FRESH;
use crate::{
    http::error::{ApiError, ApiResult},
    http::state::AppState,
};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency's state: `healthy`, `unhealthy` or `disabled`.
#[derive(Object, Debug, Clone)]
pub struct Check {
    pub status: String,
    #[oai(nullable)]
    pub latency_ms: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

#[derive(Object, Debug)]
pub struct Health {
    /// `healthy` when every enabled component is, else `degraded`.
    pub status: String,
    pub database: String,
    pub redis: String,
    pub rabbitmq: String,
    /// `healthy` with a fresh worker heartbeat, `in-process` for the embedded worker.
    pub worker: String,
    pub version: String,
    pub timestamp: DateTime<Utc>,
    pub checks: BTreeMap<String, Check>,
}

/// This instance can serve.
#[derive(Object, Debug)]
pub struct Readiness {
    /// `ready`
    pub status: String,
    /// The one dependency the server cannot serve without.
    pub database: Check,
}

#[derive(Object, Debug)]
pub struct Liveness {
    pub status: String,
}

fn disabled() -> Check {
    Check {
        status: "disabled".into(),
        latency_ms: None,
        error: None,
    }
}

async fn check_database(state: &AppState) -> Check {
    let started = Instant::now();
    let outcome = crate::probes::database_answers(&state.db).await;
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, "database health check failed");
    }
    timed(outcome.map(|()| started.elapsed()))
}

async fn check_rabbitmq(state: &AppState) -> Check {
    let Some(publisher) = &state.publisher else {
        return disabled();
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, publisher.check()).await;
    let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    Check {
        status: if error.is_none() {
            "healthy"
        } else {
            "unhealthy"
        }
        .into(),
        latency_ms,
        error,
    }
}

async fn check_redis(state: &AppState) -> Check {
    let Some(redis) = state.cache.redis() else {
        return disabled();
    };
    timed(redis.ping().await.map_err(|e| e.to_string()))
}

/// A dependency's answer: healthy with its round trip, or unhealthy with what went wrong.
fn timed(outcome: Result<Duration, String>) -> Check {
    match outcome {
        Ok(latency) => Check {
            status: "healthy".into(),
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            error: None,
        },
        Err(e) => Check {
            status: "unhealthy".into(),
            latency_ms: None,
            error: Some(e),
        },
    }
}

/// With SMTP, whether the mail server takes a connection.
async fn check_smtp(state: &AppState) -> Check {
    let started = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, state.mailer.check()).await {
        Ok(None) => disabled(),
        Ok(Some(outcome)) => timed(outcome.map(|()| started.elapsed())),
        Err(_) => timed(Err(format!("no answer within {CHECK_TIMEOUT:?}"))),
    }
}

/// With Redis, whether room broadcasts from other instances reach this one (see
/// `Hub::fanout_check`).
async fn check_websockets(state: &AppState) -> Check {
    let Some(hub) = &state.hub else {
        return disabled();
    };
    let Some(outcome) = hub.fanout_check(CHECK_TIMEOUT).await else {
        return disabled();
    };
    timed(outcome)
}

/// `in-process` in embedded mode; with RabbitMQ, healthy while some worker's heartbeat is fresh.
async fn check_worker(state: &AppState) -> Check {
    if state.publisher.is_none() {
        return Check {
            status: "in-process".into(),
            latency_ms: None,
            error: None,
        };
    }
    let fresh = chrono::Duration::from_std(HEARTBEAT_FRESH).unwrap_or_default();
    match state.jobs.last_heartbeat().await {
        Ok(Some(seen)) if Utc::now() - seen <= fresh => Check {
            status: "healthy".into(),
            latency_ms: None,
            error: None,
        },
        Ok(seen) => Check {
            status: "unhealthy".into(),
            latency_ms: None,
            error: Some(match seen {
                Some(at) => format!("no worker heartbeat since {}", at.to_rfc3339()),
                None => "no worker has ever reported".into(),
            }),
        },
        Err(_) => Check {
            status: "unhealthy".into(),
            latency_ms: None,
            error: Some("could not read worker heartbeats".into()),
        },
    }
}

/// Every dependency's state, also recorded in the `keel_dependency_up` gauges.
pub async fn health(state: &AppState) -> Health {
    let (database, redis, rabbitmq, worker, websockets, smtp) = tokio::join!(
        check_database(state),
        check_redis(state),
        check_rabbitmq(state),
        check_worker(state),
        check_websockets(state),
        check_smtp(state)
    );
    let mut checks = BTreeMap::new();
    checks.insert("database".to_string(), database);
    checks.insert("redis".to_string(), redis);
    checks.insert("rabbitmq".to_string(), rabbitmq);
    checks.insert("worker".to_string(), worker);
    checks.insert("websockets".to_string(), websockets);
    checks.insert("smtp".to_string(), smtp);
    for (name, check) in &checks {
        crate::metrics::metrics().set_dependency(name, &check.status);
    }
    let healthy = checks.values().all(|c| c.status != "unhealthy");
    let status_of = |name: &str| {
        checks
            .get(name)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    };
    Health {
        status: if healthy { "healthy" } else { "degraded" }.into(),
        database: status_of("database"),
        redis: status_of("redis"),
        rabbitmq: status_of("rabbitmq"),
        worker: status_of("worker"),
        version: crate::VERSION.into(),
        timestamp: Utc::now(),
        checks,
    }
}

pub struct SystemApi;

#[OpenApi(prefix_path = "/system", tag = "ApiTags::System")]
impl SystemApi {
    /// Health of the service and each dependency
    ///
    /// Always 200; `status` is `degraded` when an enabled dependency fails (Redis, RabbitMQ,
    /// SMTP, the workers' heartbeat, the WebSocket fan-out, the database). The same states are the
    /// `keel_dependency_up` gauges at `/metrics`.
    #[oai(path = "/health", method = "get", operation_id = "system_health")]
    async fn health(&self, state: Data<&AppState>) -> ApiResult<Json<Health>> {
        Ok(Json(health(&state).await))
    }

    /// Liveness: 200 while the process serves requests
    #[oai(
        path = "/health/live",
        method = "get",
        operation_id = "system_health_live"
    )]
    async fn live(&self) -> ApiResult<Json<Liveness>> {
        Ok(Json(Liveness {
            status: "alive".into(),
        }))
    }

    /// Readiness: 200 when this instance can serve, else a 503 problem saying why
    ///
    /// Ready means: the start-up checks (the database's first connection, the migration check,
    /// the first superuser) have passed, the database answers, and the server is not shutting
    /// down (after SIGTERM it answers 503 at once and keeps serving through
    /// `SHUTDOWN_DRAIN_SECONDS`). Redis, RabbitMQ and SMTP are not part of it: the service
    /// degrades without them (see `/system/health`), so their outage never takes every instance
    /// out of its load balancer at once.
    #[oai(
        path = "/health/ready",
        method = "get",
        operation_id = "system_health_ready"
    )]
    async fn ready(&self, state: Data<&AppState>) -> ApiResult<Json<Readiness>> {
        let not_ready = |detail: String| {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                detail,
            ))
        };
        match state.startup.phase() {
            Phase::Ready => {}
            Phase::Starting => {
                return not_ready(
                    "starting: the database checks (connection, migrations) are under way".into(),
                );
            }
            Phase::Failed(reason) => return not_ready(format!("start-up failed: {reason}")),
        }
        if state.startup.is_draining() {
            return not_ready("draining: the server is shutting down".into());
        }
        let database = check_database(&state).await;
        crate::metrics::metrics().set_dependency("database", &database.status);
        if database.status != "healthy" {
            return not_ready(format!(
                "not ready: database ({})",
                database.error.as_deref().unwrap_or("unhealthy")
            ));
        }
        Ok(Json(Readiness {
            status: "ready".into(),
            database,
        }))
    }
}
