//! WebSocket rooms. Each instance keeps its own connections; with Redis, room broadcasts are
//! published to every instance and each one delivers to its local members, and the instances'
//! connection counts are shared for the status.
//!
//! Every connection has a bounded send queue: a client that reads too slowly to keep up is
//! disconnected rather than allowed to grow the server's memory.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, HashesInterface, KeysInterface, PubsubInterface},
};
use futures_util::{SinkExt, StreamExt};
use poem::web::websocket::{CloseCode, Message, WebSocketStream};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{config::WebSocketSettings, metrics::metrics, redis::Redis};

pub const DEFAULT_ROOM: &str = "default";
/// How long another instance's published counts are believed.
const PEER_FRESH: Duration = Duration::from_secs(15);
const PUBLISH_EVERY: Duration = Duration::from_secs(5);

type ConnId = u64;
/// Why the server ends a connection: the close code and reason it sends.
type CloseReason = Arc<Mutex<Option<(u16, &'static str)>>>;

struct Conn {
    tx: mpsc::Sender<Arc<str>>,
    room: String,
    /// Cancelled to drop the connection: the writer sends `close` and stops.
    kick: CancellationToken,
    close: CloseReason,
}

#[derive(Default)]
struct Local {
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<String, HashSet<ConnId>>,
}

impl Local {
    fn counts(&self) -> BTreeMap<String, u64> {
        self.rooms
            .iter()
            .map(|(room, members)| (room.clone(), members.len() as u64))
            .collect()
    }
}

/// Connections and rooms across every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub total_connections: u64,
    pub room_connections: BTreeMap<String, u64>,
}

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    instance: String,
    limits: WebSocketSettings,
    local: Mutex<Local>,
    next_id: AtomicU64,
    redis: Option<Redis>,
    subscriber: Mutex<Option<SubscriberClient>>,
    shutdown: CancellationToken,
    dirty: AtomicBool,
    /// Readiness probes sent through the fan-out channel, waiting to come back to this instance.
    probes: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
}

fn lock(m: &Mutex<Local>) -> std::sync::MutexGuard<'_, Local> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Room names: 1–64 characters of letters, digits, `_`, `-`, `.` and `:`.
pub fn valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

