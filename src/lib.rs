//! Keel: accounts, sessions, email and an OpenAPI-first HTTP API, as a library that the four
//! binaries (`server`, `worker`, `scheduler`, `admin`) compose.

pub mod accounts;
pub mod argon2_memory;
pub mod cache;
pub mod compose;
pub mod config;
pub mod db;
pub mod entities;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod oidc;
pub mod probes;
pub mod queues;
pub mod ratelimit;
pub mod realtime;
pub mod redis;
pub mod telemetry;
pub mod values;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Resolves on SIGTERM or Ctrl-C: the signal every binary stops on.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
