//! `worker`: runs the jobs it takes from RabbitMQ (email, data processing, account purge, ...).

use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use keel::{
    app::{App, Role},
    config::Settings,
    db,
    jobs::{self, Runner, rabbit::Publisher},
    probes,
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
    after_help = "Exit codes:\n  0  clean shutdown (SIGTERM or Ctrl-C; running jobs finish within WORKER_SHUTDOWN_TIMEOUT)\n  1  start-up failure (database unreachable, migrations still pending after SCHEMA_WAIT_SECONDS, ...), or a failed healthcheck\n  2  invalid configuration"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The job queues to serve, comma-separated (email, default, maintenance; or all).
    /// Overrides WORKER_QUEUES. Each queue gets WORKER_CONCURRENCY slots (or its own
    /// WORKER_CONCURRENCY_<QUEUE>)
    #[arg(long, value_name = "QUEUES", value_parser = queue_list)]
    queues: Option<QueueList>,
}

#[derive(Subcommand)]
enum Command {
    /// Ask this container's worker whether it is ready (GET /health/ready on
    /// WORKER_METRICS_ADDR): exit 0 when it is, 1 when not. For container health checks
    Healthcheck,
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
    let mut settings = keel::app::settings_or_exit();
    if let Some(Command::Healthcheck) = cli.command {
        let Some(addr) = settings.jobs.worker_metrics_addr else {
            eprintln!(
                "invalid configuration: WORKER_METRICS_ADDR: the worker serves its health endpoints there; set it (e.g. 0.0.0.0:9091)"
            );
            return ExitCode::from(2);
        };
        return keel::probes::healthcheck(addr, "/health/ready").await;
    }
    if let Some(QueueList(queues)) = cli.queues {
        settings.jobs.worker_queues = queues;
    }
    if !settings.rabbitmq.enabled {
        eprintln!(
            "invalid configuration: ENABLE_RABBITMQ: the worker takes jobs from RabbitMQ; set ENABLE_RABBITMQ=true (without it, the server runs jobs itself)"
        );
        return ExitCode::from(2);
    }
    let _traces = keel::telemetry::init(&settings, "keel-worker");
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
    let mut signals = keel::ShutdownSignals::install();
    let conn = db::connect(&settings.database).await?;
    let shutdown = CancellationToken::new();
    let draining = probes::Draining::default();
    let consuming = jobs::rabbit::Consuming::default();
    let serving = settings.jobs.serving(&settings.jobs.worker_queues);
    // The health endpoints answer from the start (live; ready once every queue is consumed)
    // and to the end: liveness holds while running jobs finish after SIGTERM.
    let probes_stop = CancellationToken::new();
    let health = match settings.jobs.worker_metrics_addr {
        None => None,
        Some(addr) => {
            let control = jobs::Jobs::new(
                conn.clone(),
                jobs::JobQueue::new(settings.jobs.clone()),
                jobs::Registry::default(),
            );
            let ready = {
                let (conn, draining, consuming) =
                    (conn.clone(), draining.clone(), consuming.clone());
                let queues = serving.len();
                poem::endpoint::make(move |_| {
                    let (conn, draining, consuming) =
                        (conn.clone(), draining.clone(), consuming.clone());
                    async move {
                        probes::answer(
                            worker_ready(&conn, &draining, &consuming, queues)
                                .await
                                .map(|()| "ready"),
                        )
                    }
                })
            };
            let routes =
                probes::routes(poem::Route::new().at("/health/ready", poem::get(ready)).at(
                    "/metrics",
                    poem::get(keel::http::metrics_endpoint(control, conn.clone())),
                ));
            Some(
                probes::serve(
                    addr,
                    routes,
                    probes_stop.clone(),
                    "worker health endpoints and metrics",
                )
                .await?,
            )
        }
    };
    // Started beside the server on a new release, the worker waits for its migrations.
    tokio::select! {
        waited = db::wait_for_schema(&conn, settings.database.schema_wait) => waited?,
        () = signals.recv() => {
            probes_stop.cancel();
            return Ok(());
        }
    }
    // Jobs that queue further jobs (mails) wake the relay below to publish them at once.
    let App {
        settings,
        queue,
        registry,
        ..
    } = App::build(settings, conn.clone(), Role::Worker).await?;
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
    let served: Vec<&str> = serving.iter().map(|(q, _)| q.as_str()).collect();
    let served = served.join(",");
    let consumer = tokio::spawn(jobs::rabbit::consume(
        runner.clone(),
        settings.rabbitmq.clone(),
        serving,
        shutdown.clone(),
        settings.jobs.worker_shutdown_timeout,
        consuming,
    ));
    // Messages left in the queue of the version before job queues, routed to their queues.
    let legacy = tokio::spawn(jobs::rabbit::drain_legacy_queue(
        runner,
        settings.rabbitmq.clone(),
        queue.wake_handle(),
        shutdown.clone(),
    ));
    tracing::info!(%worker_id, queues = %served, prefix = %settings.rabbitmq.queue, "worker started");
    signals.recv().await;
    draining.start();
    tracing::info!("stopping: no new jobs; waiting for running ones");
    shutdown.cancel();
    let _ = consumer.await;
    let _ = legacy.await;
    let _ = relay.await;
    if let Some(listener) = listener {
        let _ = listener.await;
    }
    probes_stop.cancel();
    if let Some(server) = health {
        let _ = server.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Ready: not stopping, every served queue consumed on an open channel, the database answering.
async fn worker_ready(
    conn: &db::Connection,
    draining: &probes::Draining,
    consuming: &jobs::rabbit::Consuming,
    queues: usize,
) -> Result<(), String> {
    if draining.is_set() {
        return Err("draining: the worker is shutting down".into());
    }
    let consumed = consuming.count();
    if consumed < queues {
        return Err(format!(
            "consuming {consumed} of {queues} queue(s): RabbitMQ unreachable, or the database schema not current yet"
        ));
    }
    probes::database_answers(conn).await
}
