//! The composition root: what every process assembles the same way from the settings. The
//! application's one list of jobs (`JOBS`), the shared cache, and the job registry, where jobs
//! meet the domains they act on. The server, the worker, the scheduler and the admin CLI all
//! build theirs here.

use std::sync::Arc;

use crate::{
    accounts,
    cache::Cache,
    config::{ConfigError, Settings},
    db, demo,
    jobs::{self, Deps, JobKind, JobQueue, Registration, Registry, retention::PruneJobs},
    mail::{Email, Mailer, Mails, TemplateError},
    redis::Redis,
};

/// Every kind of job the application runs, one line each: `jobs::job::<T>()` for a job,
/// `jobs::periodic::<T>()` for one the scheduler enqueues. Its type declares the rest (name,
/// queue, limits, schedule setting, handler); the registry, the queue routing, the settings
/// and the scheduler's list all come from here.
pub const JOBS: &[Registration] = &[
    jobs::job::<Email>(),
    jobs::job::<demo::TestTask>(),
    jobs::job::<demo::ProcessData>(),
    jobs::job::<demo::LongRunning>(),
    jobs::periodic::<accounts::PurgeDeletedAccounts>(),
    jobs::periodic::<accounts::SendDeletionReminders>(),
    jobs::periodic::<accounts::CleanupExpiredTokens>(),
    jobs::periodic::<PruneJobs>(),
];

/// What the settings need to know of the jobs: each kind's declaration, in the order of `JOBS`.
pub fn kinds() -> Vec<JobKind> {
    JOBS.iter().map(|r| r.kind).collect()
}

/// The settings of every process: the environment (and `.env`), read for this application's
/// jobs; each invalid setting on a line of its own on stderr and exit code 2.
pub fn settings_or_exit() -> Settings {
    match check_env() {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            std::process::exit(2);
        }
    }
}

/// The settings from the environment (and `.env`), or every invalid one; the mail templates
/// count among them (a broken one is a problem of `MAIL_TEMPLATES_DIR`).
pub fn check_env() -> Result<Settings, Vec<ConfigError>> {
    let settings = Settings::check_env(&kinds())?;
    mails(&settings).map_err(|e| vec![ConfigError::new("MAIL_TEMPLATES_DIR", e.to_string())])?;
    Ok(settings)
}

/// Which process is being assembled: what it shares and how it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP server: starts listening at once, Redis connecting in the background.
    Server,
    /// A `worker`: runs jobs from RabbitMQ.
    Worker,
    /// The `scheduler`: enqueues periodic jobs, announced to the processes that run them; it
    /// reads no cache.
    Scheduler,
    /// The `admin` CLI: its writes reach the servers' shared cache, its enqueues are
    /// announced.
    Cli,
}

/// What every process builds from its settings, once, in the same way: the four binaries (and
/// the server's `AppState`) call `App::build` and take what they need.
#[derive(Clone)]
pub struct App {
    pub settings: Arc<Settings>,
    pub db: db::Connection,
    /// The mail transport (SMTP, or the log).
    pub mailer: Mailer,
    /// The mails, from their templates.
    pub mails: Mails,
    /// The user-page cache and session revocations: Redis when enabled, else memory.
    pub cache: Cache,
    /// Where jobs are submitted.
    pub queue: JobQueue,
    /// The handler of every job in `JOBS`.
    pub registry: Registry,
}

impl App {
    /// Assembles a process of `role` over `db` (connected the way the process needs).
    pub async fn build(
        settings: Settings,
        db: db::Connection,
        role: Role,
    ) -> Result<Self, BuildError> {
        let settings = Arc::new(settings);
        let mailer = Mailer::new(&settings.mail)?;
        let mails = mails(&settings)?;
        let queue = JobQueue::new(settings.jobs.clone());
        let queue = match role {
            Role::Scheduler | Role::Cli => queue.announcing(),
            Role::Server | Role::Worker => queue,
        };
        let cache = match role {
            Role::Server => build_cache_connecting(&settings).await?,
            Role::Worker | Role::Cli => build_cache(&settings).await?,
            Role::Scheduler => Cache::new(
                None,
                settings.redis.cache_ttl,
                settings.auth.access_token_ttl,
            ),
        };
        let registry = job_registry(&db, &mailer, settings.clone(), &queue, &cache, &mails);
        Ok(Self {
            settings,
            db,
            mailer,
            mails,
            cache,
            queue,
            registry,
        })
    }

