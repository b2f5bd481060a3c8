//! The producer side of the outbox: the jobs table is the queue of record. Enqueues commit with
//! the change that causes them; a process's relay (or in-process worker) is woken at once, and
//! other processes hear of them through PostgreSQL `NOTIFY`.

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    Set, sea_query::OnConflict,
};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::{JobSettings, JobStatus};
use crate::entities::job;

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
                () = tokio::time::sleep(super::rabbit::backoff(failures.max(1))) => {}
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
            status: Set(JobStatus::Pending),
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
