//! The worker's consumer: deliveries claimed in batches, run, settled once their outcomes are
//! stored.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::FieldTable,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::RabbitSettings,
    jobs::{Outcome, Runner},
};

use super::{
    CLAIMS_PER_BATCH, CONNECT_TIMEOUT, PREFETCH_PER_JOB, RabbitError, backoff, connect,
    with_timeout,
};
use crate::jobs::heartbeat::{HEARTBEAT_EVERY, heartbeat};

/// The worker: consumes until `shutdown`, reconnecting after broker restarts or dropped
/// connections. On shutdown it stops taking deliveries and waits up to `grace` for running jobs.
pub async fn consume(
    runner: Arc<Runner>,
    config: RabbitSettings,
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
    config: &RabbitSettings,
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
