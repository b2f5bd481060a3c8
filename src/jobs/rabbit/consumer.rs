//! The worker's consumer: for each job queue it serves, deliveries from the queue's priority
//! lanes wait in one priority order for a free slot, are claimed in batches, run, and settled
//! once their outcomes are stored.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::RabbitSettings,
    entities::job,
    jobs::{Lane, Outcome, Queue, Runner},
};
use sea_orm::{ColumnTrait, Condition};

use super::acks::{Acks, Settlement};
use super::{
    CLAIMS_PER_BATCH, CONNECT_TIMEOUT, PREFETCH_PER_JOB, RabbitError, backoff, connect,
    with_timeout,
};
use crate::jobs::heartbeat::{HEARTBEAT_EVERY, heartbeat};

/// How many of a worker's queues have consumers on an open channel right now: the worker is
/// ready while all of them do.
#[derive(Clone, Default)]
pub struct Consuming(Arc<AtomicUsize>);

impl Consuming {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one queue as consumed until the returned guard is dropped.
    fn start(&self) -> ConsumingGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        ConsumingGuard(self.0.clone())
    }
}

struct ConsumingGuard(Arc<AtomicUsize>);

impl Drop for ConsumingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The worker: consumes each of `queues` with its own concurrency until `shutdown`,
/// reconnecting after broker restarts or dropped connections. On shutdown it stops taking
/// deliveries and waits up to `grace` for running jobs.
pub async fn consume(
    runner: Arc<Runner>,
    config: RabbitSettings,
    queues: Vec<(Queue, usize)>,
    shutdown: CancellationToken,
    grace: Duration,
    consuming: Consuming,
) {
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
    let consumers: Vec<_> = queues
        .into_iter()
        .map(|(queue, concurrency)| {
            tokio::spawn(consume_queue(
                runner.clone(),
                config.clone(),
                (queue, concurrency),
                shutdown.clone(),
                grace,
                consuming.clone(),
            ))
        })
        .collect();
    for consumer in consumers {
        let _ = consumer.await;
    }
    beat.abort();
}

/// One job queue, over connections that are reopened when they fail.
async fn consume_queue(
    runner: Arc<Runner>,
    config: RabbitSettings,
    (queue, concurrency): (Queue, usize),
    shutdown: CancellationToken,
    grace: Duration,
    consuming: Consuming,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let consumed = consume_connection(
            &runner,
            &config,
            (queue, concurrency),
            &permits,
            &shutdown,
            grace,
            &consuming,
        )
        .await;
        match consumed {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, %queue, attempt = failures, "RabbitMQ connection lost or unavailable; reconnecting");
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
}

/// A delivery waiting for a free slot: the highest priority first, then the earliest.
struct Waiting {
    priority: u8,
    order: Reverse<u64>,
    delivery: lapin::message::Delivery,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.order) == (other.priority, other.order)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.order).cmp(&(other.priority, other.order))
    }
}

/// Deliveries held for their rate's start slot, by slot (then delivery tag), the earliest first.
type Parked = BTreeMap<(tokio::time::Instant, u64), lapin::message::Delivery>;

