//! The Redis side of the rooms: broadcasts published to every instance on one channel, each
//! instance's room counts kept in one hash, and the probe readiness uses to know the channel
//! reaches this instance. Without Redis none of it runs and rooms are per instance.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use chrono::Utc;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::hub::{Hub, lock};
use crate::redis::Redis;

/// How long another instance's published counts are believed.
const PEER_FRESH: Duration = Duration::from_secs(15);
const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// What travels on the fan-out channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Envelope {
    /// A room message, for every other instance's members of `room`.
    Broadcast {
        from: String,
        room: String,
        text: String,
    },
    /// A readiness probe, meaningful only to the instance that sent it.
    Probe { from: String, probe: u64 },
}

/// One instance's entry in the shared counts hash.
#[derive(Debug, Serialize, Deserialize)]
struct PeerCounts {
    /// Milliseconds since the epoch when the instance wrote it.
    at: i64,
    rooms: BTreeMap<String, u64>,
}

fn channel(redis: &Redis) -> String {
    redis.key("ws:rooms")
}

fn instances_key(redis: &Redis) -> String {
    redis.key("ws:instances")
}

impl Hub {
    /// With Redis: subscribes to the other instances' broadcasts and shares this instance's
    /// counts until `stop`. Without Redis there is nothing to start.
    pub fn start(&self, stop: CancellationToken) {
        let Some(redis) = self.inner.redis.clone() else {
            return;
        };
        match redis.subscriber() {
            Ok(sub) => {
                let hub = self.clone();
                let channel = channel(&redis);
                sub.on_message(move |message| {
                    if let Some(text) = message.value.as_str() {
                        hub.on_published(&text);
                    }
                    async { Ok(()) }
                });
                let subscribing = sub.clone();
                tokio::spawn(async move {
                    // Retried by the client's own reconnection; this only starts it.
                    let _ = subscribing.wait_for_connect().await;
                    if let Err(e) = subscribing.subscribe(channel).await {
                        tracing::warn!(error = %e, "websocket fan-out: subscribe failed");
                    }
                });
                *lock(&self.inner.subscriber) = Some(sub);
            }
            Err(e) => tracing::warn!(error = %e, "websocket fan-out: no subscriber connection"),
        }
        let hub = self.clone();
        tokio::spawn(async move {
            let mut last = Instant::now() - PUBLISH_EVERY;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if hub.inner.dirty.swap(false, Ordering::AcqRel) || last.elapsed() >= PUBLISH_EVERY
                {
                    hub.publish_counts(&redis).await;
                    last = Instant::now();
                }
            }
            let _ = redis
                .run(
                    "HDEL",
                    redis
                        .client()
                        .hdel::<i64, _, _>(instances_key(&redis), hub.inner.instance.as_str()),
                )
                .await;
        });
    }

    async fn publish_counts(&self, redis: &Redis) {
        let entry = PeerCounts {
            at: Utc::now().timestamp_millis(),
            rooms: lock(&self.inner.local).counts(),
        };
        let Ok(entry) = serde_json::to_string(&entry) else {
            return;
        };
        let key = instances_key(redis);
        let set = redis
            .client()
            .hset::<i64, _, _>(&key, (self.inner.instance.as_str(), entry.as_str()));
        if redis.run("HSET", set).await.is_ok() {
            // The whole hash goes once no instance refreshes it.
            let _ = redis
                .run(
                    "PEXPIRE",
                    redis.client().pexpire::<i64, _>(&key, 60_000, None),
                )
                .await;
        }
    }

    /// Adds the rooms of every other live instance (with Redis) to this one's `rooms`.
    pub(super) async fn add_peer_counts(&self, rooms: &mut BTreeMap<String, u64>) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let all = redis
            .run(
                "HGETALL",
                redis
                    .client()
                    .hgetall::<HashMap<String, String>, _>(instances_key(redis)),
            )
            .await
            .unwrap_or_default();
        let fresh_since = Utc::now().timestamp_millis() - PEER_FRESH.as_millis() as i64;
        for (instance, entry) in all {
            if instance == self.inner.instance {
                continue;
            }
            let Ok(peer) = serde_json::from_str::<PeerCounts>(&entry) else {
                continue;
            };
            if peer.at < fresh_since {
                continue;
            }
            for (room, n) in peer.rooms {
                *rooms.entry(room).or_default() += n;
            }
        }
    }

    /// Publishes a room message for the other instances.
    pub(super) async fn publish(&self, room: &str, text: &Arc<str>) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let envelope = Envelope::Broadcast {
            from: self.inner.instance.clone(),
            room: room.to_string(),
            text: text.to_string(),
        };
        let Ok(envelope) = serde_json::to_string(&envelope) else {
            return;
        };
        let publish = redis
            .client()
            .publish::<i64, _, _>(channel(redis), envelope);
        if let Err(e) = redis.run("PUBLISH", publish).await {
            tracing::warn!(error = %e, room, "room broadcast reached this instance only: redis unavailable");
        }
    }

    fn on_published(&self, envelope: &str) {
        match serde_json::from_str::<Envelope>(envelope) {
            Ok(Envelope::Probe { from, probe }) if from == self.inner.instance => {
                if let Some(waiting) = lock(&self.inner.probes).remove(&probe) {
                    let _ = waiting.send(());
                }
            }
            Ok(Envelope::Broadcast { from, room, text }) if from != self.inner.instance => {
                self.deliver_local(&room, &Arc::from(text));
            }
            // Our own broadcasts were delivered here already; others' probes are theirs.
            _ => {}
        }
    }

    /// Whether broadcasts from other instances reach this one right now: a probe published on
    /// the fan-out channel must come back through this instance's own subscription within
    /// `within`. Readiness depends on it, so an instance whose subscription Redis has not
    /// confirmed yet (just started, or just reconnected) is not sent clients that would miss
    /// the rooms' messages. `None` without Redis: there is nothing to fan out.
    pub async fn fanout_check(&self, within: Duration) -> Option<Result<Duration, String>> {
        let redis = self.inner.redis.as_ref()?;
        let started = Instant::now();
        let probe = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, came_back) = tokio::sync::oneshot::channel();
        lock(&self.inner.probes).insert(probe, done);
        let envelope = serde_json::to_string(&Envelope::Probe {
            from: self.inner.instance.clone(),
            probe,
        })
        .unwrap_or_default();
        let outcome = match redis
            .run(
                "PUBLISH",
                redis
                    .client()
                    .publish::<i64, _, _>(channel(redis), envelope),
            )
            .await
        {
            Err(e) => Err(format!("could not publish a probe: {e}")),
            Ok(_) => match tokio::time::timeout(within, came_back).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                _ => Err(format!(
                    "the fan-out subscription did not deliver a probe within {within:?}"
                )),
            },
        };
        lock(&self.inner.probes).remove(&probe);
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_their_wire_shape() {
        // Instances of the previous release read and write these same objects.
        let text = serde_json::to_string(&Envelope::Broadcast {
            from: "a".into(),
            room: "r".into(),
            text: "t".into(),
        })
        .unwrap();
        assert_eq!(text, r#"{"from":"a","room":"r","text":"t"}"#);
        assert!(matches!(
            serde_json::from_str::<Envelope>(r#"{"from":"b","probe":7}"#),
            Ok(Envelope::Probe { probe: 7, .. })
        ));
        let counts: PeerCounts = serde_json::from_str(r#"{"at":5,"rooms":{"x":2}}"#).unwrap();
        assert_eq!((counts.at, counts.rooms["x"]), (5, 2));
    }
}
