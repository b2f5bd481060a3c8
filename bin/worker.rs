//! `worker`: not implemented yet. It loads and validates the configuration, then says so and exits 1,
//! so that nobody mistakes it for a running worker.

use std::process::ExitCode;

use clap::Parser;
use keel::config::Settings;

/// Keel's background job worker: runs email, data-processing and account-purge jobs.
///
/// Every setting comes from the environment or a `.env` file; see `.env.example`.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes:\n  0  clean shutdown\n  1  runtime failure (and, for now: the worker is not implemented yet)\n  2  invalid configuration"
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    let _settings = Settings::load_or_exit();
    eprintln!("worker: background jobs are not implemented yet in this version of Keel");
    ExitCode::from(1)
}
