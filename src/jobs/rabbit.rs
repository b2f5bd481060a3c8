//! The RabbitMQ transport (lapin): a relay that publishes outbox rows with publisher confirms,
//! and the worker's consumer.
//!
//! Topology: a durable queue (`RABBITMQ_QUEUE`, default `keel.jobs`) whose rejected messages are
//! dead-lettered to `<queue>.dead`. A message carries only the job id; the row is the truth.
//! Retries are scheduled in the table (`run_at`) and published again by the relay when due.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder,
    sea_query::{Expr, OnConflict},
};
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Outcome, Runner};
use crate::entities::{job, worker_heartbeat};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// The relay's safety-net poll: everything else wakes it at once.
const RELAY_POLL: Duration = Duration::from_secs(5);
const RELAY_BATCH: u64 = 500;
/// Deliveries a worker holds per job it may run at once (Celery's prefetch multiplier).
const PREFETCH_PER_JOB: usize = 4;
/// Deliveries claimed by one statement at most.
const CLAIMS_PER_BATCH: usize = 256;
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A worker whose heartbeat is older than this is not counted as alive.
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct RabbitConfig {
    pub url: String,
    pub queue: String,
    /// A published-but-unstarted job older than this is published again (covers a relay that
    /// died between marking a row and publishing it); duplicates are skipped by the runner.
    pub republish_after: Duration,
}

impl RabbitConfig {
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.queue)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("the RabbitMQ consumer was cancelled or its channel closed")]
    ConsumerEnded,
}

async fn with_timeout<T>(
    d: Duration,
    f: impl Future<Output = lapin::Result<T>>,
) -> Result<T, RabbitError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(RabbitError::Timeout(d)),
    }
}

/// Connects and declares the topology; idempotent.
pub async fn connect(config: &RabbitConfig) -> Result<(Connection, Channel), RabbitError> {
    let conn = with_timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, ConnectionProperties::default()),
    )
    .await?;
    let channel = with_timeout(CONNECT_TIMEOUT, conn.create_channel()).await?;
    declare(&channel, config).await?;
    Ok((conn, channel))
}

async fn declare(channel: &Channel, config: &RabbitConfig) -> Result<(), RabbitError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    with_timeout(
        CONNECT_TIMEOUT,
        channel.queue_declare(
            config.dead_letter_queue().as_str().into(),
            durable,
            FieldTable::default(),
        ),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(config.dead_letter_queue().as_str().into()),
    );
    with_timeout(
        CONNECT_TIMEOUT,
        channel.queue_declare(config.queue.as_str().into(), durable, args),
    )
    .await?;
    Ok(())
}

