//! A channel's acknowledgements, coalesced: whatever has been settled since the last look goes
//! out as one `basic.ack` with `multiple` set where the broker's rules allow it, and one frame
//! per delivery elsewhere.
//!
//! A multiple acknowledgement of tag T settles every delivery of the channel up to T still
//! unacknowledged, so it is sent only up to a tag below which every delivery has arrived here
//! and none is still in hand (waiting, claimed or running). Delivery tags count every delivery of
//! a channel from 1; the lanes' consumers may hand over their deliveries slightly out of that
//! order, so arrivals are counted to the highest tag below which none is missing. Rejections
//! (dead letters, requeues) are sent one by one and before the acknowledgement that follows
//! them, and an acknowledgement past a delivery still in hand goes alone. Nothing is settled
//! before its outcome is stored: settlements come from `settle` once it is.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use lapin::{
    Acker,
    options::{BasicAckOptions, BasicNackOptions},
};
use tokio::sync::Notify;

use crate::jobs::watch::lock;

/// What becomes of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done with (stored, skipped): acknowledged.
    Ack,
    /// Failed for good: rejected without requeueing, to the dead letters.
    DeadLetter,
    /// Its outcome could not be stored: back to the queue, to be delivered again.
    Requeue,
}

#[derive(Default)]
struct State {
    /// Every tag up to this one has arrived.
    arrived_through: u64,
    /// Tags that arrived past a missing one.
    ahead: BTreeSet<u64>,
    /// Arrived and not yet settled.
    in_hand: BTreeSet<u64>,
    /// Settled, not yet sent.
    due: Vec<(u64, Acker, Settlement)>,
    /// Taken from `due`, being sent.
    sending: usize,
}

/// One channel's deliveries from their arrival to their settlement.
#[derive(Clone, Default)]
pub struct Acks {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    /// Signalled whenever settlements went out.
    sent: Arc<Notify>,
}

impl Acks {
    /// A delivery has arrived: it is in hand until `settle`.
    pub fn arrived(&self, tag: u64) {
        let mut s = lock(&self.state);
        if tag == s.arrived_through + 1 {
            s.arrived_through = tag;
            loop {
                let next = s.arrived_through + 1;
                if !s.ahead.remove(&next) {
                    break;
                }
                s.arrived_through = next;
            }
        } else if tag > s.arrived_through {
            s.ahead.insert(tag);
        }
        s.in_hand.insert(tag);
    }

    /// Settles a delivery: sent with the others settled by the next look.
    pub fn settle(&self, acker: Acker, tag: u64, settlement: Settlement) {
        let mut s = lock(&self.state);
        s.in_hand.remove(&tag);
        s.due.push((tag, acker, settlement));
        drop(s);
        self.wake.notify_one();
    }

    /// Deliveries neither settled nor sent.
    pub fn unsettled(&self) -> usize {
        let s = lock(&self.state);
        s.in_hand.len() + s.due.len() + s.sending
    }

    /// Waits until every delivery that arrived is settled and sent, or `limit` passes; whether
    /// they all were.
    pub async fn drained(&self, limit: Duration) -> bool {
        let all_sent = async {
            loop {
                let sent = self.sent.notified();
                if self.unsettled() == 0 {
                    return;
                }
                sent.await;
            }
        };
        tokio::time::timeout(limit, all_sent).await.is_ok()
    }

    /// Sends what is settled, as it is, until `stop`; then what remains.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let woken = self.wake.notified();
            // The jobs stored together settle one after another: let them all come first.
            tokio::task::yield_now().await;
            self.send_due().await;
            tokio::select! {
                () = woken => {}
                () = stop.cancelled() => {
                    self.send_due().await;
                    return;
                }
            }
        }
    }

    /// The settlements due, as frames: rejections one by one first, then the acknowledgements
    /// up to the highest tag below which nothing is missing or in hand as one multiple
    /// acknowledgement, and the rest one by one.
    async fn send_due(&self) {
        let (due, bound) = {
            let mut s = lock(&self.state);
            if s.due.is_empty() {
                return;
            }
            let mut due = std::mem::take(&mut s.due);
            s.sending = due.len();
            due.sort_unstable_by_key(|(tag, ..)| *tag);
            let bound = match s.in_hand.first() {
                Some(first) => s.arrived_through.min(first - 1),
                None => s.arrived_through,
            };
            (due, bound)
        };
        let metrics = crate::metrics::metrics();
        let mut frames = 0;
        let (acks, rejections): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(_, _, settlement)| *settlement == Settlement::Ack);
        for (_, acker, settlement) in rejections {
            let requeue = settlement == Settlement::Requeue;
            let sent = acker
                .nack(BasicNackOptions {
                    requeue,
                    ..Default::default()
                })
                .await;
            warn_lost(sent);
            frames += 1;
            let how = if requeue { "requeue" } else { "dead_letter" };
            metrics.job_settlements.with_label_values(&[how]).inc();
        }
        if !acks.is_empty() {
            metrics
                .job_settlements
                .with_label_values(&["ack"])
                .inc_by(acks.len() as u64);
        }
        // The highest acknowledgement at or below the bound covers every one below it.
        let covered = acks.iter().rposition(|(tag, ..)| *tag <= bound);
        for (i, (_, acker, _)) in acks.iter().enumerate() {
            let multiple = match covered {
                Some(last) if i < last => continue,
                Some(last) => i == last && last > 0,
                None => false,
            };
            warn_lost(acker.ack(BasicAckOptions { multiple }).await);
            frames += 1;
        }
        metrics.job_settlement_frames.inc_by(frames);
        lock(&self.state).sending = 0;
        self.sent.notify_waiters();
    }
}

fn warn_lost(sent: lapin::Result<bool>) {
    if let Err(e) = sent {
        tracing::warn!(error = %e, "acknowledgement lost; the broker will redeliver the message");
    }
}
