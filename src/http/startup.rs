//! The server's start-up checks, run while it already answers: the database's first
//! connection, the migration check (or `AUTO_MIGRATE`), the first superuser. Until they pass,
//! `/system/health/live` answers 200 (the process is up) and `/system/health/ready` a 503
//! (send no traffic yet); any other request waits for them, so none meets an unchecked
//! database. Should they fail, the server stops with the reason, as it did when it checked
//! before listening.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use tokio::sync::watch;

use crate::http::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Failed(String),
}

/// Where start-up stands, shared by the server, its middleware and its background tasks.
#[derive(Clone)]
pub struct Startup {
    phase: Arc<watch::Sender<Phase>>,
    /// `phase == Ready`, read without a lock on every request.
    ready: Arc<AtomicBool>,
    /// Set on SIGTERM: readiness answers 503 from then on, while requests are still served
    /// through the drain window (so load balancers stop sending traffic before the listener
    /// closes).
    draining: crate::probes::Draining,
}

impl Default for Startup {
    fn default() -> Self {
        Self::new()
    }
}

impl Startup {
    pub fn new() -> Self {
        Self {
            phase: Arc::new(watch::Sender::new(Phase::Starting)),
            ready: Arc::new(AtomicBool::new(false)),
            draining: Default::default(),
        }
    }

    /// Marks the instance as going away: readiness fails from now on.
    pub fn drain(&self) {
        self.draining.start();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_set()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Records the checks' outcome; the first one counts.
    pub fn finish(&self, outcome: Result<(), String>) {
        self.phase.send_if_modified(|phase| {
            if *phase != Phase::Starting {
                return false;
            }
            *phase = match outcome {
                Ok(()) => Phase::Ready,
                Err(reason) => Phase::Failed(reason),
            };
            true
        });
        if self.phase() == Phase::Ready {
            self.ready.store(true, Ordering::Release);
        }
    }

    /// Waits for the checks: `Err` with the reason when they failed.
    pub async fn wait(&self) -> Result<(), String> {
        let mut phase = self.phase.subscribe();
        let outcome = phase
            .wait_for(|p| *p != Phase::Starting)
            .await
            .map(|p| p.clone());
        match outcome {
            Ok(Phase::Ready) => Ok(()),
            Ok(Phase::Failed(reason)) => Err(reason),
            _ => Err("start-up was abandoned".into()),
        }
    }
}

/// Lets a request through once start-up has passed; probes of liveness and readiness at once.
pub async fn gate<E: Endpoint>(
    ep: E,
    req: Request,
    startup: Startup,
    probes: Arc<[String; 2]>,
) -> poem::Result<Response> {
    let waits = !startup.is_ready() && !probes.iter().any(|p| p == req.uri().path());
    if waits && let Err(reason) = startup.wait().await {
        return Ok(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the server could not start: {reason}"),
        )
        .into_response());
    }
    ep.call(req).await.map(IntoResponse::into_response)
}
