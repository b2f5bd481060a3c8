//! `scheduler`: enqueues periodic jobs on their cron schedules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel::{
    app::{App, Role},
    config::Settings,
    db,
    jobs::schedule::{self, Periodic},
    probes,
};
use tokio_util::sync::CancellationToken;

/// Keel's scheduler: enqueues periodic jobs (account purge after the deletion grace period,
/// deletion reminders, expired token cleanup) on the cron expressions in the settings.
///
/// Run one or several: each slot's run is enqueued once, whatever the number of replicas. The jobs
/// go into the jobs table; the server (embedded mode) or the workers (RabbitMQ) run them.
/// Every setting comes from the environment or a `.env` file; see `.env.example`.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  clean shutdown (SIGTERM or Ctrl-C), or --once done\n  1  failure (database unreachable, migrations still pending after SCHEMA_WAIT_SECONDS, ...), or a failed healthcheck\n  2  invalid configuration or unknown job"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Enqueue one run of this job now and exit (for a cron container or a Kubernetes CronJob)
    #[arg(long, value_name = "JOB")]
    once: Option<String>,
    /// Print each periodic job with its schedule and its next three runs, and exit
    #[arg(long, conflicts_with = "once")]
    list: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Ask this container's scheduler whether it is alive (GET /health/live on
    /// SCHEDULER_HEALTH_ADDR): exit 0 when it is, 1 when not. For container health checks
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = keel::app::settings_or_exit();
    if let Some(Command::Healthcheck) = cli.command {
        let Some(addr) = settings.jobs.scheduler_health_addr else {
            eprintln!(
                "invalid configuration: SCHEDULER_HEALTH_ADDR: the scheduler serves its health endpoints there; set it (e.g. 0.0.0.0:9092)"
            );
            return ExitCode::from(2);
        };
        return keel::probes::healthcheck(addr, "/health/live").await;
    }
    if cli.list {
        list(&settings);
        return ExitCode::SUCCESS;
    }
    let _traces = keel::telemetry::init(&settings, "keel-scheduler");
    if let Some(job) = &cli.once
        && !settings.jobs.periodic_kinds().any(|k| k.name == job)
    {
        let names: Vec<&str> = settings.jobs.periodic_kinds().map(|k| k.name).collect();
        eprintln!(
            "scheduler: unknown job {job:?}; periodic jobs are: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    }
    match run(cli, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scheduler: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let mut signals = keel::ShutdownSignals::install();
    let conn = db::connect(&settings.database).await?;
    let draining = probes::Draining::default();
    let probes_stop = CancellationToken::new();
    let health = match settings.jobs.scheduler_health_addr {
        Some(addr) if cli.once.is_none() => {
            let ready = {
                let (conn, draining) = (conn.clone(), draining.clone());
                poem::endpoint::make(move |_| {
                    let (conn, draining) = (conn.clone(), draining.clone());
                    async move {
                        let outcome = if draining.is_set() {
                            Err("draining: the scheduler is shutting down".to_string())
                        } else {
                            probes::database_answers(&conn).await.map(|()| "ready")
                        };
                        probes::answer(outcome)
                    }
                })
            };
            let routes = probes::routes(poem::Route::new().at("/health/ready", poem::get(ready)));
            Some(
                probes::serve(
                    addr,
                    routes,
                    probes_stop.clone(),
                    "scheduler health endpoints",
                )
                .await?,
            )
        }
        _ => None,
    };
    // Started beside the server on a new release, the scheduler waits for its migrations.
    tokio::select! {
        waited = db::wait_for_schema(&conn, settings.database.schema_wait) => waited?,
        () = signals.recv() => {
            probes_stop.cancel();
            return Ok(());
        }
    }
    // The scheduler runs no jobs: its enqueues are announced to the processes that do.
    let App {
        settings,
        db: conn,
        queue,
        ..
    } = App::build(settings, conn, Role::Scheduler).await?;
    if let Some(job) = cli.once {
        let id = schedule::fire_once(&conn, &queue, &job).await?;
        println!("enqueued {job} as job {id}");
        return Ok(());
    }
    let periodic: Vec<Periodic> = settings.jobs.schedules.clone();
    for p in &periodic {
        tracing::info!(job = %p.job, cron = %p.expression, timezone = %p.timezone, "schedule");
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(schedule::run(conn, queue, periodic, shutdown.clone()));
    signals.recv().await;
    draining.start();
    shutdown.cancel();
    let _ = task.await;
    probes_stop.cancel();
    if let Some(server) = health {
        let _ = server.await;
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// `--list`: each periodic job, its schedule and time zone, and its next three runs (in the
/// zone, and in UTC); a job switched off says so.
fn list(settings: &Settings) {
    let now = chrono::Utc::now();
    for name in settings.jobs.periodic_kinds().map(|k| k.name) {
        match settings.jobs.schedules.iter().find(|p| p.job == name) {
            None => println!("{name}: off"),
            Some(p) => {
                println!("{name}: {} ({})", p.expression, p.timezone);
                for at in p.upcoming(now).take(3) {
                    let local = at.with_timezone(&p.timezone);
                    println!(
                        "  {}  ({})",
                        local.format("%Y-%m-%d %H:%M:%S %Z"),
                        at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
        }
    }
}
