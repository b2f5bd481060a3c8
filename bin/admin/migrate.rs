//! `admin migrate`: apply, list and revert schema migrations, each one reported as it is done.
//! Every change runs under the migration lock, so it never races a server's `AUTO_MIGRATE`.

use clap::Subcommand;
use keel::db;

use super::{EXIT_REFUSED, Failure, Format, Outcome, confirm, print_table};

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration (what `admin migrate` alone does)
    Up,
    /// The migrations applied (and when) and those pending
    Status,
    /// Revert the last STEPS applied migrations, newest first (asks for confirmation: the
    /// tables and columns they made are dropped with their data)
    Down {
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        steps: u32,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

pub async fn exec(
    conn: &db::Connection,
    command: Option<MigrateCommand>,
    format: Format,
) -> Outcome {
    match command.unwrap_or(MigrateCommand::Up) {
        MigrateCommand::Up => up(conn, format).await,
        MigrateCommand::Status => status(conn, format).await,
        MigrateCommand::Down { steps, yes } => down(conn, steps as usize, yes, format).await,
    }
}

/// Applies the pending migrations; as text, each one is reported as it is in.
async fn up(conn: &db::Connection, format: Format) -> Outcome {
    let mut applied = Vec::new();
    db::migrate_reporting(conn, |name| {
        if format == Format::Table {
            println!("applied {name}");
        }
        applied.push(name.to_string());
    })
    .await?;
    match format {
        Format::Json => println!("{}", serde_json::json!({ "applied": applied })),
        Format::Table if applied.is_empty() => println!("database is up to date"),
        Format::Table => {}
    }
    Ok(())
}

async fn status(conn: &db::Connection, format: Format) -> Outcome {
    let applied = db::applied_migrations(conn).await?;
    let pending = db::pending_migrations(conn).await?;
    let when = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    match format {
        Format::Json => {
            let applied: Vec<_> = applied
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "name": m.name,
                        "applied_at": chrono::DateTime::from_timestamp(m.applied_at, 0),
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"applied": applied, "pending": pending})
            );
        }
        Format::Table => {
            let mut rows: Vec<Vec<String>> = applied
                .iter()
                .map(|m| vec![m.name.clone(), "applied".into(), when(m.applied_at)])
                .collect();
            rows.extend(
                pending
                    .iter()
                    .map(|name| vec![name.clone(), "pending".into(), String::new()]),
            );
            print_table(&["MIGRATION", "STATE", "APPLIED AT"], &rows);
            println!("{} applied, {} pending", applied.len(), pending.len());
        }
    }
    Ok(())
}

async fn down(conn: &db::Connection, steps: usize, yes: bool, format: Format) -> Outcome {
    let applied = db::applied_migrations(conn).await?;
    if applied.is_empty() {
        format.emit(
            serde_json::json!({ "reverted": [] }),
            "no migration is applied",
        );
        return Ok(());
    }
    let doomed: Vec<&str> = applied
        .iter()
        .rev()
        .take(steps)
        .map(|m| m.name.as_str())
        .collect();
    if !yes
        && !confirm(&format!(
            "Revert {} migration(s) ({})? Their tables and columns are dropped with their data. [y/N] ",
            doomed.len(),
            doomed.join(", ")
        ))?
    {
        return Err(Failure(
            EXIT_REFUSED,
            "not confirmed; nothing reverted".into(),
        ));
    }
    let mut reverted = Vec::new();
    db::rollback_reporting(conn, steps, |name| {
        if format == Format::Table {
            println!("reverted {name}");
        }
        reverted.push(name.to_string());
    })
    .await?;
    if format == Format::Json {
        println!("{}", serde_json::json!({ "reverted": reverted }));
    }
    Ok(())
}