    /// The account services, hashing passwords `concurrency` at a time.
    pub fn accounts(&self, concurrency: usize) -> Result<accounts::Accounts, BuildError> {
        Ok(accounts::Accounts::new(
            self.db.clone(),
            self.settings.clone(),
            accounts::passwords::PasswordHasher::new(concurrency)?,
            self.queue.clone(),
            self.cache.clone(),
            self.mails.clone(),
        )?)
    }

    /// The job service: submit, find, cancel, retry; queue statistics.
    pub fn jobs(&self) -> crate::jobs::Jobs {
        crate::jobs::Jobs::new(self.db.clone(), self.queue.clone(), self.registry.clone())
    }
}

/// Why a process could not be assembled from its settings, or its start-up checks failed. Each
/// reads as the failure underneath it (with its causes).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error(transparent)]
    Accounts(#[from] accounts::AccountError),
    #[error(transparent)]
    Hasher(#[from] accounts::passwords::HashError),
    /// The HTTP client for the sign-in providers.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// The cache every process shares: on Redis when `ENABLE_REDIS` is on. Waits (briefly) for
/// Redis's first connection; `build_cache_connecting` does not.
pub async fn build_cache(settings: &Settings) -> Result<Cache, BuildError> {
    cache(settings, true).await
}

/// The cache, Redis connecting in the background: commands sent meanwhile wait for the
/// connection (within `REDIS_TIMEOUT`, after which callers go to the database as ever).
pub async fn build_cache_connecting(settings: &Settings) -> Result<Cache, BuildError> {
    cache(settings, false).await
}

async fn cache(settings: &Settings, wait: bool) -> Result<Cache, BuildError> {
    let redis = if settings.redis.enabled {
        Some(Redis::connect(&settings.redis, wait).await?)
    } else {
        None
    };
    Ok(Cache::new(
        redis,
        settings.redis.cache_ttl,
        settings.auth.access_token_ttl,
    ))
}

/// The mails every process sends, from the built-in templates or from `MAIL_TEMPLATES_DIR`;
/// each is rendered once here, so a broken template stops the process naming its file.
pub fn mails(settings: &Settings) -> Result<Mails, TemplateError> {
    Mails::load(
        &settings.project_name,
        settings.mail.templates_dir.as_deref(),
    )
}

/// The handler of every job in `JOBS`, with what the jobs work with: the database, the
/// mailer, the settings, the queue, the cache and the account deletion service.
pub fn job_registry(
    db: &db::Connection,
    mailer: &Mailer,
    settings: Arc<Settings>,
    queue: &JobQueue,
    cache: &Cache,
    mails: &Mails,
) -> Registry {
    let deletions = accounts::DeletionJobs::new(
        db.clone(),
        settings.clone(),
        queue.clone(),
        cache.clone(),
        mails.clone(),
    );
    let deps = Deps::default()
        .with(db.clone())
        .with(mailer.clone())
        .with(settings)
        .with(queue.clone())
        .with(cache.clone())
        .with(deletions);
    Registry::builder().jobs(JOBS, deps).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every job the settings know, periodic ones included, has a handler in the registry the
    /// processes build, and each is routed to the queue its type declares.
    #[tokio::test]
    async fn every_job_has_a_handler_and_its_queue() {
        let settings = Settings::from_lookup(|_| None, &kinds()).unwrap();
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let mailer = Mailer::new(&settings.mail).unwrap();
        let queue = JobQueue::new(settings.jobs.clone());
        let cache = Cache::new(
            None,
            settings.redis.cache_ttl,
            settings.auth.access_token_ttl,
        );
        let jobs = settings.jobs.clone();
        let mails = Mails::built_in("Keel");
        let registry = job_registry(&db, &mailer, Arc::new(settings), &queue, &cache, &mails);
        assert_eq!(jobs.kinds.len(), JOBS.len());
        assert_eq!(jobs.schedules.len(), 4);
        for kind in &jobs.kinds {
            assert!(
                registry.get(kind.name).is_some(),
                "no handler for {}",
                kind.name
            );
        }
        let names: std::collections::HashSet<_> = jobs.kinds.iter().map(|k| k.name).collect();
        assert_eq!(names.len(), JOBS.len(), "two kinds share a name");
        use crate::jobs::Queue;
        assert_eq!(jobs.queue_of("send_email"), Queue::Email);
        assert_eq!(jobs.queue_of("process_data"), Queue::Default);
        assert_eq!(jobs.queue_of("prune_jobs"), Queue::Maintenance);
        assert_eq!(jobs.queue_of("something_new"), Queue::Default);
    }
}
