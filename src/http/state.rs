//! The application state: every service a request handler (or a background task of the
//! server) can reach, built once at start from the settings.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    accounts::{Accounts, passwords::PasswordHasher},
    cache::Cache,
    compose::{build_cache, job_registry},
    config::Settings,
    db,
    jobs::{self, JobQueue, Jobs, Registry, Runner, rabbit::Publisher},
    mail::Mailer,
};

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: db::Connection,
    pub accounts: Accounts,
    /// Submitting, finding, cancelling and retrying jobs; `jobs.queue()` for enqueues inside
    /// a transaction.
    pub jobs: Jobs,
    pub registry: Registry,
    /// Set when jobs go through RabbitMQ.
    pub publisher: Option<Arc<Publisher>>,
    /// The user-page cache and session revocations: Redis when enabled, else memory.
    pub cache: Cache,
    pub limiter: crate::ratelimit::Limiter,
    /// WebSocket rooms, when `ENABLE_WEBSOCKETS` is on.
    pub hub: Option<crate::realtime::Hub>,
}

impl AppState {
    /// Connects to the database, applies migrations when `AUTO_MIGRATE` is on, and creates the
    /// first superuser when one is configured.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let db = db::connect(&settings.database).await?;
        if settings.database.auto_migrate {
            db::migrate(&db).await?;
        } else {
            db::require_migrated(&db).await?;
        }
        let hasher = PasswordHasher::new(settings.auth.password_hash_concurrency)?;
        let mailer = Mailer::new(&settings.mail)?;
        let jobs = JobQueue::new(settings.jobs.clone());
        let cache = build_cache(&settings).await?;
        let registry = job_registry(&db, &mailer, settings.clone(), &jobs, &cache);
        let publisher = settings
            .rabbitmq
            .enabled
            .then(|| Arc::new(Publisher::new(settings.rabbitmq.clone())));
        let limiter =
            crate::ratelimit::Limiter::new(cache.redis().cloned(), settings.rate_limit.fail_open);
        let mut accounts = Accounts::new(
            db.clone(),
            settings.clone(),
            hasher,
            jobs.clone(),
            cache.clone(),
        )?;
        if settings.rate_limit.enabled {
            accounts = accounts.throttling_logins(limiter.clone());
        }
        if let Some(redis) = cache.redis() {
            // Whatever Redis missed while it was away is made good when it returns.
            let accounts = accounts.clone();
            redis.on_reconnect(move || {
                let accounts = accounts.clone();
                async move {
                    accounts.cache().after_reconnect().await;
                    match accounts.resync_revocations().await {
                        Ok(n) => tracing::info!(sessions = n, "redis connected: cache version bumped, recent revocations marked"),
                        Err(e) => tracing::warn!(error = %e, "could not re-mark revoked sessions in redis"),
                    }
                }
            });
        }
        if let Some(user) = accounts.ensure_first_superuser().await? {
            tracing::info!(user_id = %user.id, "created the first superuser from FIRST_SUPERUSER_EMAIL");
        }
        let hub = settings.websockets.enabled.then(|| {
            crate::realtime::Hub::new(settings.websockets.clone(), cache.redis().cloned())
        });
        let jobs = Jobs::new(db.clone(), jobs, registry.clone());
        Ok(Self {
            settings,
            db,
            accounts,
            jobs,
            registry,
            publisher,
            limiter,
            hub,
            cache,
        })
    }

    /// Starts what runs beside the HTTP server: the outbox relay to RabbitMQ, or the in-process
    /// worker in embedded mode. Stops when `shutdown` is cancelled.
    pub fn spawn_background(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let wake = self.jobs.queue().wake_handle();
        // Other processes' enqueues (scheduler, admin CLI) wake this one through the database.
        let listener = jobs::listen(&self.db, wake.clone(), shutdown.clone());
        let background = match &self.publisher {
            Some(publisher) => tokio::spawn(jobs::rabbit::relay(
                self.db.clone(),
                publisher.clone(),
                wake,
                self.jobs.queue().hand_off(),
                shutdown,
            )),
            None => {
                let runner = Arc::new(
                    Runner::new(
                        self.db.clone(),
                        self.registry.clone(),
                        self.jobs.queue().settings().clone(),
                        jobs::worker_id("inprocess"),
                    )
                    .waking(wake.clone()),
                );
                tokio::spawn(jobs::local::run(
                    runner,
                    wake,
                    self.settings.jobs.serving(&jobs::Queue::ALL),
                    shutdown,
                    self.settings.http.shutdown_timeout,
                ))
            }
        };
        tokio::spawn(async move {
            let _ = background.await;
            if let Some(listener) = listener {
                let _ = listener.await;
            }
        })
    }
}
