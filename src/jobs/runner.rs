//! Runs jobs: claim them, execute their handlers, store the outcomes. Both transports call this,
//! so the status rules, retries and cancellation are the same whatever delivered the job.
//!
//! Under load the database work is shared between jobs: claims arrive as batches (one UPDATE …
//! RETURNING for every job a transport hands over at once), successful outcomes are written by
//! one task for whatever has finished meanwhile (one UPDATE … FROM VALUES), and one query per
//! interval asks which of this worker's running jobs were cancelled. At low load each batch
//! holds one job and nothing waits for company.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, Value as DbValue,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::attempt::{Outcome, attempt_span, record_outcome};
use super::limits;
use super::watch::{Progress, lock, revoked_among, watch_cancellations, write_progress};
use super::{JobContext, JobError, JobSettings, JobStatus, Queue, Registry};
use crate::entities::job::{self, Model as Row};

/// Outcomes written by one statement at most.
const OUTCOMES_PER_BATCH: usize = 256;
/// The error of a job whose worker died during its last attempt.
const ABANDONED: &str =
    "its worker stopped (killed or crashed) during the last attempt; no attempts left";

enum Ran {
    Done(Result<Value, JobError>),
    Cancelled,
}

/// A finished run waiting to be stored, and who waits for the answer.
type Finished = (
    Row,
    Ran,
    Option<Value>,
    oneshot::Sender<Result<Outcome, String>>,
);

