//! Background jobs: the outbox and status table, the handler registry, the runner that executes
//! one job, and two transports that feed it: RabbitMQ (`rabbit`) and the in-process poller
//! (`local`). This module knows no job's meaning; handlers live beside their domains and are
//! registered at the composition point (`app.rs`).

mod control;
pub mod heartbeat;
pub mod local;
mod mask;
mod outbox;
pub mod rabbit;
pub mod retention;
mod runner;
pub mod schedule;
pub mod stats;
pub mod tasks;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use serde_json::Value;
use uuid::Uuid;

pub use crate::queues::{Lane, Queue};
pub use control::{Cancelled, Jobs, Retried};
pub use mask::masked;
pub use outbox::{CHANNEL, JobPayload, JobQueue, NewJob, Publication, Submitted, announce, listen};
pub use runner::{Outcome, PROGRESS_EVERY, Progress, Runner};

pub use crate::config::JobSettings;

pub use crate::entities::job::JobStatus;

/// What a handler gets to work with.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    pub name: String,
    pub payload: Value,
    /// 1 for the first run.
    pub attempt: i32,
    pub max_attempts: i32,
    /// Where the handler may report how far it has come.
    pub progress: Progress,
}

impl JobContext {
    /// The payload as the type it was enqueued with; one that does not parse is a fatal
    /// failure (running it again cannot help).
    pub fn payload<P: JobPayload>(&self) -> Result<P, JobError> {
        P::deserialize(&self.payload)
            .map_err(|e| JobError::fatal(format!("invalid {} payload: {e}", P::NAME)))
    }
}

/// A handler's failure. Retryable failures are tried again until the attempts run out.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that no retry can fix, such as a malformed payload.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

pub type JobResult = Result<Value, JobError>;
type HandlerFn =
    Arc<dyn Fn(JobContext) -> Pin<Box<dyn Future<Output = JobResult> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct Handler {
    run: HandlerFn,
    /// Rewrites the stored payload once the job has ended, to drop secrets (mailed tokens).
    scrub: Option<fn(&Value) -> Value>,
}

impl Handler {
    /// What the stored payload becomes when the job ends for good (succeeded, failed or
    /// cancelled); `None` when it carries nothing to remove.
    pub fn scrubbed(&self, payload: &Value) -> Option<Value> {
        self.scrub.map(|scrub| scrub(payload))
    }
}

/// Job name → handler. New kinds of job are one `register` call at the composition point.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: Arc<HashMap<String, Handler>>,
}

impl Registry {
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    pub fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }
}

#[derive(Default)]
pub struct RegistryBuilder {
    handlers: HashMap<String, Handler>,
}

impl RegistryBuilder {
    pub fn register<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.insert(name, f, None)
    }

    /// Registers a handler whose payload carries secrets, replaced by `scrub(payload)` at the end.
    pub fn register_sensitive<F, Fut>(self, name: &str, f: F, scrub: fn(&Value) -> Value) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.insert(name, f, Some(scrub))
    }

    fn insert<F, Fut>(mut self, name: &str, f: F, scrub: Option<fn(&Value) -> Value>) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let run: HandlerFn = Arc::new(move |ctx| Box::pin(f(ctx)));
        self.handlers
            .insert(name.to_string(), Handler { run, scrub });
        self
    }

    pub fn build(self) -> Registry {
        Registry {
            handlers: Arc::new(self.handlers),
        }
    }
}

/// A process-unique name for a worker, stored in `locked_by` and the heartbeat table.
pub fn worker_id(kind: &str) -> String {
    let host = hostname();
    format!(
        "{kind}-{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
