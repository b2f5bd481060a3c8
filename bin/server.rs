//! `server`: the HTTP API. Reads its settings from the environment (and `.env`).

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use clap::{Parser, Subcommand};

/// mimalloc (v3) rather than glibc's allocator: measured in BENCHMARKS.md ("The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use keel::{
    config::Settings,
    http::{BoundServer, state::AppState},
};

/// Keel's HTTP server: accounts, sessions and email, with interactive docs at /docs.
///
/// Every setting comes from the environment or a `.env` file; see `.env.example`.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  clean shutdown (SIGTERM or Ctrl-C)\n  1  start-up or runtime failure (database unreachable, port taken, ...), or a failed healthcheck\n  2  invalid configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default)
    Serve,
    /// Print the OpenAPI document to stdout (`openapi/openapi.json` is this output)
    Openapi,
    /// Ask the server at HOST:PORT whether it is ready (GET API_PREFIX/system/health/ready):
    /// exit 0 when it is, 1 when not. For container health checks (the image has no curl)
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", keel::http::api::default_spec_json());
        return ExitCode::SUCCESS;
    }
    let settings = keel::app::settings_or_exit();
    if let Some(Command::Healthcheck) = cli.command {
        let addr = SocketAddr::new(settings.http.host, settings.http.port);
        let path = format!("{}/system/health/ready", settings.http.api_prefix);
        return keel::probes::healthcheck(addr, &path).await;
    }
    let _traces = keel::telemetry::init(&settings, "keel-server");
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
    let mut signals = keel::ShutdownSignals::install();
    let addr = SocketAddr::new(settings.http.host, settings.http.port);
    let grace = settings.http.shutdown_timeout;
    let drain = settings.http.shutdown_drain;
    let state = AppState::assemble(settings).await?;
    let server = BoundServer::bind(state.clone(), addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = server.local_addr().unwrap_or(addr);
    tracing::info!(%bound, "listening; API docs at http://{bound}/docs");
    // Metrics apart from the API: served until the process ends, through the drain.
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let _metrics_stopped = metrics_stop.clone().drop_guard();
    if let Some(at) = state.settings.http.metrics_addr {
        let routes = poem::Route::new().at("/metrics", keel::http::server_metrics(&state));
        keel::probes::serve(at, routes, metrics_stop, "metrics")
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {at} (METRICS_ADDR): {e}"))?;
    }
    // The start-up checks run beside the listening server (requests wait for them); should one
    // fail, the server stops as on a signal, and the failure is why it exits.
    let (failed, failure) = tokio::sync::oneshot::channel();
    let startup = state.startup.clone();
    let checks = tokio::spawn(async move {
        match state.prepare().await {
            Ok(()) => tracing::info!("ready: the database is current"),
            Err(e) => {
                let _ = failed.send(e);
            }
        }
    });
    let reason = Arc::new(Mutex::new(None));
    let stop = {
        let reason = reason.clone();
        async move {
            tokio::select! {
                () = signals.recv() => {
                    // Readiness fails at once; requests are still served through the drain
                    // window, while load balancers stop sending new ones. A second signal
                    // ends the window early.
                    startup.drain();
                    if !drain.is_zero() {
                        tracing::info!(seconds = drain.as_secs(), "draining: readiness fails, still serving (a second signal stops at once)");
                        tokio::select! {
                            () = tokio::time::sleep(drain) => {}
                            () = signals.recv() => {}
                        }
                    }
                    tracing::info!(timeout = grace.as_secs(), "no new connections; finishing in-flight requests");
                }
                Ok(e) = failure => *reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(e),
            }
        }
    };
    server.run(stop, grace).await?;
    // Stopped during the checks: a migration under way is let finish (cut short, it could
    // leave the schema half changed).
    if !checks.is_finished() {
        tracing::info!("waiting for the start-up checks to finish before stopping");
        let _ = checks.await;
    }
    if let Some(e) = reason.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.into());
    }
    tracing::info!("stopped");
    Ok(())
}