/// Publishes job ids with publisher confirms over one lazily (re)opened connection.
pub struct Publisher {
    config: RabbitConfig,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(config: RabbitConfig) -> Self {
        Self {
            config,
            link: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, RabbitError> {
        let mut link = self.link.lock().await;
        if let Some((conn, channel)) = link.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *link = None;
        let (conn, channel) = connect(&self.config).await?;
        with_timeout(
            CONNECT_TIMEOUT,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        *link = Some((conn, channel.clone()));
        Ok(channel)
    }

    /// Publishes one persistent message per job, all of them before waiting for any confirm,
    /// then waits for every confirm. On failure, says how many of the jobs (from the start of
    /// the list) are known confirmed; the rest must be published again.
    pub async fn publish_all(&self, jobs: &[(Uuid, String)]) -> Result<(), (usize, RabbitError)> {
        let result = self.publish_batch(jobs).await;
        if result.is_err() {
            // The next call reconnects.
            *self.link.lock().await = None;
        }
        result
    }

    async fn publish_batch(&self, jobs: &[(Uuid, String)]) -> Result<(), (usize, RabbitError)> {
        let channel = self.channel().await.map_err(|e| (0, e))?;
        let mut confirms = Vec::with_capacity(jobs.len());
        for (job_id, name) in jobs {
            let id = job_id.to_string();
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("text/plain".into())
                .with_message_id(id.as_str().into())
                .with_type(name.as_str().into());
            let confirm = with_timeout(
                CONFIRM_TIMEOUT,
                channel.basic_publish(
                    "".into(),
                    self.config.queue.as_str().into(),
                    BasicPublishOptions::default(),
                    id.as_bytes(),
                    properties,
                ),
            )
            .await
            .map_err(|e| (0, e))?;
            confirms.push(confirm);
        }
        // Confirms arrive in order; one timeout covers the whole batch.
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        for (done, confirm) in confirms.into_iter().enumerate() {
            let confirmation = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err((done, e.into())),
                Err(_) => return Err((done, RabbitError::Timeout(CONFIRM_TIMEOUT))),
            };
            if confirmation.is_nack() {
                return Err((done, RabbitError::Nacked));
            }
        }
        Ok(())
    }

    /// For health checks: a round trip to the broker (a passive declare of the job queue).
    pub async fn check(&self) -> Result<(), RabbitError> {
        let passive = QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        };
        let result = async {
            let channel = self.channel().await?;
            with_timeout(
                CONNECT_TIMEOUT,
                channel.queue_declare(
                    self.config.queue.as_str().into(),
                    passive,
                    FieldTable::default(),
                ),
            )
            .await
            .map(|_| ())
        }
        .await;
        if result.is_err() {
            *self.link.lock().await = None;
        }
        result
    }
}

/// Publishes due outbox rows until `shutdown`: new jobs, retries whose time has come, and rows
/// whose earlier publication was never confirmed. Rows are claimed (marked published) in
/// batches by one statement, so several relays never publish one row at once, and are unmarked
/// when their publication fails.
///
/// It sleeps until woken: by this process's enqueues (`wake`), by other processes' through
/// PostgreSQL `NOTIFY` (`listen`), or when the next scheduled retry falls due; a slow poll is
/// only the safety net. Jobs this process submitted on their own arrive through `handoff`
/// already marked, and are published as they come, in batches, without a query.
pub async fn relay(
    db: DatabaseConnection,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
    mut handoff: Option<mpsc::UnboundedReceiver<super::HandedOff>>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut last_sweep = Instant::now();
    // When the table is next looked at: at once, then as each look decides.
    let mut look_at = tokio::time::Instant::now();
    let mut handed = Vec::with_capacity(RELAY_BATCH as usize);
    loop {
        let look = tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => true,
            () = tokio::time::sleep_until(look_at) => true,
            n = async {
                match handoff.as_mut() {
                    Some(rx) => rx.recv_many(&mut handed, RELAY_BATCH as usize).await,
                    None => std::future::pending().await,
                }
            } => {
                if n == 0 {
                    handoff = None;
                }
                false
            }
        };
        if !look {
            let jobs = std::mem::take(&mut handed);
            if let Err(e) = publish_handed(&db, &publisher, &jobs, failures == 0).await {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, "outbox relay cannot publish; jobs stay queued in the database");
                }
                look_at = tokio::time::Instant::now() + backoff(failures);
            }
            handed = jobs;
            handed.clear();
            continue;
        }
        // Rows published long ago and never started (a relay that died between marking and
        // publishing, a message lost with a broker) are looked for on the slow poll only.
        let sweep = last_sweep.elapsed() >= RELAY_POLL;
        if sweep {
            last_sweep = Instant::now();
        }
        let published = match relay_once(&db, &publisher, sweep).await {
            Ok(n) => {
                if failures > 0 {
                    tracing::info!("RabbitMQ reachable again; outbox relay resumed");
                }
                failures = 0;
                n
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::warn!(error = %e, "outbox relay cannot publish; jobs stay queued in the database");
                }
                0
            }
        };
        let pause = if published as u64 >= RELAY_BATCH {
            Duration::ZERO
        } else if failures == 0 {
            next_due_in(&db).await.unwrap_or(RELAY_POLL).min(RELAY_POLL)
        } else {
            backoff(failures)
        };
        look_at = tokio::time::Instant::now() + pause;
    }
}

/// Publishes jobs handed over by `JobQueue::submit`. While the broker is failing they are not
/// tried one by one: they are unmarked, and the relay's next look publishes them.
async fn publish_handed(
    db: &DatabaseConnection,
    publisher: &Publisher,
    jobs: &[super::HandedOff],
    broker_healthy: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !broker_healthy {
        unmark(db, jobs).await?;
        return Ok(());
    }
    match publisher.publish_all(jobs).await {
        Ok(()) => Ok(()),
        Err((confirmed, e)) => {
            unmark(db, &jobs[confirmed..]).await?;
            Err(Box::new(e))
        }
    }
}

/// Makes jobs whose publication was not confirmed unpublished again, for the relay to retry.
/// A copy that did reach the broker is skipped by the runner.
async fn unmark(db: &DatabaseConnection, jobs: &[super::HandedOff]) -> Result<(), sea_orm::DbErr> {
    if jobs.is_empty() {
        return Ok(());
    }
    job::Entity::update_many()
        .col_expr(
            job::Column::PublishedAt,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(job::Column::Id.is_in(jobs.iter().map(|(id, _)| *id)))
        .exec(db)
        .await?;
    Ok(())
}

/// How long until the earliest unpublished job (a retry, usually) falls due; `None` when none
/// waits.
async fn next_due_in(db: &DatabaseConnection) -> Option<Duration> {
    // Literal statuses, as in the partial index `idx_jobs_waiting`, so the planner can use it.
    let sql = "SELECT run_at FROM jobs WHERE status IN ('PENDING', 'RETRY') \
               AND published_at IS NULL ORDER BY run_at LIMIT 1";
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            sql,
        ))
        .await
        .ok()
        .flatten()?;
    let at: chrono::DateTime<Utc> = row.try_get_by_index(0).ok()?;
    Some((at - Utc::now()).to_std().unwrap_or_default())
}

