//! Background jobs: the outbox and status table, the handler registry, the runner that executes
//! one job, and two transports that feed it: RabbitMQ (`rabbit`) and the in-process poller
//! (`local`). This module knows no job's meaning; handlers live beside their domains and are
//! registered at the composition point (`app.rs`).

mod control;
pub mod local;
pub mod rabbit;
mod runner;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Duration,
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    Set, sea_query::OnConflict,
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

pub use control::{Cancelled, Jobs, Retried};
pub use runner::{Outcome, Runner};

use crate::{config::Settings, entities::job};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        Self::Pending,
        Self::Started,
        Self::Retry,
        Self::Success,
        Self::Failure,
        Self::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Started => "STARTED",
            Self::Retry => "RETRY",
            Self::Success => "SUCCESS",
            Self::Failure => "FAILURE",
            Self::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// How jobs are retried and bounded; read from the settings.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub timeout: Duration,
    /// How often one query per worker asks which of its running jobs were cancelled.
    pub cancel_poll: Duration,
}

impl JobSettings {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            max_attempts: s.job_max_attempts,
            retry_base: s.job_retry_base,
            retry_max: s.job_retry_max,
            timeout: s.job_timeout,
            cancel_poll: Duration::from_millis(500),
        }
    }

    /// Exponential backoff with jitter: base × 2^(attempt−1), capped, then scaled by 0.75–1.25 so
    /// that jobs failing together do not retry together.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 30) as u32 - 1;
        let raw = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.retry_max);
        raw.mul_f64(0.75 + rand::random::<f64>() * 0.5)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub payload: Value,
    pub owner_id: Option<Uuid>,
    pub dedupe_key: Option<String>,
}

/// A job's payload as a type: the job's name goes with it, and the handler reads back the
/// same type (`JobContext::payload`), so the two sides cannot drift apart.
pub trait JobPayload: serde::Serialize + serde::de::DeserializeOwned {
    const NAME: &'static str;
}

impl NewJob {
    /// The job that carries `payload`.
    pub fn of<P: JobPayload>(payload: &P) -> Self {
        // A payload type that cannot be written as JSON is a programming error caught by the
        // tests of each job; its job would fail at once, as `null`.
        Self::new(
            P::NAME,
            serde_json::to_value(payload).unwrap_or(Value::Null),
        )
    }

    pub fn new(name: &str, payload: Value) -> Self {
        Self {
            name: name.to_string(),
            payload,
            owner_id: None,
            dedupe_key: None,
        }
    }

    pub fn owner(mut self, owner: Uuid) -> Self {
        self.owner_id = Some(owner);
        self
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// The PostgreSQL channel on which enqueues are announced to other processes.
pub const CHANNEL: &str = "keel_jobs";

/// Tells the relays and in-process workers of other processes that jobs are waiting
/// (PostgreSQL `NOTIFY`; delivered when `conn`'s transaction commits). Nothing on SQLite, where
/// the embedded worker is the only reader and polls as a safety net.
pub async fn announce(conn: &impl ConnectionTrait) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(&format!("NOTIFY {CHANNEL}"))
            .await?;
    }
    Ok(())
}

/// Wakes `wake` whenever another process announces jobs, until `shutdown` (PostgreSQL only;
/// `None` elsewhere). After a lost connection it wakes once more, for what was announced while
/// it was not listening.
pub fn listen(
    db: &DatabaseConnection,
    wake: Arc<Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if db.get_database_backend() != DbBackend::Postgres {
        return None;
    }
    let pool = db.get_postgres_connection_pool().clone();
    Some(tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let listening = async {
                let mut listener = sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sea_orm::sqlx::Error>(listener)
            };
            match listening.await {
                Ok(mut listener) => {
                    failures = 0;
                    wake.notify_one();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            next = listener.try_recv() => match next {
                                Ok(Some(_)) => wake.notify_one(),
                                // The connection was lost; the next call reconnects.
                                Ok(None) => wake.notify_one(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "job announcements: listener failed");
                                    break;
                                }
                            },
                        }
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, "job announcements: cannot listen; polling meanwhile");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(rabbit::backoff(failures.max(1))) => {}
            }
        }
    }))
}

/// A job committed on its own, for this process's relay to publish without looking for it.
pub type HandedOff = (Uuid, String);

/// The producer side: writes jobs into the outbox table, inside the caller's transaction, and
/// wakes this process's dispatcher once the caller has committed.
#[derive(Clone)]
pub struct JobQueue {
    settings: JobSettings,
    wake: Arc<Notify>,
    /// Set when this process runs a RabbitMQ relay: `submit` hands it the jobs it committed.
    handoff: Arc<OnceLock<mpsc::UnboundedSender<HandedOff>>>,
    /// Whether enqueues are announced to other processes (`announce`): for processes that
    /// run no relay or worker of their own (scheduler, admin CLI). The server and the worker
    /// wake their own, which publishes the job; a second process racing for it only costs a
    /// lock at every commit.
    announcing: bool,
}

