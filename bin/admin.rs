//! `admin`: the operator CLI, working on `DATABASE_URL` directly.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keel::{config::Settings, db};

/// Keel's operator CLI. Talks to DATABASE_URL directly; the server need not run.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  success\n  1  failure (database unreachable, migration failed, ...)\n  2  invalid configuration or usage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::load_or_exit();
    let result = match cli.command {
        Command::Migrate => migrate(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("admin: {e}");
            ExitCode::from(1)
        }
    }
}

async fn migrate(settings: &Settings) -> Result<(), db::DbError> {
    let conn = db::connect(settings).await?;
    let pending = db::pending_migrations(&conn).await?;
    if pending.is_empty() {
        println!("database is up to date");
        return Ok(());
    }
    db::migrate(&conn).await?;
    for name in &pending {
        println!("applied {name}");
    }
    Ok(())
}