/// Capped exponential backoff with jitter for reconnect loops.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(failures.min(7)));
    base.min(Duration::from_secs(15))
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// Marks up to `RELAY_BATCH` due rows published, in one statement, and returns them. With
/// `stale`, the rows are those published before `republish_after` and still waiting instead of
/// those never published. PostgreSQL skips rows another relay is marking (`SKIP LOCKED`).
async fn claim_for_publishing(
    db: &DatabaseConnection,
    republish_after: Duration,
    stale: bool,
) -> Result<Vec<(Uuid, String)>, sea_orm::DbErr> {
    let backend = db.get_database_backend();
    let now = Utc::now();
    let published = if stale {
        "published_at < $2"
    } else {
        "published_at IS NULL"
    };
    let lock = if backend == DbBackend::Postgres {
        "FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE jobs SET published_at = $1 WHERE {published} AND id IN (\
         SELECT id FROM jobs WHERE {published} AND status IN ('PENDING', 'RETRY') \
         AND run_at <= $1 ORDER BY run_at LIMIT {RELAY_BATCH} {lock}) RETURNING id, name"
    );
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    if stale {
        values.push((now - republish_after).into());
    }
    db.query_all_raw(crate::db::numbered_statement(backend, &sql, values))
        .await?
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect()
}

async fn relay_once(
    db: &DatabaseConnection,
    publisher: &Publisher,
    sweep: bool,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut due = claim_for_publishing(db, publisher.config.republish_after, false).await?;
    if sweep && (due.len() as u64) < RELAY_BATCH {
        due.extend(claim_for_publishing(db, publisher.config.republish_after, true).await?);
    }
    if due.is_empty() {
        return Ok(0);
    }
    match publisher.publish_all(&due).await {
        Ok(()) => Ok(due.len()),
        Err((confirmed, e)) => {
            unmark(db, &due[confirmed..]).await?;
            Err(Box::new(e))
        }
    }
}

/// Records that this worker is alive; `/system/health` reads it.
pub async fn heartbeat(
    db: &DatabaseConnection,
    worker_id: &str,
    started_at: chrono::DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let row = worker_heartbeat::ActiveModel {
        worker_id: sea_orm::Set(worker_id.to_string()),
        hostname: sea_orm::Set(super::hostname()),
        pid: sea_orm::Set(std::process::id() as i32),
        started_at: sea_orm::Set(started_at),
        last_seen: sea_orm::Set(Utc::now()),
    };
    worker_heartbeat::Entity::insert(row)
        .on_conflict(
            OnConflict::column(worker_heartbeat::Column::WorkerId)
                .update_column(worker_heartbeat::Column::LastSeen)
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The worker: consumes until `shutdown`, reconnecting after broker restarts or dropped
/// connections. On shutdown it stops taking deliveries and waits up to `grace` for running jobs.
pub async fn consume(
    runner: Arc<Runner>,
    config: RabbitConfig,
    concurrency: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let started_at = Utc::now();
    let beat = {
        let (db, id, stop) = (
            runner.db().clone(),
            runner.worker_id().to_string(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                if let Err(e) = heartbeat(&db, &id, started_at).await {
                    tracing::warn!(error = %e, "heartbeat write failed");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                }
            }
        })
    };
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        match consume_connection(&runner, &config, concurrency, &permits, &shutdown, grace).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, attempt = failures, "RabbitMQ connection lost or unavailable; reconnecting");
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(backoff(failures)) => {}
        }
    }
    beat.abort();
}

