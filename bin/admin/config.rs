//! `admin config check`: the settings a Keel process would run with (secrets masked), and
//! every invalid one, before deploying them. Reads the environment and `.env` only; connects
//! to nothing.

use std::process::ExitCode;

use clap::Subcommand;
use keel::config::catalog::{self, Source};

use super::{EXIT_USAGE, Format, print_table};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings (secrets masked) and list every invalid one; exit 2 when
    /// one is
    Check,
}

pub fn exec(command: ConfigCommand, format: Format) -> ExitCode {
    let ConfigCommand::Check = command;
    // Loads `.env` first, as every binary does, so what follows sees the same values.
    let problems = keel::app::check_env().err().unwrap_or_default();
    let settings = catalog::effective(|k| std::env::var(k).ok());
    let source = |s: &Source| match s {
        Source::Environment => "environment".to_string(),
        Source::File(path) => format!("file {path}"),
        Source::Default => "default".to_string(),
    };
    match format {
        Format::Json => {
            let settings: Vec<_> = settings
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "value": s.value,
                        "source": source(&s.source),
                    })
                })
                .collect();
            let invalid: Vec<_> = problems
                .iter()
                .map(|p| serde_json::json!({"name": p.var, "problem": p.message}))
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "valid": problems.is_empty(),
                    "settings": settings,
                    "invalid": invalid,
                })
            );
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = settings
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.value.clone().unwrap_or_else(|| "(unset)".into()),
                        source(&s.source),
                    ]
                })
                .collect();
            print_table(&["SETTING", "VALUE", "SOURCE"], &rows);
            if problems.is_empty() {
                println!("the configuration is valid");
            } else {
                println!("{} invalid setting(s)", problems.len());
            }
        }
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_USAGE)
    }
}
