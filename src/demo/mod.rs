//! The demonstration parts of the starter: the jobs behind `POST /tasks/test`,
//! `/tasks/process-data` and `/tasks/long-running` (an echo that can fail on purpose, a data
//! summary, a job that reports progress). A product built on Keel deletes this module, its
//! three lines in `app::JOBS` and the three submission endpoints in `http/api/tasks.rs`.

pub mod jobs;

pub use jobs::{LongRunning, ProcessData, TestTask};
