//! `worker`: runs the jobs it takes from RabbitMQ (email, data processing, account purge, ...).

use std::{process::ExitCode, sync::Arc};

use clap::Parser;
use keel::{
    compose::job_registry,
    config::Settings,
    db,
    jobs::{self, Runner, rabbit::Publisher},
    mail::Mailer,
};
use tokio_util::sync::CancellationToken;

/// Keel's background job worker: takes jobs from RabbitMQ and runs them.
///
/// Needs ENABLE_RABBITMQ=true (in embedded mode the server runs jobs itself). Run as many
/// replicas as you like: each job runs once; a worker killed mid-job leaves it to another.
/// Every setting comes from the environment or a `.env` file; see `.env.example`.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  clean shutdown (SIGTERM or Ctrl-C; running jobs finish within WORKER_SHUTDOWN_TIMEOUT)\n  1  start-up failure (database unreachable, migrations pending, ...)\n  2  invalid configuration"
)]
struct Cli {
    /// The job queues to serve, comma-separated (email, default, maintenance; or all).
    /// Overrides WORKER_QUEUES. Each queue gets WORKER_CONCURRENCY slots (or its own
    /// WORKER_CONCURRENCY_<QUEUE>)
    #[arg(long, value_name = "QUEUES", value_parser = queue_list)]
    queues: Option<QueueList>,
}

/// `--queues`, parsed as a whole (a `Vec` would make clap expect the flag once per queue).
#[derive(Clone)]
struct QueueList(Vec<jobs::Queue>);

fn queue_list(s: &str) -> Result<QueueList, String> {
    jobs::Queue::parse_list(s).map(QueueList)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = Settings::load_or_exit();
    if let Some(QueueList(queues)) = cli.queues {
        settings.jobs.worker_queues = queues;
    }
    if !settings.rabbitmq.enabled {
        eprintln!(
            "invalid configuration: ENABLE_RABBITMQ: the worker takes jobs from RabbitMQ; set ENABLE_RABBITMQ=true (without it, the server runs jobs itself)"
        );
        return ExitCode::from(2);
    }
    keel::telemetry::init(&settings);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("worker: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let conn = db::connect(&settings.database).await?;
    db::require_migrated(&conn).await?;
    let mailer = Mailer::new(&settings.mail)?;
    let settings = Arc::new(settings);
    // Jobs that queue further jobs (mails) wake the relay below to publish them at once.
    let queue = jobs::JobQueue::new(settings.jobs.clone());
    let cache = keel::compose::build_cache(&settings).await?;
    let registry = job_registry(&conn, &mailer, settings.clone(), &queue, &cache);
    let control = jobs::Jobs::new(conn.clone(), queue.clone(), registry.clone());
    let worker_id = jobs::worker_id("worker");
    let runner = Arc::new(
        Runner::new(
            conn.clone(),
            registry,
            settings.jobs.clone(),
            worker_id.clone(),
        )
        .waking(queue.wake_handle()),
    );
    let shutdown = CancellationToken::new();
    // Retries and jobs queued by other processes wake the relay below at once.
    let listener = jobs::listen(&conn, queue.wake_handle(), shutdown.clone());
    // The worker also relays due retries, so they run even while no server is up.
    let publisher = Arc::new(Publisher::new(settings.rabbitmq.clone()));
    let relay = tokio::spawn(jobs::rabbit::relay(
        conn.clone(),
        publisher,
        queue.wake_handle(),
        None,
        shutdown.clone(),
    ));
    let serving = settings.jobs.serving(&settings.jobs.worker_queues);
    let served: Vec<&str> = serving.iter().map(|(q, _)| q.as_str()).collect();
    let served = served.join(",");
    let consumer = tokio::spawn(jobs::rabbit::consume(
        runner.clone(),
        settings.rabbitmq.clone(),
        serving,
        shutdown.clone(),
        settings.jobs.worker_shutdown_timeout,
    ));
    // Messages left in the queue of the version before job queues, routed to their queues.
    let legacy = tokio::spawn(jobs::rabbit::drain_legacy_queue(
        runner,
        settings.rabbitmq.clone(),
        queue.wake_handle(),
        shutdown.clone(),
    ));
    let metrics_server = match settings.jobs.worker_metrics_addr {
        None => None,
        Some(addr) => {
            let listener = poem::listener::TcpListener::bind(addr);
            let routes = poem::Route::new()
                .at(
                    "/metrics",
                    poem::get(keel::http::metrics_endpoint(control, conn.clone())),
                )
                .at(
                    "/health/live",
                    poem::get(poem::endpoint::make_sync(|_| "alive")),
                );
            let stop = shutdown.clone();
            tracing::info!(%addr, "worker metrics at http://{addr}/metrics");
            Some(tokio::spawn(async move {
                let served = poem::Server::new(listener)
                    .run_with_graceful_shutdown(routes, async move { stop.cancelled().await }, None)
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "worker metrics server failed");
                }
            }))
        }
    };
    tracing::info!(%worker_id, queues = %served, prefix = %settings.rabbitmq.queue, "worker started");
    keel::shutdown_signal().await;
    tracing::info!("stopping: no new jobs; waiting for running ones");
    shutdown.cancel();
    let _ = consumer.await;
    let _ = legacy.await;
    let _ = relay.await;
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}
