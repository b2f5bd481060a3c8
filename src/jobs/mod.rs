//! Background jobs: the outbox and status table, the handler registry, the runner that executes
//! one job, and two transports that feed it: RabbitMQ (`rabbit`) and the in-process poller
//! (`local`). This module knows no job's meaning; handlers live beside their domains and are
//! declared on their payload types beside their domains (`Job`) and listed once in `app`.

mod attempt;
mod claim;
mod control;
pub mod heartbeat;
mod kind;
pub(crate) mod limits;
pub mod local;
mod mask;
mod outbox;
pub mod rabbit;
pub mod retention;
mod runner;
pub mod schedule;
pub mod stats;
mod together;
mod view;
mod watch;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use serde_json::Value;
use uuid::Uuid;

pub use crate::queues::{JobKind, Lane, Queue};
pub use attempt::Outcome;
pub use control::{Cancelled, Jobs, Retried};
pub use kind::{Deps, Job, Registration, Scheduled, job, kind, periodic};
pub use limits::Held;
pub use mask::masked;
pub use outbox::{CHANNEL, JobQueue, NewJob, Publication, Submitted, announce, listen};
pub use runner::Runner;
pub use view::JobView;
pub use watch::{PROGRESS_EVERY, Progress};

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
    pub fn payload<P: Job>(&self) -> Result<P, JobError> {
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
    scrub: fn(&Value) -> Option<Value>,
}

impl Handler {
    fn new<F, Fut>(f: F, scrub: fn(&Value) -> Option<Value>) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        Self {
            run: Arc::new(move |ctx| Box::pin(f(ctx))),
            scrub,
        }
    }

    /// What the stored payload becomes when the job ends for good (succeeded, failed or
    /// cancelled); `None` when it carries nothing to remove.
    pub fn scrubbed(&self, payload: &Value) -> Option<Value> {
        (self.scrub)(payload)
    }
}

/// Job name → handler, built from the application's list of jobs (`RegistryBuilder::jobs`).
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
    /// A handler of untyped jobs called `name` (a test's, or a job without a payload type);
    /// application jobs are typed and come from its list (`jobs`).
    pub fn register<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.handler(name, Handler::new(f, |_| None))
    }

    fn handler(mut self, name: &str, handler: Handler) -> Self {
        self.handlers.insert(name.to_string(), handler);
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
