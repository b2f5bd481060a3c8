//! `server`: the HTTP API. Reads its settings from the environment (and `.env`).

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::Parser;
use keel::{app::AppState, app::BoundServer, config::Settings};

/// Keel's HTTP server: accounts, sessions and email, with docs at /docs.
///
/// Every setting comes from the environment or a `.env` file; see `.env.example`.
/// Exit codes: 0 after a clean shutdown, 1 on a start-up or runtime error, 2 on a configuration error.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {}

#[tokio::main]
async fn main() -> ExitCode {
    let _cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    keel::telemetry::init(&settings);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("server: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let addr = SocketAddr::new(settings.host, settings.port);
    let state = AppState::build(settings).await?;
    let server = BoundServer::bind(state, addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = server.local_addr().unwrap_or(addr);
    tracing::info!(%bound, "listening; API docs at http://{bound}/docs");
    server
        .run(shutdown_signal(), Duration::from_secs(30))
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
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
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