/// Until the earliest parked delivery's slot (never, with none).
async fn sleep_until_first(parked: &Parked) {
    match parked.first_key_value() {
        Some(((at, _), _)) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}

/// One connection's life: returns Ok on shutdown, Err when the connection or a consumer ends.
///
/// Deliveries flow through three stages. Each lane's consumer holds up to its prefetch of
/// deliveries, which wait here in priority order (a high lane's before a normal one's, and
/// within them by the priority each message carries); a waiting delivery takes a permit (at
/// most `concurrency` jobs are in hand at once); the claim stage claims every delivery
/// waiting at that moment with one statement, and each claimed job runs on its own task, its
/// outcome stored with the others that finished meanwhile (`Runner::execute`), then
/// acknowledged.
async fn consume_connection(
    runner: &Arc<Runner>,
    config: &RabbitSettings,
    (queue, concurrency): (Queue, usize),
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
    grace: Duration,
    consuming: &Consuming,
) -> Result<(), RabbitError> {
    let (conn, channel) = connect(config).await?;
    // Prefetch beyond the running jobs keeps deliveries waiting in this process, not a round
    // trip away, as a job finishes. Per consumer: each lane has its own.
    let prefetch = u16::try_from(concurrency.saturating_mul(PREFETCH_PER_JOB))
        .unwrap_or(u16::MAX)
        .max(1);
    with_timeout(
        CONNECT_TIMEOUT,
        channel.basic_qos(prefetch, BasicQosOptions::default()),
    )
    .await?;
    let mut tags = Vec::new();
    let mut lanes = Vec::new();
    for lane in Lane::ALL {
        let name = config.lane_queue(queue, lane);
        let tag = format!("{}:{name}", runner.worker_id());
        let consumer = with_timeout(
            CONNECT_TIMEOUT,
            channel.basic_consume(
                name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        tags.push(tag);
        // A lane whose consumer ends (the broker cancelled it) ends the connection, so that it
        // is consumed again after the reconnect instead of silently dropping out.
        let ended = futures_util::stream::once(std::future::ready((lane, None)));
        lanes.push(
            consumer
                .map(move |delivery| (lane, Some(delivery)))
                .chain(ended),
        );
    }
    let mut deliveries = futures_util::stream::select_all(lanes);
    tracing::info!(%queue, prefetch, concurrency, "worker consuming");
    let consumed = consuming.start();
    let acks = Acks::default();
    let acking = CancellationToken::new();
    let acker = tokio::spawn(acks.clone().run(acking.clone()));
    let (to_claim, claims) = mpsc::unbounded_channel();
    let (to_park, mut parking) = mpsc::unbounded_channel();
    let mut claimer = tokio::spawn(claim_deliveries(
        runner.clone(),
        claims,
        acks.clone(),
        to_park,
    ));
    let mut waiting: BinaryHeap<Waiting> = BinaryHeap::new();
    let mut parked = Parked::new();
    let mut arrived: u64 = 0;
    let outcome = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Stop taking new deliveries; unacked ones in flight finish below, and those
                // still waiting go back to the broker with the connection.
                for tag in &tags {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                }
                drop(to_claim);
                let deadline = tokio::time::Instant::now() + grace;
                let _ = tokio::time::timeout_at(deadline, &mut claimer).await;
                // What waits for a slot goes back to the queue now (settled, so that no
                // multiple acknowledgement covers it).
                let just_parked = std::iter::from_fn(|| parking.try_recv().ok()).map(|(d, _)| d);
                let parked = std::mem::take(&mut parked).into_values().chain(just_parked);
                for delivery in waiting.drain().map(|w| w.delivery).chain(parked) {
                    acks.settle(delivery.acker, delivery.delivery_tag, Settlement::Requeue);
                }
                let all = u32::try_from(concurrency.max(1)).unwrap_or(u32::MAX);
                if tokio::time::timeout_at(deadline, permits.acquire_many(all)).await.is_err() {
                    tracing::warn!(%queue, "jobs still running at the shutdown deadline; the broker will redeliver them");
                }
                // The finished jobs' outcomes are stored, then their messages settled.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                acks.drained(left.max(Duration::from_secs(1))).await;
                acking.cancel();
                let _ = acker.await;
                let _ = conn.close(200, "worker shutting down".into()).await;
                break Ok(());
            }
            next = deliveries.next() => match next {
                Some((lane, Some(Ok(delivery)))) => {
                    acks.arrived(delivery.delivery_tag);
                    arrived += 1;
                    waiting.push(Waiting {
                        priority: delivery.properties.priority().unwrap_or(lane.priority()),
                        order: Reverse(arrived),
                        delivery,
                    });
                }
                Some((_, Some(Err(e)))) => break Err(e.into()),
                Some((_, None)) | None => break Err(RabbitError::ConsumerEnded),
            },
            Some((delivery, at)) = parking.recv() => {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                let tag = delivery.delivery_tag;
                parked.insert((tokio::time::Instant::now() + wait, tag), delivery);
            }
            () = sleep_until_first(&parked), if !parked.is_empty() => {
                let now = tokio::time::Instant::now();
                while let Some(entry) = parked.first_entry().filter(|e| e.key().0 <= now) {
                    arrived += 1;
                    waiting.push(Waiting {
                        // Its slot has come: before anything that arrived meanwhile.
                        priority: u8::MAX,
                        order: Reverse(arrived),
                        delivery: entry.remove(),
                    });
                }
            }
            permit = permits.clone().acquire_owned(), if !waiting.is_empty() => {
                let (Ok(permit), Some(next)) = (permit, waiting.pop()) else {
                    break Ok(());
                };
                if to_claim.send((next.delivery, permit)).is_err() {
                    break Err(RabbitError::ConsumerEnded);
                }
            }
        }
    };
    drop(consumed);
    claimer.abort();
    acking.cancel();
    outcome
}

