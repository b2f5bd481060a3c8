//! Background jobs: recent and dead-lettered ones, one in full (its payload masked as the API
//! masks it), per-queue figures, retries and pruning.

use clap::Subcommand;
use keel::jobs::{JobStatus, JobView, Jobs, Retried};
use serde_json::json;

use super::{Context, EXIT_NOT_FOUND, EXIT_REFUSED, Failure, Format, Outcome, print_table};

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Recent jobs, newest first
    List {
        /// Only jobs in this state: PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED
        #[arg(long, value_parser = status)]
        status: Option<JobStatus>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One job in full, its payload's secrets masked (JSON either way)
    Show { id: uuid::Uuid },
    /// Run a FAILURE or REVOKED job again, with a fresh set of attempts; --all --failed queues
    /// every FAILURE job (of one --name) again
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<uuid::Uuid>,
        /// Every job that matches the flags below, instead of one id
        #[arg(long, requires = "failed")]
        all: bool,
        /// With --all: the FAILURE jobs
        #[arg(long, requires = "all")]
        failed: bool,
        /// With --all: only jobs of this name (send_email, process_data, ...)
        #[arg(long, requires = "all", value_name = "JOB")]
        name: Option<String>,
    },
    /// Delete finished jobs: succeeded and revoked ones older than JOB_RETENTION_SUCCESS, failed
    /// ones older than JOB_RETENTION_FAILED, or every finished job older than --older-than
    Prune {
        /// A span such as 0s, 12h or 7d: prune every finished job that finished before it
        #[arg(long, value_name = "SPAN", value_parser = keel::config::parse_span)]
        older_than: Option<std::time::Duration>,
    },
    /// Per queue: jobs waiting (due now), scheduled for later, running and failed, how many
    /// finished in the last minute, and how long the oldest waiting job has waited
    Stats,
    /// Jobs that failed for good (their messages wait in the dead-letter queue)
    DeadLetters {
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

/// `--status`: a job status, in any case.
fn status(raw: &str) -> Result<JobStatus, String> {
    JobStatus::parse(raw).ok_or_else(|| {
        let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("one of {}", all.join(", "))
    })
}

pub async fn exec(cx: &Context, command: JobsCommand) -> Outcome {
    let jobs = cx.jobs()?;
    let format = cx.format;
    if let JobsCommand::Prune { older_than } = command {
        let (success, failed) = match older_than {
            Some(age) => (age, age),
            None => (
                cx.app.settings.jobs.retention_success,
                cx.app.settings.jobs.retention_failed,
            ),
        };
        let pruned = jobs.prune(success, failed).await?;
        format.emit(
            json!({"pruned": pruned.total(), "succeeded_or_revoked": pruned.succeeded, "failed": pruned.failed}),
            format_args!(
                "pruned {} finished jobs ({} succeeded or revoked, {} failed)",
                pruned.total(),
                pruned.succeeded,
                pruned.failed
            ),
        );
        return Ok(());
    }
    run(&jobs, command, format).await
}

async fn run(jobs: &Jobs, cmd: JobsCommand, format: Format) -> Outcome {
    let list = |rows: Vec<JobView>| match format {
        Format::Json => {
            let items: Vec<_> = rows.iter().map(job_json).collect();
            println!("{}", serde_json::Value::Array(items));
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.name.clone(),
                        j.queue.clone(),
                        j.status.to_string(),
                        j.attempts.to_string(),
                        j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        j.error
                            .clone()
                            .unwrap_or_default()
                            .chars()
                            .take(60)
                            .collect(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "NAME", "QUEUE", "STATUS", "ATTEMPTS", "CREATED", "ERROR",
                ],
                &table,
            );
        }
    };
    match cmd {
        JobsCommand::List { status, limit } => {
            list(jobs.recent(status, limit).await?);
            Ok(())
        }
        JobsCommand::DeadLetters { limit } => {
            list(jobs.dead_letters(limit).await?);
            Ok(())
        }
        JobsCommand::Stats => {
            let stats = jobs.queue_stats().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&stats)?),
                Format::Table => {
                    let table: Vec<Vec<String>> = stats
                        .iter()
                        .map(|q| {
                            vec![
                                q.queue.clone(),
                                q.waiting.to_string(),
                                q.scheduled.to_string(),
                                q.running.to_string(),
                                q.failed.to_string(),
                                q.finished_last_minute.to_string(),
                                q.oldest_waiting_seconds
                                    .map_or("-".into(), |s| format!("{s:.1}s")),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "QUEUE",
                            "WAITING",
                            "SCHEDULED",
                            "RUNNING",
                            "FAILED",
                            "LAST MINUTE",
                            "OLDEST WAITING",
                        ],
                        &table,
                    );
                }
            }
            Ok(())
        }
        JobsCommand::Show { id } => {
            let job = jobs
                .find(id)
                .await?
                .ok_or_else(|| Failure(EXIT_NOT_FOUND, format!("no job {id}")))?;
            let shown = job_json(&job);
            match format {
                Format::Json => println!("{shown}"),
                Format::Table => println!("{}", serde_json::to_string_pretty(&shown)?),
            }
            Ok(())
        }
        JobsCommand::Prune { .. } => Ok(()),
        JobsCommand::Retry { id: None, name, .. } => {
            let n = jobs.retry_failed(name.as_deref()).await?;
            format.emit(
                json!({"queued_again": n}),
                format_args!("{n} failed jobs queued again (the server or a worker picks them up)"),
            );
            Ok(())
        }
        JobsCommand::Retry { id: Some(id), .. } => match jobs.retry(id).await? {
            Retried::Queued => {
                format.emit(
                    json!({"queued_again": 1, "id": id}),
                    format_args!("job {id} queued again (the server or a worker picks it up)"),
                );
                Ok(())
            }
            Retried::NotFound => Err(Failure(EXIT_NOT_FOUND, format!("no job {id}"))),
            Retried::NotRetryable { status } => Err(Failure(
                EXIT_REFUSED,
                format!("job {id} is {status}; only FAILURE or REVOKED jobs can be retried"),
            )),
        },
    }
}

/// A job as `list` and `show` print it: the payload masked as the API masks it.
fn job_json(j: &JobView) -> serde_json::Value {
    json!({
        "id": j.id, "name": j.name, "status": j.status.as_str(), "attempts": j.attempts,
        "max_attempts": j.max_attempts, "payload": j.payload, "result": j.result, "error": j.error,
        "owner_id": j.owner_id, "created_at": j.created_at, "started_at": j.started_at,
        "finished_at": j.finished_at, "run_at": j.run_at, "queue": j.queue,
        "priority": j.priority, "unique_key": j.unique_key, "progress": j.progress,
        "request_id": j.request_id, "trace_id": j.trace_id,
        "concurrency_key": j.concurrency_key, "waiting_for": j.waiting_for.map(|w| w.as_str()),
    })
}
