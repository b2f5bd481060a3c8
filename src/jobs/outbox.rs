//! The producer side of the outbox: the jobs table is the queue of record. Enqueues commit with
//! the change that causes them; a process's relay (or in-process worker) is woken at once, and
//! other processes hear of them through PostgreSQL `NOTIFY`.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    Set,
    sea_query::{Expr, OnConflict},
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

pub use super::together::{Publication, Submitted};
use super::together::{Together, Writer, hand_over};
use super::{Job, JobSettings, JobStatus};
use crate::entities::job;
use crate::queues::{MAX_PRIORITY, Queue};

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub payload: Value,
    pub owner_id: Option<Uuid>,
    /// Set once for ever: a second job with this key is never made (the scheduler's firings).
    pub dedupe_key: Option<String>,
    /// Where the kind's declaration does not decide: the queue of its kind otherwise.
    pub queue: Option<Queue>,
    /// 0 to 9, 9 first; the kind's own otherwise.
    pub priority: Option<u8>,
    /// Not started before this; `None`: now.
    pub run_at: Option<DateTime<Utc>>,
    /// While a job of this name and key is unfinished, submitting again gives that job.
    pub unique_key: Option<String>,
    /// At most `JOB_KEY_CONCURRENCY` jobs with this key run at once.
    pub concurrency_key: Option<String>,
}

/// The partial unique index `idx_jobs_unique_active` (migration 9): its predicate, spelled the
/// same way, lets an insert name it as the conflict to ignore.
const UNFINISHED_UNIQUE: &str =
    "unique_key IS NOT NULL AND status IN ('PENDING', 'STARTED', 'RETRY')";

impl NewJob {
    /// The job that carries `payload`, with its kind's queue, priority and unique key.
    pub fn of<J: Job>(payload: &J) -> Self {
        let mut job = Self::new(J::NAME, super::kind::payload_of(payload));
        job.queue = Some(J::QUEUE);
        job.priority = Some(J::PRIORITY.min(MAX_PRIORITY));
        job.unique_key = payload.unique_key();
        job.concurrency_key = payload.concurrency_key();
        job
    }

    pub fn new(name: &str, payload: Value) -> Self {
        Self {
            name: name.to_string(),
            payload,
            owner_id: None,
            dedupe_key: None,
            queue: None,
            priority: None,
            run_at: None,
            unique_key: None,
            concurrency_key: None,
        }
    }

    /// 0 to 9 (higher values are taken as 9).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority.min(MAX_PRIORITY));
        self
    }

    /// Sends it to `queue` rather than its kind's.
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Not started before `at` (a time in the past means now).
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs only while fewer than `JOB_KEY_CONCURRENCY` jobs with `key` run.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn owner(mut self, owner: Uuid) -> Self {
        self.owner_id = Some(owner);
        self
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Whether a unique or dedupe key may make its insert meet an existing job.
    fn keyed(&self) -> bool {
        self.dedupe_key.is_some() || self.unique_key.is_some()
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
                () = tokio::time::sleep(super::rabbit::backoff(failures.max(1))) => {}
            }
        }
    }))
}

/// Where a job comes from, read once when it is submitted: the request it belongs to and the
/// trace context of the span submitting it; stored with the job and carried by its message.
#[derive(Debug, Clone)]
struct Origin {
    request_id: Option<String>,
    trace_context: Option<String>,
}

impl Origin {
    fn current() -> Self {
        Self {
            request_id: crate::telemetry::current_request_id(),
            trace_context: crate::telemetry::otel::current_context(),
        }
    }
}

/// The producer side: writes jobs into the outbox table, inside the caller's transaction, and
/// wakes this process's dispatcher once the caller has committed.
#[derive(Clone)]
pub struct JobQueue {
    settings: JobSettings,
    wake: Arc<Notify>,
    /// Set when this process runs a RabbitMQ relay: `submit` hands it the jobs it committed.
    handoff: Arc<OnceLock<mpsc::UnboundedSender<Publication>>>,
    /// Whether enqueues are announced to other processes (`announce`): for processes that
    /// run no relay or worker of their own (scheduler, admin CLI). The server and the worker
    /// wake their own, which publishes the job; a second process racing for it only costs a
    /// lock at every commit.
    announcing: bool,
    /// Feeds the task that writes submissions together (`submit`); started on first use.
    together: Arc<OnceLock<mpsc::UnboundedSender<Together>>>,
}

