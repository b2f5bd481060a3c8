//! `scheduler`: enqueues periodic jobs on their cron schedules.

use std::process::ExitCode;

use clap::Parser;
use keel::{
    config::Settings,
    db,
    jobs::{
        JobQueue,
        schedule::{self, Periodic},
    },
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
    after_help = "Exit codes:\n  0  clean shutdown (SIGTERM or Ctrl-C), or --once done\n  1  failure (database unreachable, migrations pending, ...)\n  2  invalid configuration or unknown job"
)]
struct Cli {
    /// Enqueue one run of this job now and exit (for a cron container or a Kubernetes CronJob)
    #[arg(long, value_name = "JOB")]
    once: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::load_or_exit();
    keel::telemetry::init(&settings);
    if let Some(job) = &cli.once
        && !schedule::PERIODIC_JOBS.contains(&job.as_str())
    {
        eprintln!(
            "scheduler: unknown job {job:?}; periodic jobs are: {}",
            schedule::PERIODIC_JOBS.join(", ")
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
    let conn = db::connect(&settings.database).await?;
    db::require_migrated(&conn).await?;
    // The scheduler runs no jobs: its enqueues are announced to the processes that do.
    let queue = JobQueue::new(settings.jobs.clone()).announcing();
    if let Some(job) = cli.once {
        let id = schedule::fire_once(&conn, &queue, &job).await?;
        println!("enqueued {job} as job {id}");
        return Ok(());
    }
    let periodic: Vec<Periodic> = settings.jobs.schedules.clone();
    for p in &periodic {
        tracing::info!(job = %p.job, cron = %p.schedule.source(), "schedule");
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(schedule::run(conn, queue, periodic, shutdown.clone()));
    keel::shutdown_signal().await;
    shutdown.cancel();
    let _ = task.await;
    tracing::info!("scheduler stopped");
    Ok(())
}
