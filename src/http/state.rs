//! The application state: every service a request handler (or a background task of the
//! server) can reach, built once at start from the settings.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    accounts::Accounts,
    app::{App, BuildError, Role},
    cache::Cache,
    config::Settings,
    db,
    http::startup::Startup,
    jobs::{self, Jobs, Registry, Runner, rabbit::Publisher},
    mail::{Mailer, Mails},
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
    /// Whether the start-up checks have passed (`prepare`).
    pub startup: Startup,
    /// The OpenID Connect providers (`OIDC_PROVIDERS`), with their cached metadata and keys.
    pub oidc: crate::oidc::Oidc,
    /// The mail transport, for the health report (mails themselves go through jobs).
    pub mailer: Mailer,
    /// The mails, from their templates.
    pub mails: Mails,
}

impl AppState {
    /// Connects to the database, applies migrations when `AUTO_MIGRATE` is on, and creates the
    /// first superuser when one is configured.
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        let state = Self::assemble(settings).await?;
        state.prepare().await?;
        Ok(state)
    }

    /// Everything `build` makes, without waiting for the database or Redis: a PostgreSQL pool
    /// opens its first connection when first used, Redis connects in the background. The
    /// server listens at once and runs `prepare` beside it.
    pub async fn assemble(settings: Settings) -> Result<Self, BuildError> {
        let db = db::connect_lazy(&settings.database).await?;
        let app = App::build(settings, db, Role::Server).await?;
        let App {
            settings,
            db,
            mailer,
            mails,
            cache,
            queue: jobs,
            registry,
        } = app.clone();
        let publisher = settings
            .rabbitmq
            .enabled
            .then(|| Arc::new(Publisher::new(settings.rabbitmq.clone())));
        let limiter = crate::ratelimit::Limiter::new(
            cache.redis().cloned(),
            settings.rate_limit.fail_open,
            crate::ratelimit::Rules::new(&settings.rate_limit.budgets),
        );
        let mut accounts = app.accounts(settings.auth.password_hash_concurrency)?;
        if settings.rate_limit.enabled {
            accounts = accounts.throttling_logins(limiter.clone());
        }
        if let Some(redis) = cache.redis().cloned() {
            // Whatever Redis missed while it was away is made good when it returns. Redis
            // connects in the background: the first connection makes good only what this
            // process failed to write before it (the other instances' caches stay warm).
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let _ = fred::interfaces::ClientLike::wait_for_connect(redis.client()).await;
                let resync = |accounts: Accounts| async move {
                    accounts.cache().after_reconnect().await;
                    match accounts.resync_revocations().await {
                        Ok(n) => tracing::info!(
                            sessions = n,
                            "redis connected: cache version bumped, recent revocations marked"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not re-mark revoked sessions in redis")
                        }
                    }
                };
                let listener = accounts.clone();
                redis.on_reconnect(move || resync(listener.clone()));
                if accounts.cache().missed_writes() {
                    resync(accounts).await;
                }
            });
        }
        let hub = settings.websockets.enabled.then(|| {
            crate::realtime::Hub::new(settings.websockets.clone(), cache.redis().cloned())
        });
        let jobs = Jobs::new(db.clone(), jobs, registry.clone());
        let oidc = crate::oidc::Oidc::new(&settings.oidc)?;
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
            startup: Startup::new(),
            oidc,
            mailer,
            mails,
        })
    }

    /// The start-up checks: the database answers (within `DATABASE_CONNECT_TIMEOUT`), its
    /// schema is current (or is migrated, with `AUTO_MIGRATE`), the first superuser exists when
    /// one is configured. Requests wait for them; their outcome is `startup`'s.
    pub async fn prepare(&self) -> Result<(), BuildError> {
        let outcome = self.checks().await;
        self.startup.finish(
            outcome
                .as_ref()
                .map(|_| ())
                .map_err(|e| crate::telemetry::cause_chain(e)),
        );
        outcome
    }

    async fn checks(&self) -> Result<(), BuildError> {
        let settings = &self.settings.database;
        db::wait_connected(&self.db, settings).await?;
        if settings.auto_migrate {
            db::migrate(&self.db).await?;
        } else {
            db::wait_for_schema(&self.db, settings.schema_wait).await?;
        }
        if let Some(user) = self.accounts.admin().ensure_first_superuser().await? {
            tracing::info!(user_id = %user.id, "created the first superuser from FIRST_SUPERUSER_EMAIL");
        }
        Ok(())
    }

    /// Starts what runs beside the HTTP server: the outbox relay to RabbitMQ, or the in-process
    /// worker in embedded mode. Stops when `shutdown` is cancelled.
    /// They start once the start-up checks have passed (never, should they fail).
    pub fn spawn_background(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                ready = state.startup.wait() => if ready.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let _ = state.start_background(shutdown).await;
        })
    }

    fn start_background(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
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
