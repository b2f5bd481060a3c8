//! `admin`: the operator CLI, working on `DATABASE_URL` directly (the server need not run).
//! One file per command group (as cargo lays out its subcommands): `users` (accounts and
//! statistics), `jobs`, `migrate`, `config`. Every command prints a table or plain lines, or
//! JSON with `--format json`, mutating ones included.

use std::{
    io::{BufRead, IsTerminal, Write},
    process::ExitCode,
};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use keel::{
    accounts::{Accounts, directory::Directory},
    app::{App, Role},
    config::Settings,
    db,
    jobs::Jobs,
};

mod config;
mod jobs;
mod migrate;
mod users;

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
    /// Output: a table (or plain lines), or JSON; before or after the command
    #[arg(long, value_enum, global = true, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

impl Format {
    /// Prints a command's outcome: `json` as one JSON document, or `text` as it is.
    fn emit(self, json: serde_json::Value, text: impl std::fmt::Display) {
        match self {
            Format::Json => println!("{json}"),
            Format::Table => println!("{text}"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations (the default), or list or revert them
    Migrate {
        #[command(subcommand)]
        action: Option<migrate::MigrateCommand>,
    },
    #[command(flatten)]
    Users(users::UsersCommand),
    /// Inspect, retry and prune background jobs
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Check the configuration before deploying it
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

struct Failure(u8, String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(EXIT_FAILURE, e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// What the account and job commands work with, built once from the settings.
struct Context {
    /// What every process builds; the CLI's own role (`Role::Cli`).
    app: App,
    format: Format,
}

impl Context {
    fn accounts(&self) -> Result<Accounts, Failure> {
        Ok(self.app.accounts(1)?)
    }

    fn directory(&self) -> Directory {
        Directory::new(self.app.db.clone(), self.app.cache.clone())
    }

    fn jobs(&self) -> Result<Jobs, Failure> {
        Ok(self.app.jobs())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let Cli { format, command } = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let command = match command {
        Command::Config(command) => return config::exec(command, format),
        command => command,
    };
    let settings = keel::app::settings_or_exit();
    // Logs go to stderr, so that what a command prints (tables, JSON) stays machine-readable.
    // With the OpenTelemetry settings, the command is a trace of its own (`admin
    // schedule-deletion`, `admin jobs retry`), which the jobs it queues continue.
    let _traces = keel::telemetry::init_stderr(&settings, "keel-admin");
    let mut name = String::from("admin");
    let mut level = &matches;
    while let Some((word, deeper)) = level.subcommand() {
        name.push(' ');
        name.push_str(word);
        level = deeper;
    }
    // Target `keel`: the one whose spans are exported.
    let span = tracing::info_span!(
        target: "keel",
        "admin",
        otel.name = %name,
        command = %name,
        otel.status_code = tracing::field::Empty,
    );
    let outcome =
        tracing::Instrument::instrument(run(command, settings, format), span.clone()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            span.record("otel.status_code", "ERROR");
            eprintln!("admin: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command, settings: Settings, format: Format) -> Outcome {
    let conn = db::connect(&settings.database).await?;
    let command = match command {
        Command::Migrate { action } => return migrate::exec(&conn, action, format).await,
        other => other,
    };
    db::require_migrated(&conn).await?;
    // Writes from the CLI invalidate the servers' shared cache too; it runs no jobs: its
    // enqueues are announced to the processes that do.
    let app = App::build(settings, conn, Role::Cli).await?;
    let cx = Context { app, format };
    match command {
        Command::Users(command) => users::exec(&cx, command).await,
        Command::Jobs(command) => jobs::exec(&cx, command).await,
        Command::Migrate { .. } | Command::Config(_) => Ok(()),
    }
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