pub struct Runner {
    pub(super) db: DatabaseConnection,
    registry: Registry,
    pub(super) settings: JobSettings,
    pub(super) worker_id: String,
    /// The jobs this runner is executing, and how to interrupt each.
    running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    /// The latest progress each running job reported since the last write.
    progress: Arc<Mutex<HashMap<Uuid, Value>>>,
    /// Feeds the task that stores outcomes; started on first use.
    outcomes: OnceLock<mpsc::UnboundedSender<Finished>>,
    /// Stops the outcome and cancellation tasks when the runner goes.
    stop: CancellationToken,
    /// Woken when a retry is scheduled: this process's relay or in-process worker must look
    /// again when it falls due.
    pub(super) wake: Option<Arc<Notify>>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Runner {
    pub fn new(
        db: DatabaseConnection,
        registry: Registry,
        settings: JobSettings,
        worker_id: String,
    ) -> Self {
        Self {
            db,
            registry,
            settings,
            worker_id,
            running: Arc::new(Mutex::new(HashMap::new())),
            progress: Arc::new(Mutex::new(HashMap::new())),
            outcomes: OnceLock::new(),
            stop: CancellationToken::new(),
            wake: None,
        }
    }

    /// Wakes `wake` whenever a retry is scheduled.
    pub fn waking(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Claims and runs the job when it is PENDING or RETRY.
    pub async fn run(&self, job_id: Uuid) -> Result<Outcome, DbErr> {
        self.run_claiming(job_id, false).await
    }

    /// Like `run`; `takeover` also claims a job left STARTED by a worker that died (the broker
    /// redelivered its message, so that worker's channel is gone).
    pub async fn run_claiming(&self, job_id: Uuid, takeover: bool) -> Result<Outcome, DbErr> {
        match self.claim(&[job_id], takeover).await?.rows.pop() {
            Some(row) => self.execute(row).await,
            None => Ok(Outcome::Skipped),
        }
    }

    /// Fails the STARTED jobs `which` selects that have no attempts left: their worker died
    /// during the last attempt (the broker redelivered the message, or an in-process worker
    /// stopped beating), and running them again would only kill the next worker too. Their
    /// payloads lose their secrets, as at any end. Returns the ids it failed.
    pub async fn fail_abandoned(&self, which: Condition) -> Result<Vec<Uuid>, DbErr> {
        let failed = fail_abandoned(&self.db, which).await?;
        for row in &failed {
            tracing::error!(job_id = %row.id, job = %row.name, attempts = row.attempts, "{ABANDONED}");
            self.scrub(row).await?;
        }
        Ok(failed.into_iter().map(|r| r.id).collect())
    }

    /// Drops the secrets of a job that ended without its handler finishing.
    async fn scrub(&self, row: &Row) -> Result<(), DbErr> {
        let Some(payload) = self
            .registry
            .get(&row.name)
            .and_then(|h| h.scrubbed(&row.payload))
        else {
            return Ok(());
        };
        job::Entity::update_many()
            .col_expr(job::Column::Payload, Expr::value(payload))
            .filter(job::Column::Id.eq(row.id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Runs a claimed job's handler, within the job timeout and until it is cancelled, and
    /// stores its outcome.
    pub(crate) async fn execute(&self, row: Row) -> Result<Outcome, DbErr> {
        self.execute_in(row, None).await
    }

    /// Like `execute`, in a worker's `slot`, which is given back as soon as the handler
    /// returns: storing the outcome (in a batch with others) takes no slot.
    pub(crate) async fn execute_in(
        &self,
        row: Row,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Outcome, DbErr> {
        let (span, request) = attempt_span(&row);
        let attempt = crate::telemetry::REQUEST_ID.scope(request, self.attempt(row, slot));
        let outcome = tracing::Instrument::instrument(attempt, span.clone()).await;
        record_outcome(&span, &outcome);
        outcome
    }

    async fn attempt(
        &self,
        row: Row,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Outcome, DbErr> {
        let started = Instant::now();
        // Starts the outcome and cancellation tasks with the first job.
        let outcomes = self.outcome_task().clone();
        let handler = self.registry.get(&row.name).cloned();
        let cancel = self.stop.child_token();
        lock(&self.running).insert(row.id, cancel.clone());
        let ran = match &handler {
            None => Ran::Done(Err(JobError::fatal(format!(
                "no handler is registered for job `{}`",
                row.name
            )))),
            Some(handler) => {
                let ctx = JobContext {
                    job_id: row.id,
                    name: row.name.clone(),
                    payload: row.payload.clone(),
                    attempt: row.attempts,
                    max_attempts: row.max_attempts,
                    progress: Progress {
                        job: row.id,
                        reports: Some(self.progress.clone()),
                    },
                };
                // The kind's own limit where it declares one (`Job::TIMEOUT`).
                let limit = self.settings.timeout_of(&row.name);
                let work = tokio::time::timeout(limit, (handler.run)(ctx));
                tokio::select! {
                    result = work => Ran::Done(result.unwrap_or_else(|_| {
                        Err(JobError::retry(format!("timed out after {limit:?}")))
                    })),
                    () = cancel.cancelled() => Ran::Cancelled,
                }
            }
        };
        lock(&self.running).remove(&row.id);
        lock(&self.progress).remove(&row.id);
        drop(slot);
        let scrubbed = handler.as_ref().and_then(|h| h.scrubbed(&row.payload));
        let (id, name, attempt) = (row.id, row.name.clone(), row.attempts);
        let (reply, answer) = oneshot::channel();
        // If the task is gone, the refused outcome drops `reply` and `answer` ends at once.
        let _ = outcomes.send((row, ran, scrubbed, reply));
        let outcome = answer
            .await
            .unwrap_or_else(|_| Err("the outcome task stopped".into()))
            .map_err(DbErr::Custom)?;
        let secs = started.elapsed().as_secs_f64();
        crate::metrics::metrics().observe_job(&name, outcome.as_str(), secs);
        tracing::info!(
            job_id = %id,
            job = %name,
            attempt,
            outcome = outcome.as_str(),
            duration_ms = secs * 1000.0,
            "job finished"
        );
        Ok(outcome)
    }

    fn outcome_task(&self) -> &mpsc::UnboundedSender<Finished> {
        self.outcomes.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let store = Outcomes {
                db: self.db.clone(),
                settings: self.settings.clone(),
                worker_id: self.worker_id.clone(),
                wake: self.wake.clone(),
            };
            tokio::spawn(store.run(rx, self.stop.clone()));
            tokio::spawn(watch_cancellations(
                self.db.clone(),
                self.running.clone(),
                self.settings.cancel_poll,
                self.stop.clone(),
            ));
            tokio::spawn(write_progress(
                self.db.clone(),
                self.worker_id.clone(),
                self.progress.clone(),
                self.stop.clone(),
            ));
            tx
        })
    }
}

/// Marks FAILURE the STARTED jobs `which` selects that have no attempts left, and returns them.
async fn fail_abandoned(db: &DatabaseConnection, which: Condition) -> Result<Vec<Row>, DbErr> {
    let now = Utc::now();
    job::Entity::update_many()
        .col_expr(
            job::Column::Status,
            Expr::value(JobStatus::Failure.as_str()),
        )
        .col_expr(job::Column::Error, Expr::value(ABANDONED))
        .col_expr(job::Column::FinishedAt, Expr::value(now))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .filter(which)
        .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
        .filter(Expr::col(job::Column::Attempts).gte(Expr::col(job::Column::MaxAttempts)))
        .exec_with_returning(db)
        .await
}

/// Stores finished runs, as many at once as have finished.
struct Outcomes {
    db: DatabaseConnection,
    settings: JobSettings,
    worker_id: String,
    wake: Option<Arc<Notify>>,
}

impl Outcomes {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Finished>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(OUTCOMES_PER_BATCH);
        loop {
            let got = tokio::select! {
                () = stop.cancelled() => 0,
                n = rx.recv_many(&mut batch, OUTCOMES_PER_BATCH) => n,
            };
            if got == 0 {
                return;
            }
            // Where the finished jobs free a place a limit holds others back for.
            let finished: Vec<(Queue, Option<String>)> = batch
                .iter()
                .filter(|(row, ..)| {
                    row.concurrency_key.is_some()
                        || Queue::parse(&row.queue)
                            .is_some_and(|q| self.settings.limits.of(q).concurrency.is_some())
                })
                .map(|(row, ..)| {
                    (
                        Queue::parse(&row.queue).unwrap_or(Queue::Default),
                        row.concurrency_key.clone(),
                    )
                })
                .collect();
            let (successes, others): (Vec<_>, Vec<_>) = batch
                .drain(..)
                .partition(|(_, ran, _, _)| matches!(ran, Ran::Done(Ok(_))));
            if !successes.is_empty() {
                let stored = self.store_successes(&successes).await;
                for (row, _, _, reply) in successes {
                    let _ = reply.send(match &stored {
                        Ok(outcomes) => {
                            Ok(outcomes.get(&row.id).copied().unwrap_or(Outcome::Skipped))
                        }
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
            for (row, ran, scrubbed, reply) in others {
                let _ = reply.send(
                    self.store_one(&row, ran, scrubbed)
                        .await
                        .map_err(|e| e.to_string()),
                );
            }
            if !finished.is_empty() {
                match limits::hand_on(&self.db, &self.settings.limits, &finished).await {
                    Ok(true) => {
                        if let Some(wake) = &self.wake {
                            wake.notify_one();
                        }
                    }
                    Ok(false) => {}
                    // The held jobs are looked at again within seconds anyway.
                    Err(e) => tracing::warn!(error = %e, "could not hand finished jobs' places on"),
                }
            }
        }
    }

    /// One statement for every success: each row still STARTED by this worker becomes
    /// SUCCESS with its result (and its payload scrubbed where that applies). A row it no
    /// longer holds was cancelled (REVOKED) or taken over (skipped).
    async fn store_successes(&self, batch: &[Finished]) -> Result<HashMap<Uuid, Outcome>, DbErr> {
        let backend = self.db.get_database_backend();
        let now = Utc::now();
        let mut values: Vec<DbValue> = vec![now.into(), self.worker_id.clone().into()];
        let mut rows = Vec::with_capacity(batch.len());
        for (row, ran, scrubbed, _) in batch {
            let Ran::Done(Ok(result)) = ran else { continue };
            let n = values.len();
            rows.push(format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            values.push(row.id.into());
            values.push(DbValue::Json(Some(Box::new(result.clone()))));
            values.push(DbValue::Json(scrubbed.clone().map(Box::new)));
        }
        // sqlx sends JSON parameters as PostgreSQL's jsonb; the columns are json.
        let json = if backend == DbBackend::Postgres {
            "::json"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE jobs SET status = 'SUCCESS', result = v.column2{json}, error = NULL, \
             finished_at = $1, updated_at = $1, locked_by = NULL, \
             payload = COALESCE(v.column3{json}, jobs.payload) \
             FROM (VALUES {}) AS v \
             WHERE jobs.id = v.column1 AND jobs.status = 'STARTED' AND jobs.locked_by = $2 \
             RETURNING jobs.id",
            rows.join(", ")
        );
        let stored: Vec<Uuid> = self
            .db
            .query_all_raw(crate::db::numbered_statement(backend, &sql, values))
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<Uuid>(0))
            .collect::<Result<_, _>>()?;
        let mut outcomes: HashMap<Uuid, Outcome> = stored
            .into_iter()
            .map(|id| (id, Outcome::Succeeded))
            .collect();
        let lost: Vec<Uuid> = batch
            .iter()
            .map(|(row, ..)| row.id)
            .filter(|id| !outcomes.contains_key(id))
            .collect();
        if !lost.is_empty() {
            let revoked = revoked_among(&self.db, lost.clone()).await?;
            for id in lost {
                let outcome = if revoked.contains(&id) {
                    Outcome::Revoked
                } else {
                    Outcome::Skipped
                };
                outcomes.insert(id, outcome);
            }
        }
        Ok(outcomes)
    }

    /// Stores a failure or a cancellation, but only while this worker still holds the job: a
    /// worker that lost its claim (cancelled, or taken over after a redelivery) writes nothing.
    async fn store_one(
        &self,
        row: &Row,
        ran: Ran,
        scrubbed: Option<Value>,
    ) -> Result<Outcome, DbErr> {
        let now = Utc::now();
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::UpdatedAt, Expr::value(now))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None));
        let outcome = match ran {
            Ran::Cancelled => return Ok(Outcome::Revoked),
            Ran::Done(Ok(result)) => {
                update = update
                    .col_expr(
                        job::Column::Status,
                        Expr::value(JobStatus::Success.as_str()),
                    )
                    .col_expr(job::Column::Result, Expr::value(result))
                    .col_expr(job::Column::Error, Expr::value(Option::<String>::None))
                    .col_expr(job::Column::FinishedAt, Expr::value(now));
                Outcome::Succeeded
            }
            Ran::Done(Err(e)) if e.retryable && row.attempts < row.max_attempts => {
                let run_at = now + self.settings.backoff(row.attempts);
                update = update
                    .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
                    .col_expr(job::Column::Error, Expr::value(e.message))
                    .col_expr(job::Column::RunAt, Expr::value(run_at))
                    .col_expr(
                        job::Column::PublishedAt,
                        Expr::value(Option::<chrono::DateTime<Utc>>::None),
                    );
                Outcome::WillRetry
            }
            Ran::Done(Err(e)) => {
                update = update
                    .col_expr(
                        job::Column::Status,
                        Expr::value(JobStatus::Failure.as_str()),
                    )
                    .col_expr(job::Column::Error, Expr::value(e.message))
                    .col_expr(job::Column::FinishedAt, Expr::value(now));
                Outcome::Failed
            }
        };
        if let (Some(payload), Outcome::Succeeded | Outcome::Failed) = (scrubbed, outcome) {
            update = update.col_expr(job::Column::Payload, Expr::value(payload));
        }
        let written = update
            .filter(job::Column::Id.eq(row.id))
            .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
            .filter(job::Column::LockedBy.eq(self.worker_id.clone()))
            .exec(&self.db)
            .await?;
        if written.rows_affected == 1 {
            if let (Outcome::WillRetry, Some(wake)) = (outcome, &self.wake) {
                wake.notify_one();
            }
            return Ok(outcome);
        }
        Ok(if revoked_among(&self.db, vec![row.id]).await?.is_empty() {
            Outcome::Skipped
        } else {
            Outcome::Revoked
        })
    }
}