/// One connection's life: returns Ok on shutdown, Err when the connection or consumer ends.
///
/// Deliveries flow through three stages: a delivery takes a permit (at most `concurrency` jobs
/// are in hand at once), the claim stage claims every delivery waiting at that moment with one
/// statement, and each claimed job runs on its own task, its outcome stored with the others
/// that finished meanwhile (`Runner::execute`), then acknowledged.
async fn consume_connection(
    runner: &Arc<Runner>,
    config: &RabbitConfig,
    concurrency: usize,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<(), RabbitError> {
    let (conn, channel) = connect(config).await?;
    // Prefetch beyond the running jobs keeps deliveries waiting in this process, not a round
    // trip away, as a job finishes.
    let prefetch = u16::try_from(concurrency.saturating_mul(PREFETCH_PER_JOB))
        .unwrap_or(u16::MAX)
        .max(1);
    with_timeout(
        CONNECT_TIMEOUT,
        channel.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await?;
    let tag = runner.worker_id().to_string();
    let mut consumer = with_timeout(
        CONNECT_TIMEOUT,
        channel.basic_consume(
            config.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    tracing::info!(queue = %config.queue, prefetch, "worker consuming");
    let (to_claim, claims) = mpsc::unbounded_channel();
    let claimer = tokio::spawn(claim_deliveries(runner.clone(), claims));
    let outcome = loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => {
                // Stop taking new deliveries; unacked ones in flight finish below.
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                drop(to_claim);
                let all = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
                if tokio::time::timeout(grace, permits.acquire_many(all)).await.is_err() {
                    tracing::warn!("jobs still running at the shutdown deadline; the broker will redeliver them");
                }
                let _ = conn.close(200, "worker shutting down".into()).await;
                break Ok(());
            }
            next = consumer.next() => next,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(RabbitError::ConsumerEnded),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        if to_claim.send((delivery, permit)).is_err() {
            break Err(RabbitError::ConsumerEnded);
        }
    };
    claimer.abort();
    outcome
}

/// A delivery with the permit it holds until it is acknowledged.
type InHand = (lapin::message::Delivery, tokio::sync::OwnedSemaphorePermit);

/// Claims the waiting deliveries' jobs, a batch at a time, and starts each claimed one.
async fn claim_deliveries(runner: Arc<Runner>, mut deliveries: mpsc::UnboundedReceiver<InHand>) {
    let mut batch = Vec::with_capacity(CLAIMS_PER_BATCH);
    while deliveries.recv_many(&mut batch, CLAIMS_PER_BATCH).await > 0 {
        // A redelivered message may belong to a worker that died mid-job: its row is STARTED,
        // and may be taken over. Fresh ones never are.
        for takeover in [false, true] {
            let mut mine: HashMap<Uuid, InHand> = HashMap::new();
            for (delivery, permit) in batch.extract_if(.., |(d, _)| d.redelivered == takeover) {
                let id = std::str::from_utf8(&delivery.data)
                    .ok()
                    .and_then(|s| Uuid::parse_str(s.trim()).ok());
                match id {
                    Some(id) => {
                        mine.insert(id, (delivery, permit));
                    }
                    None => {
                        tracing::error!("message without a job id; dead-lettering it");
                        tokio::spawn(settle(delivery, Ok(Outcome::Failed), permit));
                    }
                }
            }
            let ids: Vec<Uuid> = mine.keys().copied().collect();
            match runner.claim(&ids, takeover).await {
                Ok(rows) => {
                    for row in rows {
                        let Some((delivery, permit)) = mine.remove(&row.id) else {
                            continue;
                        };
                        let runner = runner.clone();
                        tokio::spawn(async move {
                            let outcome = runner.execute(row).await;
                            settle(delivery, outcome, permit).await;
                        });
                    }
                    // Finished, cancelled, or another worker's: nothing to run.
                    for (delivery, permit) in mine.into_values() {
                        tokio::spawn(settle(delivery, Ok(Outcome::Skipped), permit));
                    }
                }
                Err(e) => {
                    for (delivery, permit) in mine.into_values() {
                        tokio::spawn(settle(delivery, Err(e.clone()), permit));
                    }
                }
            }
        }
    }
}

/// Acknowledges a delivery once its outcome is stored: a job that failed for good goes to the
/// dead letters, and a database failure leaves the message to be delivered again.
async fn settle(
    delivery: lapin::message::Delivery,
    outcome: Result<Outcome, sea_orm::DbErr>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let ack = match outcome {
        Ok(Outcome::Failed) => delivery
            .nack(BasicNackOptions {
                requeue: false,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        Ok(_) => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Err(e) => {
            tracing::error!(error = %e, "could not store a job outcome; requeueing the message");
            tokio::time::sleep(Duration::from_secs(1)).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = ack {
        tracing::warn!(error = %e, "acknowledgement lost; the broker will redeliver the message");
    }
    drop(permit);
}

/// The time of the freshest worker heartbeat, if any.
pub async fn last_heartbeat(
    db: &DatabaseConnection,
) -> Result<Option<chrono::DateTime<Utc>>, sea_orm::DbErr> {
    Ok(worker_heartbeat::Entity::find()
        .order_by_desc(worker_heartbeat::Column::LastSeen)
        .one(db)
        .await?
        .map(|h| h.last_seen))
}
