//! Upgrading from the single queue: before job queues existed, every job was published to
//! `RABBITMQ_QUEUE` itself. Messages still there (published by a server not yet upgraded, or
//! returned by a worker that died) are routed through the outbox: the job is marked unpublished,
//! and the relay publishes it to its own queue. The message is then acknowledged; the row is
//! the truth, and a job that already ran is left alone.

use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::{
    Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::FieldTable,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr, sea_query::ExprTrait};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CONNECT_TIMEOUT, RabbitError, backoff, with_timeout};
use crate::{
    config::RabbitSettings,
    entities::job,
    jobs::{JobStatus, Runner},
};

const BATCH: u16 = 200;

/// Routes the old single queue's messages into the outbox until `shutdown`, if that queue
/// exists when the worker starts (only versions before job queues create it); `wake` tells
/// this process's relay to publish what it routed.
pub async fn drain_legacy_queue(
    runner: Arc<Runner>,
    config: RabbitSettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let pause = match drain_connection(&runner, &config, &wake, &shutdown).await {
            Ok(Drained::Shutdown | Drained::NoQueue) => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, queue = %config.queue, "cannot read the pre-queues job queue; trying again");
                }
                backoff(failures)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

enum Drained {
    Shutdown,
    NoQueue,
}

async fn drain_connection(
    runner: &Runner,
    config: &RabbitSettings,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> Result<Drained, RabbitError> {
    let conn = with_timeout(
        CONNECT_TIMEOUT,
        Connection::connect(&config.url, ConnectionProperties::default()),
    )
    .await?;
    let channel = with_timeout(CONNECT_TIMEOUT, conn.create_channel()).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        durable: true,
        ..Default::default()
    };
    // A passive declare of a queue that does not exist closes the channel: nothing to drain.
    let exists = with_timeout(
        CONNECT_TIMEOUT,
        channel.queue_declare(config.queue.as_str().into(), passive, FieldTable::default()),
    )
    .await;
    if exists.is_err() {
        let _ = conn.close(200, "no pre-queues job queue".into()).await;
        return Ok(Drained::NoQueue);
    }
    tracing::warn!(
        queue = %config.queue,
        "routing the messages of the pre-queues job queue to the job queues; delete it once it stays empty"
    );
    with_timeout(
        CONNECT_TIMEOUT,
        channel.basic_qos(BATCH, BasicQosOptions::default()),
    )
    .await?;
    let mut consumer = with_timeout(
        CONNECT_TIMEOUT,
        channel.basic_consume(
            config.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = conn.close(200, "worker shutting down".into()).await;
                return Ok(Drained::Shutdown);
            }
            next = consumer.next() => match next {
                Some(d) => d?,
                None => return Err(RabbitError::ConsumerEnded),
            },
        };
        let id = std::str::from_utf8(&delivery.data)
            .ok()
            .and_then(|s| Uuid::parse_str(s.trim()).ok());
        if let Some(id) = id
            && let Err(e) = reroute(runner, id, delivery.redelivered).await
        {
            // Not acknowledged: the message comes back with the next connection.
            tracing::warn!(error = %e, job_id = %id, "could not route an old queue's message");
            return Err(RabbitError::ConsumerEnded);
        }
        delivery.ack(BasicAckOptions::default()).await?;
        wake.notify_one();
    }
}

/// Marks the job unpublished if it still waits. A redelivered message may be that of a job
/// whose worker died: a STARTED job whose worker no longer beats is then due again as a retry,
/// or failed if that was its last attempt (as the consumer does for its own queues).
async fn reroute(runner: &Runner, id: Uuid, redelivered: bool) -> Result<(), sea_orm::DbErr> {
    let db = runner.db();
    let unpublished = Expr::value(Option::<chrono::DateTime<Utc>>::None);
    job::Entity::update_many()
        .col_expr(job::Column::PublishedAt, unpublished.clone())
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::Status.is_in([JobStatus::Pending.as_str(), JobStatus::Retry.as_str()]))
        .exec(db)
        .await?;
    if redelivered {
        let alive = crate::jobs::heartbeat::alive_workers(db).await?;
        let which = || {
            sea_orm::Condition::all()
                .add(job::Column::Id.eq(id))
                .add(job::Column::LockedBy.is_not_in(alive.clone()))
        };
        runner.fail_abandoned(which()).await?;
        job::Entity::update_many()
            .col_expr(job::Column::Status, Expr::value(JobStatus::Retry.as_str()))
            .col_expr(job::Column::PublishedAt, unpublished)
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .col_expr(job::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(which())
            .filter(job::Column::Status.eq(JobStatus::Started.as_str()))
            .filter(Expr::col(job::Column::Attempts).lt(Expr::col(job::Column::MaxAttempts)))
            .exec(db)
            .await?;
    }
    Ok(())
}
