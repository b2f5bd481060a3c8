//! The user-list cache and the session-revocation marks: in Redis when it is enabled (shared by
//! every server instance), in this process's memory otherwise.
//!
//! Invalidation is by version, never by sweeping keys: every cached page's key carries the
//! current users version, and any write to users bumps it, so the next read misses. A bump that
//! cannot reach Redis is made good when Redis comes back: every instance bumps again on
//! (re)connection. Readers that cannot reach Redis go to the database.

use std::{
    any::Any,
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{
    interfaces::KeysInterface,
    types::{Expiration, Value},
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{metrics::metrics, redis::Redis};

/// Pages kept in memory at most, without Redis.
const MEMORY_PAGES: usize = 2_000;
/// Signed-in users whose account rows are remembered between requests (with Redis).
const SNAPSHOTS: usize = 10_000;

/// A user as the account domain last read it, and the users version it read it at.
type Snapshot = (u64, Arc<dyn Any + Send + Sync>);
/// List totals remembered at most (by filter and users version).
const TOTALS: usize = 1_000;
/// Session checks answered by one Redis command at most.
const CHECKS_PER_BATCH: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// The cache could not be used; the answer came straight from the database.
    Bypass,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
        }
    }
}

/// A cached page and the users version it was read at: `<version>:<body>`.
struct Entry {
    version: u64,
    body: Bytes,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!("{}:", self.version).into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(stored: &[u8]) -> Option<Self> {
        let colon = stored.iter().position(|b| *b == b':')?;
        Some(Self {
            version: std::str::from_utf8(&stored[..colon]).ok()?.parse().ok()?,
            body: Bytes::copy_from_slice(&stored[colon + 1..]),
        })
    }
}

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Option<Redis>,
    ttl: Duration,
    /// How long a revocation mark must live: as long as an access token.
    revocation_ttl: Duration,
    version: AtomicU64,
    /// A write to users or a revocation this process could not announce in Redis (made good on
    /// reconnection).
    missed: std::sync::atomic::AtomicBool,
    /// This process's copies of pages (the whole cache without Redis), by key.
    pages: Mutex<HashMap<String, (Instant, Entry)>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The account domain's view of each recently seen user, at the users version it was read
    /// at (the cache stores it without knowing its type).
    snapshots: Mutex<HashMap<Uuid, Snapshot>>,
    /// How many accounts each filter selected, and at which users version.
    totals: Mutex<HashMap<String, (u64, u64)>>,
    /// Feeds the task that asks Redis about sessions; started on first use.
    session_checks: OnceLock<mpsc::UnboundedSender<SessionCheck>>,
}

