//! The user-list cache and the session-revocation marks: in Redis when it is enabled (shared by
//! every server instance), in this process's memory otherwise.
//!
//! Invalidation is by version, never by sweeping keys: every cached page's key carries the
//! current users version, and any write to users bumps it, so the next read misses. A bump that
//! cannot reach Redis is made good when Redis comes back: every instance bumps again on
//! (re)connection. Readers that cannot reach Redis go to the database.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fred::{
    interfaces::KeysInterface,
    types::{Expiration, Value},
};
use uuid::Uuid;

use crate::{entities::user, metrics::metrics, redis::Redis};

/// Pages kept in memory at most, without Redis.
const MEMORY_PAGES: usize = 2_000;
/// Signed-in users whose account rows are remembered between requests (with Redis).
const SNAPSHOTS: usize = 10_000;

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
    pages: Mutex<HashMap<String, (Instant, Arc<str>)>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    snapshots: Mutex<HashMap<Uuid, (u64, user::Model)>>,
}

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
                pages: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
                snapshots: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    fn version_key(redis: &Redis) -> String {
        redis.key("users:version")
    }

    /// The current users version; `None` when Redis is enabled but cannot be asked.
    async fn users_version(&self) -> Option<u64> {
        let Some(redis) = &self.inner.redis else {
            return Some(self.inner.version.load(Ordering::Acquire));
        };
        match redis
            .run(
                redis
                    .client()
                    .get::<Option<u64>, _>(Self::version_key(redis)),
            )
            .await
        {
            Ok(v) => Some(v.unwrap_or(0)),
            Err(e) => {
                self.forget_snapshots();
                tracing::warn!(error = %e, "cache bypassed: redis unavailable");
                None
            }
        }
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
            .run(redis.client().incr::<u64, _>(Self::version_key(redis)))
            .await
        {
            // Made good on reconnection, when every instance bumps the version.
            tracing::warn!(error = %e, "could not invalidate the user cache in redis");
        }
    }

    async fn get(&self, key: &str) -> Option<Arc<str>> {
        let Some(redis) = &self.inner.redis else {
            let pages = lock(&self.inner.pages);
            return pages
                .get(key)
                .filter(|(expires, _)| *expires > Instant::now())
                .map(|(_, v)| v.clone());
        };
        match redis
            .run(redis.client().get::<Option<String>, _>(redis.key(key)))
            .await
        {
            Ok(v) => v.map(Into::into),
            Err(e) => {
                tracing::debug!(error = %e, "cache read failed");
                None
            }
        }
    }

    async fn put(&self, key: &str, value: Arc<str>) {
        let Some(redis) = &self.inner.redis else {
            let mut pages = lock(&self.inner.pages);
            if pages.len() >= MEMORY_PAGES {
                let now = Instant::now();
                pages.retain(|_, (expires, _)| *expires > now);
                if pages.len() >= MEMORY_PAGES {
                    pages.clear();
                }
            }
            pages.insert(key.to_string(), (Instant::now() + self.inner.ttl, value));
            return;
        };
        let ttl = self.inner.ttl.as_secs().max(1) as i64;
        let set = redis.client().set::<(), _, _>(
            redis.key(key),
            value.as_ref(),
            Some(Expiration::EX(ttl)),
            None,
            false,
        );
        if let Err(e) = redis.run(set).await {
            tracing::debug!(error = %e, "cache write failed");
        }
    }

    /// The cached answer for `query` among the user pages seen by `scope`, or `load`'s, stored
    /// for the next caller. Concurrent misses for one key in this process load once.
    pub async fn users_page<E, F, Fut>(
        &self,
        scope: &str,
        query: &str,
        load: F,
    ) -> Result<(Arc<str>, CacheOutcome), E>
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
            return Ok((load().await?.into(), counter(CacheOutcome::Bypass)));
        }
        let Some(version) = self.users_version().await else {
            return Ok((load().await?.into(), counter(CacheOutcome::Bypass)));
        };
        let key = format!("users:v{version}:{scope}:{query}");
        if let Some(hit) = self.get(&key).await {
            return Ok((hit, counter(CacheOutcome::Hit)));
        }
        let gate = lock(&self.inner.in_flight)
            .entry(key.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        // Whoever held the gate before us may have filled the entry.
        if let Some(hit) = self.get(&key).await {
            return Ok((hit, counter(CacheOutcome::Hit)));
        }
        let loaded = load().await;
        let result = match loaded {
            Ok(value) => {
                let value: Arc<str> = value.into();
                self.put(&key, value.clone()).await;
                Ok((value, counter(CacheOutcome::Miss)))
            }
            Err(e) => Err(e),
        };
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
    pub async fn session_state(&self, session: Uuid) -> Option<(bool, u64)> {
        let redis = self.inner.redis.as_ref()?;
        let keys = vec![
            Self::revocation_key(redis, session),
            Self::version_key(redis),
        ];
        match redis.run(redis.client().mget::<Vec<Value>, _>(keys)).await {
            Ok(values) => {
                let revoked = values.first().is_some_and(|v| !v.is_null());
                let version = values.get(1).and_then(|v| v.as_u64()).unwrap_or(0);
                Some((revoked, version))
            }
            Err(e) => {
                self.forget_snapshots();
                tracing::warn!(error = %e, "session check falls back to the database: redis unavailable");
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
            if let Err(e) = redis.run(set).await {
                // Made good on reconnection, from the database.
                tracing::warn!(error = %e, %session, "could not mark a revoked session in redis");
            }
        }
    }

    /// The account row remembered for `user_id` at this users version.
    pub fn snapshot(&self, user_id: Uuid, version: u64) -> Option<user::Model> {
        lock(&self.inner.snapshots)
            .get(&user_id)
            .filter(|(v, _)| *v == version)
            .map(|(_, u)| u.clone())
    }

    pub fn remember(&self, user: &user::Model, version: u64) {
        let mut snapshots = lock(&self.inner.snapshots);
        if snapshots.len() >= SNAPSHOTS {
            snapshots.clear();
        }
        snapshots.insert(user.id, (version, user.clone()));
    }

    fn forget_snapshots(&self) {
        lock(&self.inner.snapshots).clear();
    }

    /// After Redis was away: every write it missed is made stale by a new version.
    pub async fn after_reconnect(&self) {
        self.invalidate_users().await;
    }
}
