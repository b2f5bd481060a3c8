//! Keel: accounts, sessions, email and an OpenAPI-first HTTP API, as a library that the four
//! binaries (`server`, `worker`, `scheduler`, `admin`) compose.

// A row reaching past its domain would be reachable but unnameable (`entities` is private).
#![deny(unnameable_types)]

pub mod accounts;
pub mod app;
pub mod argon2_memory;
pub mod cache;
pub mod config;
pub mod db;
pub mod demo;
pub(crate) mod entities;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod opaque;
pub mod probes;
pub mod queues;
pub mod ratelimit;
pub mod realtime;
pub mod redis;
pub mod telemetry;
pub mod values;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// SIGTERM and Ctrl-C (SIGINT), caught from the moment this is made: a binary makes it first
/// thing, since a signal that arrives before the handlers exist ends the process at once, with
/// no drain and no graceful stop.
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    pub fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves on the next SIGTERM or Ctrl-C.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {},
                () = next(&mut self.interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}