impl JobQueue {
    pub fn new(settings: JobSettings) -> Self {
        Self {
            settings,
            wake: Arc::new(Notify::new()),
            handoff: Arc::new(OnceLock::new()),
            announcing: false,
        }
    }

    /// From now on, jobs submitted on their own (`submit`) are handed to the receiver, this
    /// process's relay, instead of being looked for in the table. Once per queue.
    pub fn hand_off(&self) -> Option<mpsc::UnboundedReceiver<HandedOff>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.handoff.set(tx).ok().map(|()| rx)
    }

    /// A queue whose enqueues other processes hear of at once.
    pub fn announcing(mut self) -> Self {
        self.announcing = true;
        self
    }

    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// Enqueues a job that commits on its own (no change of the caller's goes with it) and
    /// sees it dispatched. With a relay in this process, the row is written already marked
    /// published and handed straight to the relay: the relay neither looks for it nor writes
    /// it again. Should the process die before the broker confirms it, the relay's sweep
    /// publishes it again after `JOB_REPUBLISH_AFTER_SECONDS`, as for any lost publication;
    /// a failed publication unmarks it at once.
    pub async fn submit(&self, db: &DatabaseConnection, job: NewJob) -> Result<Uuid, DbErr> {
        let handoff = self.handoff.get().filter(|_| job.dedupe_key.is_none());
        let Some(handoff) = handoff else {
            let id = self.enqueue(db, job).await?;
            self.wake();
            return Ok(id);
        };
        let name = job.name.clone();
        let id = Uuid::new_v4();
        let mut model = self.model(id, job);
        model.published_at = Set(Some(Utc::now()));
        job::Entity::insert(model)
            .exec_without_returning(db)
            .await?;
        if handoff.send((id, name)).is_err() {
            // The relay has stopped (shutting down): the sweep publishes it later.
            tracing::warn!(job_id = %id, "no relay to hand the job to; it waits for the next sweep");
        }
        Ok(id)
    }

    fn model(&self, id: Uuid, job: NewJob) -> job::ActiveModel {
        let now = Utc::now();
        job::ActiveModel {
            id: Set(id),
            name: Set(job.name),
            payload: Set(job.payload),
            status: Set(JobStatus::Pending.as_str().to_string()),
            attempts: Set(0),
            max_attempts: Set(self.settings.max_attempts.max(1)),
            run_at: Set(now),
            result: Set(None),
            error: Set(None),
            owner_id: Set(job.owner_id),
            dedupe_key: Set(job.dedupe_key),
            locked_by: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            started_at: Set(None),
            finished_at: Set(None),
            published_at: Set(None),
        }
    }

    /// Inserts the job on `conn` (a transaction, to commit together with the change that caused
    /// it). With a dedupe key that already exists, nothing is inserted and the existing job's id
    /// is returned.
    pub async fn enqueue(&self, conn: &impl ConnectionTrait, job: NewJob) -> Result<Uuid, DbErr> {
        let dedupe_key = job.dedupe_key.clone();
        let id = Uuid::new_v4();
        let model = self.model(id, job);
        let Some(key) = dedupe_key else {
            job::Entity::insert(model)
                .exec_without_returning(conn)
                .await?;
            self.announce_if_asked(conn).await?;
            return Ok(id);
        };
        // ON CONFLICT DO NOTHING keeps a surrounding PostgreSQL transaction usable.
        let inserted = job::Entity::insert(model)
            .on_conflict(
                OnConflict::column(job::Column::DedupeKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
        if inserted == 1 {
            self.announce_if_asked(conn).await?;
            return Ok(id);
        }
        job::Entity::find()
            .filter(job::Column::DedupeKey.eq(key))
            .one(conn)
            .await?
            .map(|j| j.id)
            .ok_or_else(|| DbErr::RecordNotFound("deduplicated job vanished".into()))
    }

    /// Announces an inserted job. After the insert, not before: outside a transaction the
    /// `NOTIFY` goes out at once, and a relay woken before the row exists would find nothing.
    async fn announce_if_asked(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        if self.announcing {
            announce(conn).await?;
        }
        Ok(())
    }

    /// Sees committed jobs dispatched: wakes this process's relay or in-process worker and,
    /// for a process that runs neither (scheduler, admin CLI), announces them to the others.
    pub async fn dispatch(&self, db: &DatabaseConnection) -> Result<(), DbErr> {
        self.wake();
        self.announce_if_asked(db).await
    }

    /// Tells this process's dispatcher that jobs are waiting; call after committing.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// What a handler gets to work with.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    pub name: String,
    pub payload: Value,
    /// 1 for the first run.
    pub attempt: i32,
    pub max_attempts: i32,
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