/// One authenticated request's question, and where its answer goes: whether the session is
/// revoked and the current users version, or why Redis could not say.
type SessionCheck = (Uuid, oneshot::Sender<Result<(bool, u64), String>>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    pub fn new(redis: Option<Redis>, ttl: Duration, revocation_ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                ttl,
                revocation_ttl,
                version: AtomicU64::new(0),
                missed: std::sync::atomic::AtomicBool::new(false),
                pages: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
                snapshots: Mutex::new(HashMap::new()),
                totals: Mutex::new(HashMap::new()),
                session_checks: OnceLock::new(),
            }),
        }
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    fn version_key(redis: &Redis) -> String {
        redis.key("users:version")
    }

    /// Makes every cached user page stale; called after each committed write to users.
    pub async fn invalidate_users(&self) {
        self.forget_snapshots();
        let Some(redis) = &self.inner.redis else {
            self.inner.version.fetch_add(1, Ordering::AcqRel);
            lock(&self.inner.pages).clear();
            return;
        };
        if let Err(e) = redis
            .run(
                "INCR",
                redis.client().incr::<u64, _>(Self::version_key(redis)),
            )
            .await
        {
            // Made good on reconnection, when every instance bumps the version.
            self.inner.missed.store(true, Ordering::Release);
            tracing::warn!(error = %e, "could not invalidate the user cache in redis");
        }
    }

    /// This process's copy of `key`, if it was stored at `version` and has not expired.
    fn local(&self, key: &str, version: u64) -> Option<Bytes> {
        lock(&self.inner.pages)
            .get(key)
            .filter(|(expires, entry)| *expires > Instant::now() && entry.version == version)
            .map(|(_, entry)| entry.body.clone())
    }

    fn keep_local(&self, key: &str, entry: &Entry) {
        let mut pages = lock(&self.inner.pages);
        if pages.len() >= MEMORY_PAGES {
            let now = Instant::now();
            pages.retain(|_, (expires, _)| *expires > now);
            if pages.len() >= MEMORY_PAGES {
                pages.clear();
            }
        }
        pages.insert(
            key.to_string(),
            (
                Instant::now() + self.inner.ttl,
                Entry {
                    version: entry.version,
                    body: entry.body.clone(),
                },
            ),
        );
    }

    /// The current users version and the shared entry for `key`, in one round trip. `None`
    /// when Redis is enabled but cannot be asked.
    async fn lookup(&self, key: &str) -> Option<(u64, Option<Entry>)> {
        let Some(redis) = &self.inner.redis else {
            let version = self.inner.version.load(Ordering::Acquire);
            let entry = self.local(key, version).map(|body| Entry { version, body });
            return Some((version, entry));
        };
        let keys = vec![Self::version_key(redis), redis.key(key)];
        match redis
            .run("MGET", redis.client().mget::<Vec<Value>, _>(keys))
            .await
        {
            Ok(values) => {
                let version = values.first().and_then(Value::as_u64).unwrap_or(0);
                let entry = values
                    .get(1)
                    .and_then(Value::as_bytes)
                    .and_then(Entry::decode);
                Some((version, entry))
            }
            Err(e) => {
                self.forget_snapshots();
                static WARNED: AtomicU64 = AtomicU64::new(0);
                if crate::redis::should_warn(&WARNED) {
                    tracing::warn!(error = %e, "cache bypassed: redis unavailable");
                }
                None
            }
        }
    }

    async fn put(&self, key: &str, entry: &Entry) {
        self.keep_local(key, entry);
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let encoded = entry.encode();
        let ttl = self.inner.ttl.as_secs().max(1) as i64;
        let set = redis.client().set::<(), _, _>(
            redis.key(key),
            encoded,
            Some(Expiration::EX(ttl)),
            None,
            false,
        );
        if let Err(e) = redis.run("SET", set).await {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// The cached answer for `query` among the user pages seen by `scope`, or `load`'s, stored
    /// for the next caller. An entry counts only if it was stored at the current users version;
    /// `known_version` is that version when the caller already asked Redis for it during this
    /// request (authentication does), and then this process's copy answers without a round trip.
    /// Concurrent misses for one key in this process load once.
    pub async fn users_page<E, F, Fut>(
        &self,
        scope: &str,
        query: &str,
        known_version: Option<u64>,
        load: F,
    ) -> Result<(Bytes, CacheOutcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let counter = |outcome: CacheOutcome| {
            metrics()
                .cache
                .with_label_values(&["users", &outcome.as_str().to_lowercase()])
                .inc();
            outcome
        };
        if self.inner.ttl.is_zero() {
            return Ok((Bytes::from(load().await?), counter(CacheOutcome::Bypass)));
        }
        let key = format!("users:{scope}:{query}");
        if let Some(body) = known_version.and_then(|v| self.local(&key, v)) {
            return Ok((body, counter(CacheOutcome::Hit)));
        }
        let fresh = |found: Option<(u64, Option<Entry>)>| match found {
            Some((version, Some(entry))) if entry.version == version => Ok(entry.body),
            Some((version, _)) => Err(Some(version)),
            None => Err(None),
        };
        let version = match self.lookup(&key).await {
            Some((version, Some(entry))) if entry.version == version => {
                self.keep_local(&key, &entry);
                return Ok((entry.body, counter(CacheOutcome::Hit)));
            }
            Some((version, _)) => version,
            None => return Ok((Bytes::from(load().await?), counter(CacheOutcome::Bypass))),
        };
        let gate = lock(&self.inner.in_flight)
            .entry(key.clone())
            .or_default()
            .clone();
        let turn = gate.lock().await;
        // Whoever held the gate before us may have filled the entry.
        let version = match fresh(self.lookup(&key).await) {
            Ok(body) => return Ok((body, counter(CacheOutcome::Hit))),
            Err(v) => v.unwrap_or(version),
        };
        let result = match load().await {
            Ok(body) => {
                let entry = Entry {
                    version,
                    body: Bytes::from(body),
                };
                self.put(&key, &entry).await;
                Ok((entry.body, counter(CacheOutcome::Miss)))
            }
            Err(e) => Err(e),
        };
        drop(turn);
        {
            let mut in_flight = lock(&self.inner.in_flight);
            // The map holds one reference and we hold another: nobody else is waiting.
            if in_flight
                .get(&key)
                .is_some_and(|g| Arc::strong_count(g) <= 2)
            {
                in_flight.remove(&key);
            }
        }
        result
    }

    // ---- sessions --------------------------------------------------------------------------

    fn revocation_key(redis: &Redis, session: Uuid) -> String {
        redis.key(&format!("revoked:{}", session.simple()))
    }

    /// With Redis, whether the session is revoked and the current users version, in one round
    /// trip. `None` without Redis or when it cannot be asked: the caller checks the database.
    ///
    /// Checks from concurrent requests share Redis commands: one task sends whatever checks
    /// are waiting as one `MGET` (the version and each session's mark), and the checks that
    /// arrive meanwhile go in the next. Every check is still answered by a command sent after
    /// it was asked, so a revocation that finished before the request began is always seen;
    /// under load, a thousand requests cost a handful of commands and socket writes instead
    /// of a thousand of each.
    pub async fn session_state(&self, session: Uuid) -> Option<(bool, u64)> {
        let redis = self.inner.redis.as_ref()?;
        let checks = self.inner.session_checks.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(answer_session_checks(redis.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        // If the task is gone, the refused check drops `reply` and `answer` ends at once.
        let _ = checks.send((session, reply));
        let answer = answer
            .await
            .unwrap_or_else(|_| Err("the session check task stopped".into()));
        match answer {
            Ok(state) => Some(state),
            Err(e) => {
                self.forget_snapshots();
                static WARNED: AtomicU64 = AtomicU64::new(0);
                if crate::redis::should_warn(&WARNED) {
                    tracing::warn!(error = %e, "session checks fall back to the database: redis unavailable");
                }
                None
            }
        }
    }

    /// Marks sessions revoked for every instance; their access tokens are refused at once.
    pub async fn mark_revoked(&self, sessions: &[Uuid]) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let ttl = self.inner.revocation_ttl.as_secs().max(1) as i64 + 60;
        for &session in sessions {
            let set = redis.client().set::<(), _, _>(
                Self::revocation_key(redis, session),
                1,
                Some(Expiration::EX(ttl)),
                None,
                false,
            );
            if let Err(e) = redis.run("SET", set).await {
                // A timed-out command is still carried out once Redis catches up (the client
                // keeps it queued); a lost connection is made good on reconnection, from the
                // database.
                self.inner.missed.store(true, Ordering::Release);
                tracing::warn!(error = %e, %session, "could not mark a revoked session in redis");
            }
        }
    }

    /// The account remembered for `user_id` at this users version.
    pub fn snapshot<T: Clone + 'static>(&self, user_id: Uuid, version: u64) -> Option<T> {
        lock(&self.inner.snapshots)
            .get(&user_id)
            .filter(|(v, _)| *v == version)
            .and_then(|(_, u)| u.downcast_ref::<T>().cloned())
    }

    /// Remembers `user` (the account with this id) as read at this users version.
    pub fn remember<T: Send + Sync + 'static>(&self, user_id: Uuid, user: T, version: u64) {
        let mut snapshots = lock(&self.inner.snapshots);
        if snapshots.len() >= SNAPSHOTS {
            snapshots.clear();
        }
        snapshots.insert(user_id, (version, Arc::new(user)));
    }

    /// How many accounts `filter` selected at this users version, when this process counted
    /// them at it. Any write to users bumps the version, so a total remembered at the version a
    /// request saw is as fresh as a count the request makes itself; it holds whatever the
    /// page cache's TTL (`CACHE_TTL_SECONDS=0` included), and only with Redis, whose version
    /// every instance shares.
    pub fn total(&self, filter: &str, version: u64) -> Option<u64> {
        lock(&self.inner.totals)
            .get(filter)
            .filter(|(v, _)| *v == version)
            .map(|(_, total)| *total)
    }

    pub fn remember_total(&self, filter: &str, version: u64, total: u64) {
        let mut totals = lock(&self.inner.totals);
        if totals.len() >= TOTALS && !totals.contains_key(filter) {
            totals.retain(|_, (v, _)| *v >= version);
            if totals.len() >= TOTALS {
                totals.clear();
            }
        }
        totals.insert(filter.to_string(), (version, total));
    }

    fn forget_snapshots(&self) {
        lock(&self.inner.snapshots).clear();
        lock(&self.inner.totals).clear();
    }

    /// After Redis was away: every write it missed is made stale by a new version.
    pub async fn after_reconnect(&self) {
        self.inner.missed.store(false, Ordering::Release);
        self.invalidate_users().await;
    }

    /// Whether a write to users or a revocation could not be announced in Redis since the last
    /// reconnection.
    pub fn missed_writes(&self) -> bool {
        self.inner.missed.load(Ordering::Acquire)
    }
}

/// Answers session checks in batches until the cache is dropped: one `MGET` of the users
/// version and the revocation mark of every waiting session, then the next batch.
async fn answer_session_checks(redis: Redis, mut checks: mpsc::UnboundedReceiver<SessionCheck>) {
    let mut batch = Vec::with_capacity(CHECKS_PER_BATCH);
    while checks.recv_many(&mut batch, CHECKS_PER_BATCH).await > 0 {
        let mut keys = Vec::with_capacity(batch.len() + 1);
        keys.push(Cache::version_key(&redis));
        keys.extend(
            batch
                .iter()
                .map(|(session, _)| Cache::revocation_key(&redis, *session)),
        );
        match redis
            .run("MGET", redis.client().mget::<Vec<Value>, _>(keys))
            .await
        {
            Ok(values) => {
                let version = values.first().and_then(Value::as_u64).unwrap_or(0);
                for (i, (_, reply)) in batch.drain(..).enumerate() {
                    let revoked = values.get(i + 1).is_some_and(|v| !v.is_null());
                    // A request that gave up waiting does not need its answer.
                    let _ = reply.send(Ok((revoked, version)));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
