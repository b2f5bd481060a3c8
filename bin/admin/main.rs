//! `admin`: the operator CLI, working on `DATABASE_URL` directly (the server need not run).

use std::{
    io::{BufRead, IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
};

use clap::{Parser, Subcommand, ValueEnum};
use keel::{
    accounts::{
        Accounts,
        admin::Actor,
        directory::{Deleted, Directory, Listed, Position, UserQuery},
        passwords::PasswordHasher,
    },
    config::Settings,
    db,
    entities::{job, user},
    jobs::{JobQueue, JobStatus, Jobs, Retried},
};

mod config;
mod migrate;

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_REFUSED: u8 = 4;

/// Keel's operator CLI. Talks to DATABASE_URL directly; the server need not run.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  success\n  1  failure (database unreachable, migration failed, ...)\n  2  invalid configuration or usage\n  3  no such user or job\n  4  refused (invalid input, or a confirmation declined)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations (the default), or list or revert them
    Migrate {
        #[command(subcommand)]
        action: Option<migrate::MigrateCommand>,
    },
    /// List users, oldest first
    ListUsers {
        /// Only verified users
        #[arg(long, conflicts_with = "unverified")]
        verified: bool,
        /// Only unverified users
        #[arg(long)]
        unverified: bool,
        /// Only superusers
        #[arg(long)]
        superuser: bool,
        /// Only (soft-)deleted users; without it deleted users are left out
        #[arg(long)]
        deleted: bool,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        page: u64,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        size: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Create a verified superuser: prompts (password hidden), or --email/--username/--password-stdin
    CreateSuperuser {
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        username: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Counts of users, sessions and jobs
    Stats {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Mark a user's email as verified
    VerifyUser {
        /// Email address or user id
        user: String,
    },
    /// Delete a user: soft (revocable, sessions ended) unless --hard
    DeleteUser {
        /// Email address or user id
        user: String,
        /// Delete permanently, with sessions, tokens and API keys
        #[arg(long)]
        hard: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Why the account is deleted (kept with a soft delete)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Schedule a user's account for permanent deletion after the grace period (mails them a
    /// cancel link), as if they had confirmed a deletion request
    ScheduleDeletion {
        /// Email address or user id
        user: String,
        /// Days until the deletion [default: ACCOUNT_DELETION_GRACE_PERIOD_DAYS]
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=365))]
        days: Option<u32>,
    },
    /// Cancel a user's requested or scheduled account deletion
    CancelDeletion {
        /// Email address or user id
        user: String,
    },
    /// Turn off a user's two-factor sign-in (lost authenticator and recovery codes); ends
    /// every session of the account and mails a notice
    ResetMfa {
        /// Email address or user id
        user: String,
    },
    /// Inspect and retry background jobs
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Check the configuration before deploying it
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Recent jobs, newest first
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One job in full (JSON)
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
    Stats {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Jobs that failed for good (their messages wait in the dead-letter queue)
    DeadLetters {
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

struct Failure(u8, String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(EXIT_FAILURE, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Config(command) => return config::exec(command),
        command => Cli { command },
    };
    let settings = Settings::load_or_exit();
    // Logs go to stderr, so that what a command prints (tables, JSON) stays machine-readable.
    keel::telemetry::init_stderr(&settings);
    match run(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("admin: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command, settings: Settings) -> Outcome {
    let conn = db::connect(&settings.database).await?;
    let command = match command {
        Command::Migrate { action } => return migrate::exec(&conn, action).await,
        other => other,
    };
    db::require_migrated(&conn).await?;
    // Writes from the CLI invalidate the servers' shared cache too.
    let cache = keel::compose::build_cache(&settings).await?;
    // The CLI runs no jobs: its enqueues are announced to the processes that do.
    let queue = JobQueue::new(settings.jobs.clone()).announcing();
    let accounts = || -> Result<Accounts, Failure> {
        let hasher = PasswordHasher::new(1)?;
        Ok(Accounts::new(
            conn.clone(),
            Arc::new(settings.clone()),
            hasher,
            queue.clone(),
            cache.clone(),
        )?)
    };
    let directory = Directory::new(conn.clone(), cache.clone());
    let jobs = || -> Result<Jobs, Failure> {
        let mailer = keel::mail::Mailer::new(&settings.mail)?;
        let registry =
            keel::compose::job_registry(&conn, &mailer, Arc::new(settings.clone()), &queue, &cache);
        Ok(Jobs::new(conn.clone(), queue.clone(), registry))
    };
    match command {
        Command::Migrate { .. } | Command::Config(_) => unreachable!("handled above"),
        Command::ListUsers {
            verified,
            unverified,
            superuser,
            deleted,
            page,
            size,
            format,
        } => {
            let query = UserQuery {
                deleted: if deleted {
                    Deleted::Only
                } else {
                    Deleted::Exclude
                },
                is_verified: (verified || unverified).then_some(verified),
                is_superuser: superuser.then_some(true),
                ..Default::default()
            };
            let found = directory
                .list(&query, &Position::Page(page), size, None)
                .await?;
            let (users, total) = (found.items, found.total);
            match format {
                Format::Json => {
                    let items: Vec<_> = users.iter().map(user_json).collect();
                    println!(
                        "{}",
                        serde_json::json!({"items": items, "total": total, "page": page, "size": size})
                    );
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = users
                        .iter()
                        .map(|u| {
                            vec![
                                u.id.to_string(),
                                u.email.clone(),
                                u.username.clone(),
                                yes_no(u.is_verified),
                                yes_no(u.is_superuser),
                                u.created_at.format("%Y-%m-%d %H:%M").to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "ID",
                            "EMAIL",
                            "USERNAME",
                            "VERIFIED",
                            "SUPERUSER",
                            "CREATED",
                        ],
                        &rows,
                    );
                    println!("{} of {total} user(s), page {page}", users.len());
                }
            }
            Ok(())
        }
        Command::CreateSuperuser {
            email,
            username,
            password_stdin,
        } => {
            let email = match email {
                Some(e) => e,
                None => prompt("Email: ")?,
            };
            let username = match username {
                Some(u) => u,
                None => prompt("Username: ")?,
            };
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            } else {
                let first = rpassword::prompt_password("Password: ")?;
                let again = rpassword::prompt_password("Password (again): ")?;
                if first != again {
                    return Err(Failure(EXIT_REFUSED, "the passwords differ".into()));
                }
                first
            };
            let user = accounts()?
                .create_superuser(&email, &username, password)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            println!(
                "created superuser {} ({}), id {}",
                user.username, user.email, user.id
            );
            Ok(())
        }
        Command::Stats { format } => stats(&directory, &jobs()?, format).await,
        Command::VerifyUser { user } => {
            let found = find(&directory, &user).await?;
            if found.is_verified {
                println!("{} is already verified", found.email);
                return Ok(());
            }
            let u = accounts()?
                .set_verified(found.id, true, Actor::Cli)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            println!("verified {} ({})", u.email, u.id);
            Ok(())
        }
        Command::DeleteUser {
            user,
            hard,
            yes,
            reason,
        } => {
            let found = find(&directory, &user).await?;
            let what = if hard {
                "permanently delete"
            } else {
                "soft-delete"
            };
            if !yes && !confirm(&format!("{what} {} ({})? [y/N] ", found.email, found.id))? {
                return Err(Failure(
                    EXIT_REFUSED,
                    "not confirmed; nothing changed".into(),
                ));
            }
            let (email, id) = (found.email.clone(), found.id);
            if hard {
                accounts()?
                    .hard_delete(id, Actor::Cli)
                    .await
                    .map_err(|e| refused_or_failed(&e))?;
                println!("permanently deleted {email} ({id})");
            } else {
                accounts()?
                    .soft_delete(id, reason, Actor::Cli)
                    .await
                    .map_err(|e| refused_or_failed(&e))?;
                println!("soft-deleted {email} ({id}); its sessions are revoked");
            }
            Ok(())
        }
        Command::ScheduleDeletion { user, days } => {
            let found = find(&directory, &user).await?;
            let days = days.unwrap_or(settings.auth.deletion_grace_period_days);
            let at = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
            let u = accounts()?
                .schedule_deletion(found, at, "admin-cli")
                .await
                .map_err(|e| refused_or_failed(&e))?;
            println!(
                "{} ({}) will be deleted permanently on {}; a cancel link was mailed",
                u.email,
                u.id,
                at.to_rfc3339()
            );
            Ok(())
        }
        Command::CancelDeletion { user } => {
            let found = find(&directory, &user).await?;
            let u = accounts()?
                .cancel_deletion(found.id, &Default::default(), "admin-cli")
                .await
                .map_err(|e| refused_or_failed(&e))?;
            println!("the deletion of {} ({}) is cancelled", u.email, u.id);
            Ok(())
        }
        Command::ResetMfa { user } => {
            let found = find(&directory, &user).await?;
            let u = accounts()?
                .reset_mfa(found.id, Actor::Cli)
                .await
                .map_err(|e| refused_or_failed(&e))?;
            println!(
                "two-factor sign-in is off for {} ({}); its sessions are revoked",
                u.email, u.id
            );
            Ok(())
        }
        Command::Jobs(JobsCommand::Prune { older_than }) => {
            let (success, failed) = match older_than {
                Some(age) => (age, age),
                None => (
                    settings.jobs.retention_success,
                    settings.jobs.retention_failed,
                ),
            };
            let pruned = jobs()?.prune(success, failed).await?;
            println!(
                "pruned {} finished jobs ({} succeeded or revoked, {} failed)",
                pruned.total(),
                pruned.succeeded,
                pruned.failed
            );
            Ok(())
        }
        Command::Jobs(cmd) => jobs_command(&jobs()?, cmd).await,
    }
}

fn refused_or_failed(e: &keel::accounts::AccountError) -> Failure {
    use keel::accounts::AccountError as E;
    match e {
        E::Validation(problems) => Failure(
            EXIT_REFUSED,
            problems
                .iter()
                .map(|p| format!("{} {}", p.field, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        E::EmailTaken
        | E::UsernameTaken
        | E::DeletionAlreadyScheduled { .. }
        | E::AccountDeleted
        | E::DeletionNotRequested
        | E::AlreadySoftDeleted
        | E::NotSoftDeleted
        | E::MfaNotEnabled
        | E::CannotModifySelf(_) => Failure(EXIT_REFUSED, e.to_string()),
        E::NotFound => Failure(EXIT_NOT_FOUND, e.to_string()),
        other => Failure(EXIT_FAILURE, keel::telemetry::cause_chain(other)),
    }
}

async fn find(directory: &Directory, ident: &str) -> Result<user::Model, Failure> {
    directory
        .by_ident(ident)
        .await?
        .ok_or_else(|| Failure(EXIT_NOT_FOUND, format!("no user {ident:?}")))
}

async fn stats(directory: &Directory, jobs: &Jobs, format: Format) -> Outcome {
    let s = directory.statistics().await?;
    let by_status: serde_json::Map<String, serde_json::Value> = s
        .jobs_by_status
        .iter()
        .map(|(status, n)| (status.to_string(), (*n).into()))
        .collect();
    let last_scheduled: serde_json::Map<String, serde_json::Value> = jobs
        .last_firings()
        .await?
        .into_iter()
        .map(|(job, at)| (job, serde_json::json!(at)))
        .collect();
    let report = serde_json::json!({
        "total_users": s.total_users,
        "superusers": s.superusers,
        "verified_users": s.verified_users,
        "unverified_users": s.unverified_users,
        "deleted_users": s.deleted_users,
        "pending_deletion": s.pending_deletion,
        "active_sessions": s.active_sessions,
        "jobs_by_status": by_status,
        "last_scheduled": last_scheduled,
    });
    match format {
        Format::Json => println!("{report}"),
        Format::Table => {
            for key in [
                "total_users",
                "superusers",
                "verified_users",
                "unverified_users",
                "deleted_users",
                "pending_deletion",
                "active_sessions",
            ] {
                println!("{key:<18} {}", report[key]);
            }
            for (status, n) in report["jobs_by_status"].as_object().into_iter().flatten() {
                println!("{:<18} {n}", format!("jobs {status}"));
            }
            for (job, at) in report["last_scheduled"].as_object().into_iter().flatten() {
                println!("last scheduled {job}: {}", at.as_str().unwrap_or("-"));
            }
        }
    }
    Ok(())
}

async fn jobs_command(jobs: &Jobs, cmd: JobsCommand) -> Outcome {
    let list = |rows: Vec<job::Model>, format: Format| match format {
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
        JobsCommand::List {
            status,
            limit,
            format,
        } => {
            let status = status
                .map(|s| {
                    JobStatus::parse(&s).ok_or_else(|| {
                        Failure(EXIT_USAGE, format!("unknown status {s:?}; one of PENDING, STARTED, RETRY, SUCCESS, FAILURE, REVOKED"))
                    })
                })
                .transpose()?;
            list(jobs.recent(status, limit).await?, format);
            Ok(())
        }
        JobsCommand::DeadLetters { limit, format } => {
            list(jobs.dead_letters(limit).await?, format);
            Ok(())
        }
        JobsCommand::Stats { format } => {
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
            println!("{}", serde_json::to_string_pretty(&job_json(&job))?);
            Ok(())
        }
        JobsCommand::Prune { .. } => unreachable!("handled in run, which has the settings"),
        JobsCommand::Retry { id: None, name, .. } => {
            let n = jobs.retry_failed(name.as_deref()).await?;
            println!("{n} failed jobs queued again (the server or a worker picks them up)");
            Ok(())
        }
        JobsCommand::Retry { id: Some(id), .. } => match jobs.retry(id).await? {
            Retried::Queued => {
                println!("job {id} queued again (the server or a worker picks it up)");
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

fn user_json(u: &Listed) -> serde_json::Value {
    serde_json::json!({
        "id": u.id, "email": u.email, "username": u.username, "is_superuser": u.is_superuser,
        "is_verified": u.is_verified, "is_deleted": u.is_deleted, "created_at": u.created_at,
        "deleted_at": u.deleted_at,
    })
}

fn job_json(j: &job::Model) -> serde_json::Value {
    serde_json::json!({
        "id": j.id, "name": j.name, "status": j.status.as_str(), "attempts": j.attempts,
        "max_attempts": j.max_attempts, "payload": j.payload, "result": j.result, "error": j.error,
        "owner_id": j.owner_id, "created_at": j.created_at, "started_at": j.started_at,
        "finished_at": j.finished_at, "run_at": j.run_at, "queue": j.queue,
        "priority": j.priority, "unique_key": j.unique_key, "progress": j.progress,
    })
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn prompt(label: &str) -> Result<String, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure(
            EXIT_USAGE,
            format!(
                "{} needed: pass it as an option when not on a terminal",
                label.trim_end_matches(": ")
            ),
        ));
    }
    print!("{label}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn confirm(question: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure(
            EXIT_REFUSED,
            "refusing without confirmation: pass --yes when not on a terminal".into(),
        ));
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