impl JobQueue {
    pub fn new(settings: JobSettings) -> Self {
        Self {
            settings,
            wake: Arc::new(Notify::new()),
            handoff: Arc::new(OnceLock::new()),
            announcing: false,
            together: Arc::new(OnceLock::new()),
        }
    }

    /// From now on, jobs submitted on their own (`submit`) are handed to the receiver, this
    /// process's relay, instead of being looked for in the table. Once per queue.
    pub fn hand_off(&self) -> Option<mpsc::UnboundedReceiver<Publication>> {
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
    /// sees it dispatched. With a relay in this process, a job due now is written already
    /// marked published and handed straight to the relay: the relay neither looks for it nor
    /// writes it again. Should the process die before the broker confirms it, the relay's sweep
    /// publishes it again after `JOB_REPUBLISH_AFTER_SECONDS`, as for any lost publication; a
    /// failed publication unmarks it at once. A delayed job waits in the table for its time.
    ///
    /// Submissions made at the same moment (concurrent requests) are written together, one
    /// statement and one commit for all of them, each answered once that commit is done: at low
    /// load each is written alone, at once. Those with a unique or dedupe key, whose insert may
    /// meet an existing job, and those inside a sampled trace, whose statement belongs in that
    /// trace, are written on their own.
    pub async fn submit(&self, db: &DatabaseConnection, job: NewJob) -> Result<Submitted, DbErr> {
        let now = Utc::now();
        let origin = Origin::current();
        let due_now = job.run_at.is_none_or(|at| at <= now);
        let handoff = self
            .handoff
            .get()
            .filter(|_| job.dedupe_key.is_none() && due_now);
        if !job.keyed() && origin.trace_context.is_none() {
            let id = Uuid::new_v4();
            let publication = handoff.map(|_| self.publication(id, &job, &origin));
            let mut row = self.model(id, job, origin);
            if publication.is_some() {
                row.published_at = Set(Some(now));
            }
            let (reply, answer) = oneshot::channel();
            let sent = self.together(db).send(Together {
                row,
                publication,
                reply,
            });
            let stopped = || DbErr::Custom("the submission writer stopped".into());
            if sent.is_err() {
                return Err(stopped());
            }
            return answer.await.unwrap_or_else(|_| Err(stopped()));
        }
        if handoff.is_none() {
            let submitted = self.insert(db, job, None, origin).await?;
            if let Submitted::New { .. } = submitted {
                self.wake();
            }
            return Ok(submitted);
        }
        // The message's fields; its id is the row's, known once it is inserted.
        let message = self.publication(Uuid::nil(), &job, &origin);
        let submitted = self.insert(db, job, Some(now), origin).await?;
        if let Submitted::New { id, .. } = submitted {
            hand_over(&self.handoff, Publication { id, ..message });
        }
        Ok(submitted)
    }

    fn publication(&self, id: Uuid, job: &NewJob, origin: &Origin) -> Publication {
        Publication {
            id,
            name: job.name.clone(),
            queue: self.queue_of(job),
            priority: self.priority_of(job),
            request_id: origin.request_id.clone(),
            trace_context: origin.trace_context.clone(),
        }
    }

    /// The task writing submissions together, started on first use.
    fn together(&self, db: &DatabaseConnection) -> &mpsc::UnboundedSender<Together> {
        self.together
            .get_or_init(|| Writer::start(self.handoff.clone(), self.wake.clone(), db.clone()))
    }

    /// The queue and priority `job` gets: what it asks for, or its kind's.
    pub fn destination(&self, job: &NewJob) -> (Queue, u8) {
        (self.queue_of(job), self.priority_of(job))
    }

    fn queue_of(&self, job: &NewJob) -> Queue {
        job.queue
            .unwrap_or_else(|| self.settings.queue_of(&job.name))
    }

    fn priority_of(&self, job: &NewJob) -> u8 {
        job.priority
            .unwrap_or_else(|| self.settings.priority_of(&job.name))
            .min(MAX_PRIORITY)
    }

    fn model(&self, id: Uuid, job: NewJob, origin: Origin) -> job::ActiveModel {
        let now = Utc::now();
        let (queue, priority) = (self.queue_of(&job), self.priority_of(&job));
        let max_attempts = self.settings.max_attempts_of(&job.name);
        job::ActiveModel {
            id: Set(id),
            name: Set(job.name),
            payload: Set(job.payload),
            status: Set(JobStatus::Pending),
            attempts: Set(0),
            max_attempts: Set(max_attempts),
            run_at: Set(job.run_at.map_or(now, |at| at.max(now))),
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
            queue: Set(queue.as_str().to_string()),
            priority: Set(i32::from(priority)),
            unique_key: Set(job.unique_key),
            progress: Set(None),
            request_id: Set(origin.request_id),
            trace_context: Set(origin.trace_context),
            concurrency_key: Set(job.concurrency_key),
            waiting_for: Set(None),
        }
    }

    /// Inserts the job on `conn` (a transaction, to commit together with the change that caused
    /// it). With a dedupe key that already exists, or a unique key an unfinished job of its name
    /// holds, nothing is inserted and that job's id is returned.
    pub async fn enqueue(&self, conn: &impl ConnectionTrait, job: NewJob) -> Result<Uuid, DbErr> {
        Ok(self.insert(conn, job, None, Origin::current()).await?.id())
    }

    /// Inserts `jobs` on `conn` (a transaction), like `enqueue` for each: those without a
    /// unique or dedupe key in one statement, the others one by one. Their ids, in order.
    pub async fn enqueue_all(
        &self,
        conn: &impl ConnectionTrait,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Uuid>, DbErr> {
        let origin = Origin::current();
        let mut ids = Vec::with_capacity(jobs.len());
        let mut plain = Vec::new();
        for job in jobs {
            if !job.keyed() {
                let id = Uuid::new_v4();
                plain.push(self.model(id, job, origin.clone()));
                ids.push(id);
            } else {
                ids.push(self.insert(conn, job, None, origin.clone()).await?.id());
            }
        }
        if !plain.is_empty() {
            job::Entity::insert_many(plain)
                .exec_without_returning(conn)
                .await?;
            self.announce_if_asked(conn).await?;
        }
        Ok(ids)
    }

    async fn insert(
        &self,
        conn: &impl ConnectionTrait,
        job: NewJob,
        published_at: Option<DateTime<Utc>>,
        origin: Origin,
    ) -> Result<Submitted, DbErr> {
        let name = job.name.clone();
        let dedupe_key = job.dedupe_key.clone();
        let unique_key = job.unique_key.clone();
        let id = Uuid::new_v4();
        let mut model = self.model(id, job, origin);
        model.published_at = Set(published_at);
        let run_at = model.run_at.clone().unwrap();
        // ON CONFLICT DO NOTHING keeps a surrounding PostgreSQL transaction usable.
        let conflict = if dedupe_key.is_some() {
            Some(
                OnConflict::column(job::Column::DedupeKey)
                    .do_nothing()
                    .to_owned(),
            )
        } else if unique_key.is_some() {
            Some(
                OnConflict::columns([job::Column::Name, job::Column::UniqueKey])
                    .target_and_where(Expr::cust(UNFINISHED_UNIQUE))
                    .do_nothing()
                    .to_owned(),
            )
        } else {
            None
        };
        // A unique key's holder may finish between the refused insert and the look-up: then
        // the key is free and the insert is tried again.
        for _ in 0..3 {
            let mut insert = job::Entity::insert(model.clone());
            if let Some(conflict) = conflict.clone() {
                insert = insert.on_conflict(conflict);
            }
            if insert.exec_without_returning(conn).await? == 1 {
                self.announce_if_asked(conn).await?;
                return Ok(Submitted::New { id, run_at });
            }
            let holder = match (&dedupe_key, &unique_key) {
                (Some(key), _) => job::Entity::find()
                    .filter(job::Column::DedupeKey.eq(key.as_str()))
                    .one(conn)
                    .await?
                    .map(|j| j.id),
                (None, Some(key)) => job::Entity::find()
                    .filter(job::Column::Name.eq(name.as_str()))
                    .filter(job::Column::UniqueKey.eq(key.as_str()))
                    .filter(job::Column::Status.is_in([
                        JobStatus::Pending.as_str(),
                        JobStatus::Started.as_str(),
                        JobStatus::Retry.as_str(),
                    ]))
                    .one(conn)
                    .await?
                    .map(|j| j.id),
                (None, None) => None,
            };
            if let Some(existing) = holder {
                return Ok(Submitted::Duplicate { id: existing });
            }
        }
        Err(DbErr::RecordNotInserted)
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
