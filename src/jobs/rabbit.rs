//! The RabbitMQ transport (lapin): a relay that publishes outbox rows with publisher confirms,
//! and the worker's consumer.
//!
//! Topology: a durable queue (`RABBITMQ_QUEUE`, default `keel.jobs`) whose rejected messages are
//! dead-lettered to `<queue>.dead`. A message carries only the job id; the row is the truth.
//! Retries are scheduled in the table (`run_at`) and published again by the relay when due.

use std::{sync::Arc, time::Duration};

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
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{JobStatus, Outcome, Runner};
use crate::entities::{job, worker_heartbeat};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const RELAY_POLL: Duration = Duration::from_secs(1);
const RELAY_BATCH: u64 = 200;
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

    /// Publishes one persistent message and waits for the broker's confirm.
    pub async fn publish(&self, job_id: Uuid, name: &str) -> Result<(), RabbitError> {
        let result = self.publish_once(job_id, name).await;
        if result.is_err() {
            // The next call reconnects.
            *self.link.lock().await = None;
        }
        result
    }

    async fn publish_once(&self, job_id: Uuid, name: &str) -> Result<(), RabbitError> {
        let channel = self.channel().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into())
            .with_message_id(job_id.to_string().as_str().into())
            .with_type(name.into());
        let confirm = with_timeout(
            CONFIRM_TIMEOUT,
            channel.basic_publish(
                "".into(),
                self.config.queue.as_str().into(),
                BasicPublishOptions::default(),
                job_id.to_string().as_bytes(),
                properties,
            ),
        )
        .await?;
        let confirmation = with_timeout(CONFIRM_TIMEOUT, confirm).await?;
        if confirmation.is_nack() {
            return Err(RabbitError::Nacked);
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
/// whose earlier publication was never confirmed. A row is marked before it is published and
/// unmarked when publishing fails, so several relays never publish one row twice at once.
pub async fn relay(
    db: DatabaseConnection,
    publisher: Arc<Publisher>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let published = match relay_once(&db, &publisher).await {
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
        if published as u64 == RELAY_BATCH {
            continue;
        }
        let pause = if failures == 0 {
            RELAY_POLL
        } else {
            backoff(failures)
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Capped exponential backoff with jitter for reconnect loops.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(failures.min(7)));
    base.min(Duration::from_secs(15))
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

async fn relay_once(
    db: &DatabaseConnection,
    publisher: &Publisher,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let now = Utc::now();
    let stale = now - publisher.config.republish_after;
    let unpublished = Condition::any()
        .add(job::Column::PublishedAt.is_null())
        .add(job::Column::PublishedAt.lt(stale));
    let due: Vec<(Uuid, String)> = job::Entity::find()
        .select_only()
        .column(job::Column::Id)
        .column(job::Column::Name)
        .filter(job::Column::Status.is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]))
        .filter(job::Column::RunAt.lte(now))
        .filter(unpublished.clone())
        .order_by_asc(job::Column::RunAt)
        .limit(RELAY_BATCH)
        .into_tuple()
        .all(db)
        .await?;
    let mut published = 0;
    for (id, name) in due {
        let marked = job::Entity::update_many()
            .col_expr(job::Column::PublishedAt, Expr::value(Utc::now()))
            .filter(job::Column::Id.eq(id))
            .filter(unpublished.clone())
            .exec(db)
            .await?;
        if marked.rows_affected != 1 {
            continue;
        }
        if let Err(e) = publisher.publish(id, &name).await {
            job::Entity::update_many()
                .col_expr(
                    job::Column::PublishedAt,
                    Expr::value(Option::<chrono::DateTime<Utc>>::None),
                )
                .filter(job::Column::Id.eq(id))
                .exec(db)
                .await?;
            return Err(Box::new(e));
        }
        published += 1;
    }
    Ok(published)
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
async fn consume_connection(
    runner: &Arc<Runner>,
    config: &RabbitConfig,
    concurrency: usize,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Result<(), RabbitError> {
    let (conn, channel) = connect(config).await?;
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX).max(1);
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
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => {
                // Stop taking new deliveries; unacked ones in flight finish below.
                let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                let all = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
                if tokio::time::timeout(grace, permits.acquire_many(all)).await.is_err() {
                    tracing::warn!("jobs still running at the shutdown deadline; the broker will redeliver them");
                }
                let _ = conn.close(200, "worker shutting down".into()).await;
                return Ok(());
            }
            next = consumer.next() => next,
        };
        let delivery = match delivery {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(RabbitError::ConsumerEnded),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let runner = runner.clone();
        tokio::spawn(async move {
            let parsed = std::str::from_utf8(&delivery.data)
                .ok()
                .and_then(|s| Uuid::parse_str(s.trim()).ok());
            let outcome = match parsed {
                None => {
                    tracing::error!("message without a job id; dead-lettering it");
                    Ok(Outcome::Failed)
                }
                Some(id) => runner.run_claiming(id, delivery.redelivered).await,
            };
            // Acknowledge only once the outcome is stored; a database failure leaves the message
            // unacknowledged, so the broker delivers it again.
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
        });
    }
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
