//! The RabbitMQ transport (lapin): a relay that publishes outbox rows with publisher confirms,
//! and the worker's consumer.
//!
//! Topology: for each job queue (`email`, `default`, `maintenance`) three durable queues, one per
//! priority lane, `<RABBITMQ_QUEUE>.<queue>` (priorities 4–6), `.high` (7–9) and `.low` (0–3),
//! whose rejected messages are dead-lettered to `<RABBITMQ_QUEUE>.<queue>.dead`; all of the type
//! `RABBITMQ_QUEUE_TYPE` (quorum unless told otherwise). A message carries only the job id (and
//! its name and priority as properties); the row is the truth. Retries and delayed jobs are
//! scheduled in the table (`run_at`) and published by the relay when due.

mod acks;
mod consumer;
mod legacy;
mod relay;

pub use consumer::{Consuming, consume};
pub use legacy::drain_legacy_queue;
pub use relay::relay;

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::Mutex;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// The relay's safety-net poll: everything else wakes it at once.
const RELAY_POLL: Duration = Duration::from_secs(5);
const RELAY_BATCH: u64 = 500;
/// Deliveries a worker holds per job it may run at once (Celery's prefetch multiplier).
const PREFETCH_PER_JOB: usize = 4;
/// Deliveries claimed by one statement at most.
const CLAIMS_PER_BATCH: usize = 256;

use crate::{
    config::RabbitSettings,
    jobs::{Lane, Publication, Queue},
};

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
pub async fn connect(config: &RabbitSettings) -> Result<(Connection, Channel), RabbitError> {
    let conn = with_timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, ConnectionProperties::default()),
    )
    .await?;
    let channel = with_timeout(CONNECT_TIMEOUT, conn.create_channel()).await?;
    declare(&channel, config).await?;
    Ok((conn, channel))
}

async fn declare(channel: &Channel, config: &RabbitSettings) -> Result<(), RabbitError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let typed = || {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(config.queue_type.as_str().into()),
        );
        args
    };
    for queue in Queue::ALL {
        let dead = config.dead_letter_queue(queue);
        with_timeout(
            CONNECT_TIMEOUT,
            channel.queue_declare(dead.as_str().into(), durable, typed()),
        )
        .await?;
        for lane in Lane::ALL {
            let mut args = typed();
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(dead.as_str().into()),
            );
            with_timeout(
                CONNECT_TIMEOUT,
                channel.queue_declare(
                    config.lane_queue(queue, lane).as_str().into(),
                    durable,
                    args,
                ),
            )
            .await?;
        }
    }
    Ok(())
}

/// Publishes job ids with publisher confirms over one lazily (re)opened connection.
pub struct Publisher {
    config: RabbitSettings,
    link: Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(config: RabbitSettings) -> Self {
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
    pub async fn publish_all(&self, jobs: &[Publication]) -> Result<(), (usize, RabbitError)> {
        let result = self.publish_batch(jobs).await;
        if result.is_err() {
            // The next call reconnects.
            *self.link.lock().await = None;
        }
        result
    }

    async fn publish_batch(&self, jobs: &[Publication]) -> Result<(), (usize, RabbitError)> {
        let channel = self.channel().await.map_err(|e| (0, e))?;
        let mut confirms = Vec::with_capacity(jobs.len());
        // One span per traced message, ended once its confirm is in.
        let mut spans = Vec::with_capacity(jobs.len());
        for job in jobs {
            let id = job.id.to_string();
            let routing_key = self.config.lane_queue(job.queue, Lane::of(job.priority));
            let span = publish_span(job, &routing_key);
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("text/plain".into())
                .with_message_id(id.as_str().into())
                .with_type(job.name.as_str().into())
                .with_priority(job.priority)
                .with_headers(origin_headers(job, &span));
            spans.push(span);
            let confirm = with_timeout(
                CONFIRM_TIMEOUT,
                channel.basic_publish(
                    "".into(),
                    routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    id.as_bytes(),
                    properties,
                ),
            )
            .await
            .map_err(|e| (0, e))?;
            confirms.push(confirm);
        }
        let failed = |done: usize, e: RabbitError| {
            for span in &spans[done..] {
                span.record("otel.status_code", "ERROR");
            }
            (done, e)
        };
        // Confirms arrive in order; one timeout covers the whole batch.
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        for (done, confirm) in confirms.into_iter().enumerate() {
            let confirmation = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(failed(done, e.into())),
                Err(_) => return Err(failed(done, RabbitError::Timeout(CONFIRM_TIMEOUT))),
            };
            if confirmation.is_nack() {
                return Err(failed(done, RabbitError::Nacked));
            }
        }
        Ok(())
    }

    /// For health checks: a round trip to the broker (a passive declare of the default queue).
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
                    self.config
                        .lane_queue(Queue::Default, Lane::Normal)
                        .as_str()
                        .into(),
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

/// The span of one message's publication, a child of the span that queued its job (stored
/// with the job); none when the job has no trace, or this process exports none.
fn publish_span(job: &Publication, routing_key: &str) -> tracing::Span {
    let Some(context) = job
        .trace_context
        .as_deref()
        .filter(|_| crate::telemetry::otel::installed())
    else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "job.publish",
        job_id = %job.id,
        job = %job.name,
        queue = %job.queue,
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %routing_key,
        otel.status_code = tracing::field::Empty,
    );
    crate::telemetry::otel::continue_stored(&span, context);
    span
}

/// A message's headers: the request its job comes from (`x-request-id`) and the W3C trace
/// context (`traceparent`, `tracestate`) of its publication, or, when this process exports no
/// traces, the one stored with the job; a consumer continues the trace from them.
fn origin_headers(job: &Publication, span: &tracing::Span) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(request) = &job.request_id {
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(request.as_str().into()),
        );
    }
    let mut context = crate::telemetry::otel::headers_of(span);
    if context.is_empty()
        && let Some(stored) = &job.trace_context
    {
        context = crate::telemetry::otel::stored_headers(stored);
    }
    for (name, value) in context {
        headers.insert(name.into(), AMQPValue::LongString(value.as_str().into()));
    }
    headers
}

/// The trace context a message carries (`origin_headers`'), as the jobs table stores it.
pub(super) fn carried_context(properties: &BasicProperties) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    };
    Some(crate::telemetry::otel::stored(
        text("traceparent")?,
        text("tracestate"),
    ))
}

/// Capped exponential backoff with jitter for reconnect loops.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(failures.min(7)));
    base.min(Duration::from_secs(15))
        .mul_f64(0.5 + rand::random::<f64>() * 0.5)
}
