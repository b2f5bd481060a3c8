//! This instance's connections and rooms: joining, moving between rooms, leaving, and
//! delivering a message to a room's local members.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use fred::clients::SubscriberClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{config::WebSocketSettings, metrics::metrics, redis::Redis};

pub const DEFAULT_ROOM: &str = "default";

pub(super) type ConnId = u64;
/// Why the server ends a connection: the close code and reason it sends.
pub(super) type CloseReason = Arc<Mutex<Option<(u16, &'static str)>>>;

pub(super) struct Conn {
    tx: mpsc::Sender<Arc<str>>,
    room: String,
    /// Cancelled to drop the connection: the writer sends `close` and stops.
    kick: CancellationToken,
    close: CloseReason,
}

#[derive(Default)]
pub(super) struct Local {
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<String, HashSet<ConnId>>,
}

impl Local {
    pub(super) fn counts(&self) -> BTreeMap<String, u64> {
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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// This instance's name on the fan-out channel and in the shared counts.
    pub(super) instance: String,
    pub(super) limits: WebSocketSettings,
    pub(super) local: Mutex<Local>,
    pub(super) next_id: AtomicU64,
    pub(super) redis: Option<Redis>,
    pub(super) subscriber: Mutex<Option<SubscriberClient>>,
    pub(super) shutdown: CancellationToken,
    /// Set when this instance's counts changed since they were last published.
    pub(super) dirty: AtomicBool,
    /// Readiness probes sent through the fan-out channel, waiting to come back to this instance.
    pub(super) probes: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Connections per room on this instance and, with Redis, on every live instance.
    pub async fn status(&self) -> Status {
        let mut rooms = lock(&self.inner.local).counts();
        self.add_peer_counts(&mut rooms).await;
        rooms.retain(|_, n| *n > 0);
        Status {
            total_connections: rooms.values().sum(),
            room_connections: rooms,
        }
    }

    pub(super) fn join(
        &self,
        tx: mpsc::Sender<Arc<str>>,
    ) -> (ConnId, CloseReason, CancellationToken) {
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

    pub(super) fn leave(&self, id: ConnId) {
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
    pub(super) fn move_to(&self, id: ConnId, room: &str) -> String {
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

    pub(super) fn room_of(&self, id: ConnId) -> String {
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

    /// Queues `text` for connection `id` alone (a reply), through the same bounded queue.
    pub(super) fn send_one(&self, id: ConnId, text: &Arc<str>) {
        let local = lock(&self.inner.local);
        if let Some(conn) = local.conns.get(&id) {
            Self::send_to(conn, text);
        }
    }

    pub(super) fn deliver_local(&self, room: &str, text: &Arc<str>) {
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
        self.publish(room, &text).await;
    }

    /// Closes every connection with 1001 (going away): the server is shutting down.
    pub fn close_all(&self) {
        self.inner.shutdown.cancel();
    }
}