impl Hub {
    pub fn new(limits: WebSocketSettings, redis: Option<Redis>) -> Self {
        Self {
            inner: Arc::new(Inner {
                instance: uuid::Uuid::new_v4().simple().to_string(),
                limits,
                local: Mutex::new(Local::default()),
                next_id: AtomicU64::new(1),
                redis,
                subscriber: Mutex::new(None),
                shutdown: CancellationToken::new(),
                dirty: AtomicBool::new(false),
                probes: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn limits(&self) -> &WebSocketSettings {
        &self.inner.limits
    }

    fn channel(redis: &Redis) -> String {
        redis.key("ws:rooms")
    }

    fn instances_key(redis: &Redis) -> String {
        redis.key("ws:instances")
    }

    /// With Redis: subscribes to the other instances' broadcasts and shares this instance's
    /// counts until `stop`. Without Redis there is nothing to start.
    pub fn start(&self, stop: CancellationToken) {
        let Some(redis) = self.inner.redis.clone() else {
            return;
        };
        match redis.subscriber() {
            Ok(sub) => {
                let hub = self.clone();
                let channel = Self::channel(&redis);
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
                *self
                    .inner
                    .subscriber
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(sub);
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
            let _ =
                redis
                    .run(redis.client().hdel::<i64, _, _>(
                        Self::instances_key(&redis),
                        hub.inner.instance.as_str(),
                    ))
                    .await;
        });
    }

    async fn publish_counts(&self, redis: &Redis) {
        let counts = lock(&self.inner.local).counts();
        let entry = json!({"at": Utc::now().timestamp_millis(), "rooms": counts}).to_string();
        let key = Self::instances_key(redis);
        let set = redis
            .client()
            .hset::<i64, _, _>(&key, (self.inner.instance.as_str(), entry.as_str()));
        if redis.run(set).await.is_ok() {
            // The whole hash goes once no instance refreshes it.
            let _ = redis
                .run(redis.client().pexpire::<i64, _>(&key, 60_000, None))
                .await;
        }
    }

    /// Connections per room on this instance and, with Redis, on every live instance.
    pub async fn status(&self) -> Status {
        let mut rooms = lock(&self.inner.local).counts();
        if let Some(redis) = &self.inner.redis {
            let all = redis
                .run(
                    redis
                        .client()
                        .hgetall::<HashMap<String, String>, _>(Self::instances_key(redis)),
                )
                .await
                .unwrap_or_default();
            let fresh_since = Utc::now().timestamp_millis() - PEER_FRESH.as_millis() as i64;
            for (instance, entry) in all {
                if instance == self.inner.instance {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&entry) else {
                    continue;
                };
                if v["at"].as_i64().unwrap_or(0) < fresh_since {
                    continue;
                }
                for (room, n) in v["rooms"].as_object().into_iter().flatten() {
                    *rooms.entry(room.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
        rooms.retain(|_, n| *n > 0);
        Status {
            total_connections: rooms.values().sum(),
            room_connections: rooms,
        }
    }

    fn join(&self, tx: mpsc::Sender<Arc<str>>) -> (ConnId, CloseReason, CancellationToken) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = self.inner.shutdown.child_token();
        let close = Arc::new(Mutex::new(None));
        let mut local = lock(&self.inner.local);
        local.conns.insert(
            id,
            Conn {
                tx,
                room: DEFAULT_ROOM.into(),
                kick: kick.clone(),
                close: close.clone(),
            },
        );
        local
            .rooms
            .entry(DEFAULT_ROOM.into())
            .or_default()
            .insert(id);
        drop(local);
        self.inner.dirty.store(true, Ordering::Release);
        metrics().ws_connections.inc();
        (id, close, kick)
    }

    fn leave(&self, id: ConnId) {
        let mut local = lock(&self.inner.local);
        if let Some(conn) = local.conns.remove(&id) {
            Self::remove_from_room(&mut local, id, &conn.room);
            metrics().ws_connections.dec();
        }
        drop(local);
        self.inner.dirty.store(true, Ordering::Release);
    }

    /// Empty rooms are forgotten at once.
    fn remove_from_room(local: &mut Local, id: ConnId, room: &str) {
        if let Some(members) = local.rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                local.rooms.remove(room);
            }
        }
    }

    /// Moves a connection to `room`; returns the room it left.
    fn move_to(&self, id: ConnId, room: &str) -> String {
        let mut local = lock(&self.inner.local);
        let Some(old) = local.conns.get(&id).map(|c| c.room.clone()) else {
            return room.to_string();
        };
        Self::remove_from_room(&mut local, id, &old);
        local.rooms.entry(room.to_string()).or_default().insert(id);
        if let Some(conn) = local.conns.get_mut(&id) {
            conn.room = room.to_string();
        }
        drop(local);
        self.inner.dirty.store(true, Ordering::Release);
        old
    }

    fn room_of(&self, id: ConnId) -> String {
        lock(&self.inner.local)
            .conns
            .get(&id)
            .map(|c| c.room.clone())
            .unwrap_or_else(|| DEFAULT_ROOM.into())
    }

    /// Queues `text` for one connection; a full queue disconnects it (it is too slow).
    fn send_to(conn: &Conn, text: &Arc<str>) {
        match conn.tx.try_send(text.clone()) {
            Ok(()) => metrics().ws_messages.with_label_values(&["out"]).inc(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics().ws_messages.with_label_values(&["dropped"]).inc();
                conn.close
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert((1008, "too slow: messages were not read in time"));
                conn.kick.cancel();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn deliver_local(&self, room: &str, text: &Arc<str>) {
        let local = lock(&self.inner.local);
        let Some(members) = local.rooms.get(room) else {
            return;
        };
        for id in members {
            if let Some(conn) = local.conns.get(id) {
                Self::send_to(conn, text);
            }
        }
    }

    /// Delivers `text` to every member of `room`, here and (with Redis) on every instance.
    pub async fn broadcast(&self, room: &str, text: Arc<str>) {
        self.deliver_local(room, &text);
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let envelope = json!({"from": self.inner.instance, "room": room, "text": text.as_ref()});
        let publish = redis
            .client()
            .publish::<i64, _, _>(Self::channel(redis), envelope.to_string());
        if let Err(e) = redis.run(publish).await {
            tracing::warn!(error = %e, room, "room broadcast reached this instance only: redis unavailable");
        }
    }

    fn on_published(&self, envelope: &str) {
        let Ok(v) = serde_json::from_str::<Value>(envelope) else {
            return;
        };
        if v["from"].as_str() == Some(self.inner.instance.as_str()) {
            if let Some(probe) = v["probe"].as_u64() {
                let waiting = self
                    .inner
                    .probes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&probe);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(());
                }
            }
            return;
        }
        if let (Some(room), Some(text)) = (v["room"].as_str(), v["text"].as_str()) {
            self.deliver_local(room, &Arc::from(text));
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
        self.inner
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(probe, done);
        let envelope = json!({"from": self.inner.instance, "probe": probe}).to_string();
        let outcome = match redis
            .run(
                redis
                    .client()
                    .publish::<i64, _, _>(Self::channel(redis), envelope),
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
        self.inner
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&probe);
        Some(outcome)
    }

    /// Closes every connection with 1001 (going away): the server is shutting down.
    pub fn close_all(&self) {
        self.inner.shutdown.cancel();
    }

    /// Serves one upgraded connection until either side ends it.
    pub async fn serve(&self, socket: WebSocketStream, sender: String) {
        let limits = self.inner.limits.clone();
        let (tx, mut rx) = mpsc::channel::<Arc<str>>(limits.send_queue);
        let (id, close, kick) = self.join(tx.clone());
        let (mut sink, mut stream) = socket.split();
        let shutting_down = self.inner.shutdown.clone();

        // The writer: queued messages and pings out, then the close frame.
        let writer_kick = kick.clone();
        let writer_close = close.clone();
        let ping_every = limits.ping_interval;
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(ping_every);
            ping.tick().await;
            loop {
                let out = tokio::select! {
                    biased;
                    () = writer_kick.cancelled() => break,
                    next = rx.recv() => match next {
                        Some(text) => Message::Text(text.to_string()),
                        None => break,
                    },
                    _ = ping.tick() => Message::Ping(Vec::new()),
                };
                tokio::select! {
                    biased;
                    () = writer_kick.cancelled() => break,
                    sent = sink.send(out) => if sent.is_err() { return; },
                }
            }
            let (code, reason) = if shutting_down.is_cancelled() {
                (1001, "server shutting down")
            } else {
                writer_close
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .unwrap_or((1000, "closing"))
            };
            let frame = Message::Close(Some((CloseCode::from(code), reason.to_string())));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        });

        // The reader: every client frame, within the message rate and the ping deadline.
        let mut bucket = TokenBucket::new(limits.messages_per_second);
        let mut last_heard = Instant::now();
        let deadline = limits.ping_interval * 2;
        let end = |reason: (u16, &'static str)| {
            close
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(reason);
            kick.cancel();
        };
        loop {
            let frame = tokio::select! {
                () = kick.cancelled() => break,
                () = tokio::time::sleep(deadline.saturating_sub(last_heard.elapsed())) => {
                    end((1001, "no answer to pings"));
                    break;
                }
                frame = stream.next() => frame,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Other => {
                    // tungstenite's own errors: too large a message, or a protocol violation.
                    end(if e.to_string().contains("Space limit exceeded") {
                        (1009, "message too big")
                    } else {
                        (1002, "protocol error")
                    });
                    break;
                }
                _ => {
                    kick.cancel();
                    break;
                }
            };
            last_heard = Instant::now();
            let text = match frame {
                Message::Text(text) => text,
                Message::Binary(_) => {
                    let _ = tx.try_send(error_reply(
                        "binary messages are not supported; send JSON text",
                    ));
                    continue;
                }
                Message::Close(_) => {
                    kick.cancel();
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            metrics().ws_messages.with_label_values(&["in"]).inc();
            if !bucket.take() {
                end((1008, "message rate limit exceeded"));
                break;
            }
            if let Some(reply) = self.handle(id, &sender, &text).await {
                // Replies go through the same bounded queue as everything else.
                let local = lock(&self.inner.local);
                if let Some(conn) = local.conns.get(&id) {
                    Self::send_to(conn, &reply);
                }
            }
        }
        self.leave(id);
        drop(tx);
        let _ = writer.await;
    }

    /// One client message; returns the reply for the sender, if any.
    async fn handle(&self, id: ConnId, sender: &str, text: &str) -> Option<Arc<str>> {
        let parsed = serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({"type": "echo", "message": text}));
        let message = parsed.get("message").cloned().unwrap_or(Value::Null);
        let reply = match parsed["type"].as_str() {
            Some("echo") => json!({"type": "echo", "message": message, "timestamp": timestamp()}),
            Some("ping") => json!({"type": "pong", "timestamp": timestamp()}),
            Some("broadcast") => {
                let room = self.room_of(id);
                self.room_message("broadcast", &room, sender, message).await;
                return None;
            }
            Some("room_broadcast") => {
                let Some(room) = parsed["room"].as_str() else {
                    return Some(error_reply("room_broadcast needs a \"room\""));
                };
                if self.room_of(id) != room {
                    return Some(error_reply(&format!(
                        "join room {room:?} first: send {{\"type\":\"room\",\"room\":{room:?}}}"
                    )));
                }
                self.room_message("room_broadcast", room, sender, message)
                    .await;
                return None;
            }
            Some("room") => {
                let Some(room) = parsed["room"].as_str().filter(|r| valid_room(r)) else {
                    return Some(error_reply(
                        "a room name is 1-64 characters of letters, digits, _ - . and :",
                    ));
                };
                self.move_to(id, room);
                json!({"type": "room_joined", "room": room, "timestamp": timestamp()})
            }
            Some("leave") => {
                let left = self.move_to(id, DEFAULT_ROOM);
                json!({"type": "room_left", "room": left, "timestamp": timestamp()})
            }
            Some("status") => {
                let room = self.room_of(id);
                let status = self.status().await;
                json!({
                    "type": "status",
                    "total_connections": status.total_connections,
                    "current_room": room,
                    "room_connections": status.room_connections.get(&room).copied().unwrap_or(0),
                    "timestamp": timestamp(),
                })
            }
            Some(other) => {
                return Some(error_reply(&format!(
                    "unknown message type {other:?}; use echo, broadcast, room, leave, room_broadcast, status or ping"
                )));
            }
            None => return Some(error_reply("a message needs a \"type\"")),
        };
        Some(reply.to_string().into())
    }

    async fn room_message(&self, kind: &str, room: &str, sender: &str, message: Value) {
        let out = json!({
            "type": kind,
            "message": message,
            "room": room,
            "sender": sender,
            "timestamp": timestamp(),
        });
        self.broadcast(room, out.to_string().into()).await;
    }
}

fn error_reply(message: &str) -> Arc<str> {
    json!({"type": "error", "message": message, "timestamp": timestamp()})
        .to_string()
        .into()
}

/// `rate` messages a second on average, bursts of twice that.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self {
            rate,
            capacity: rate * 2.0,
            tokens: rate * 2.0,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked() {
        assert!(valid_room("test-room") && valid_room("a") && valid_room("team:42.chat_1"));
        for bad in ["", "has space", "emoji🙂", &"x".repeat(65), "semi;colon"] {
            assert!(!valid_room(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(5);
        assert_eq!((0..20).filter(|_| b.take()).count(), 10);
    }
}