/// A delivery with the permit it holds until it is acknowledged.
type InHand = (lapin::message::Delivery, tokio::sync::OwnedSemaphorePermit);

/// Claims the waiting deliveries' jobs, a batch at a time, and starts each claimed one.
async fn claim_deliveries(
    runner: Arc<Runner>,
    mut deliveries: mpsc::UnboundedReceiver<InHand>,
    acks: Acks,
    park: mpsc::UnboundedSender<(lapin::message::Delivery, DateTime<Utc>)>,
) {
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
                        settle(&acks, delivery, Ok(Outcome::Failed), permit);
                    }
                }
            }
            let mut ids: Vec<Uuid> = mine.keys().copied().collect();
            if takeover && !ids.is_empty() {
                // A job whose worker died on its last attempt is not run again: it fails.
                let redelivered = Condition::all().add(job::Column::Id.is_in(ids.iter().copied()));
                match runner.fail_abandoned(redelivered).await {
                    Ok(failed) => {
                        for id in failed {
                            if let Some((delivery, permit)) = mine.remove(&id) {
                                settle(&acks, delivery, Ok(Outcome::Failed), permit);
                            }
                        }
                        ids = mine.keys().copied().collect();
                    }
                    Err(e) => {
                        for (delivery, permit) in mine.into_values() {
                            settle(&acks, delivery, Err(e.clone()), permit);
                        }
                        continue;
                    }
                }
            }
            match runner.claim(&ids, takeover).await {
                Ok(claimed) => {
                    // Held for their rate's slot: kept, without a slot, and offered again then.
                    for (id, at) in claimed.slots {
                        if let Some((delivery, permit)) = mine.remove(&id) {
                            drop(permit);
                            let _ = park.send((delivery, at));
                        }
                    }
                    for row in claimed.rows {
                        let Some((delivery, permit)) = mine.remove(&row.id) else {
                            continue;
                        };
                        let (runner, acks) = (runner.clone(), acks.clone());
                        let mut row = row;
                        // The attempt continues the trace from the span that published this
                        // message (itself a child of the one that queued the job).
                        if let Some(context) = super::carried_context(&delivery.properties) {
                            row.trace_context = Some(context);
                        }
                        tokio::spawn(async move {
                            // The slot is free again once the handler returns; the message
                            // waits for its outcome to be stored.
                            let outcome = runner.execute_in(row, Some(permit)).await;
                            let (tag, acker) = (delivery.delivery_tag, delivery.acker);
                            match outcome {
                                Ok(outcome) => acks.settle(acker, tag, settlement(outcome)),
                                Err(e) => requeue_later(acks, acker, tag, e, None),
                            }
                        });
                    }
                    // Finished, cancelled, or another worker's: nothing to run.
                    for (delivery, permit) in mine.into_values() {
                        settle(&acks, delivery, Ok(Outcome::Skipped), permit);
                    }
                }
                Err(e) => {
                    for (delivery, permit) in mine.into_values() {
                        settle(&acks, delivery, Err(e.clone()), permit);
                    }
                }
            }
        }
    }
}

/// How a delivery is settled once its job's outcome is stored: a job that failed for good
/// goes to the dead letters, any other is acknowledged.
fn settlement(outcome: Outcome) -> Settlement {
    match outcome {
        Outcome::Failed => Settlement::DeadLetter,
        _ => Settlement::Ack,
    }
}

/// Settles a delivery that did not run; a database failure leaves the message to be
/// delivered again, a second later, its slot held meanwhile.
fn settle(
    acks: &Acks,
    delivery: lapin::message::Delivery,
    outcome: Result<Outcome, sea_orm::DbErr>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (tag, acker) = (delivery.delivery_tag, delivery.acker);
    match outcome {
        Ok(outcome) => {
            drop(permit);
            acks.settle(acker, tag, settlement(outcome));
        }
        Err(e) => requeue_later(acks.clone(), acker, tag, e, Some(permit)),
    }
}

/// Puts a message back in its queue a second from now, holding `permit` meanwhile: the
/// database could not store what its job did, or claim it.
fn requeue_later(
    acks: Acks,
    acker: lapin::Acker,
    tag: u64,
    error: sea_orm::DbErr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    tracing::error!(error = %error, "could not store a job outcome; requeueing the message");
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        acks.settle(acker, tag, Settlement::Requeue);
        drop(permit);
    });
}
