//! What every process assembles the same way from the settings: the shared cache, and the
//! job registry, the one place where jobs meet the domains they act on. The server, the worker
//! and the admin CLI all build theirs here.

use std::sync::Arc;

use crate::{
    accounts,
    cache::Cache,
    config::Settings,
    db,
    jobs::{JobError, JobQueue, Registry, retention, tasks},
    mail::{self, Mailer},
    redis::Redis,
};

/// The cache every process shares: on Redis when `ENABLE_REDIS` is on. Waits (briefly) for
/// Redis's first connection; `build_cache_connecting` does not.
pub async fn build_cache(settings: &Settings) -> anyhow::Result<Cache> {
    cache(settings, true).await
}

/// The cache, Redis connecting in the background: commands sent meanwhile wait for the
/// connection (within `REDIS_TIMEOUT`, after which callers go to the database as ever).
pub async fn build_cache_connecting(settings: &Settings) -> anyhow::Result<Cache> {
    cache(settings, false).await
}

async fn cache(settings: &Settings, wait: bool) -> anyhow::Result<Cache> {
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

/// Every kind of job and its handler: the one place where jobs meet the domains they act on.
pub fn job_registry(
    db: &db::Connection,
    mailer: &Mailer,
    settings: Arc<Settings>,
    queue: &JobQueue,
    cache: &Cache,
) -> Registry {
    let mailer = mailer.clone();
    let db = db.clone();
    let pruning_db = db.clone();
    let retention_settings = settings.jobs.clone();
    let deletions = accounts::DeletionJobs::new(db.clone(), settings, queue.clone(), cache.clone());
    let reminders = deletions.clone();
    Registry::builder()
        .register_sensitive(
            mail::SEND_EMAIL,
            move |ctx| mail::send_email_job(mailer.clone(), ctx),
            mail::scrub_email_payload,
        )
        .register(tasks::TEST_TASK, tasks::test_task)
        .register(tasks::PROCESS_DATA, tasks::process_data)
        .register(tasks::LONG_RUNNING, tasks::long_running)
        .register(accounts::CLEANUP_EXPIRED_TOKENS, move |_| {
            let db = db.clone();
            async move { accounts::cleanup_expired_tokens(&db).await }
        })
        .register(accounts::PURGE_DELETED_ACCOUNTS, move |_| {
            let deletions = deletions.clone();
            async move { deletions.purge().await }
        })
        .register(accounts::SEND_DELETION_REMINDERS, move |_| {
            let reminders = reminders.clone();
            async move { reminders.reminders().await }
        })
        .register(retention::PRUNE_JOBS, move |_| {
            let (db, jobs) = (pruning_db.clone(), retention_settings.clone());
            async move {
                let pruned = retention::prune(&db, jobs.retention_success, jobs.retention_failed)
                    .await
                    .map_err(|e| JobError::retry(crate::telemetry::cause_chain(&e)))?;
                Ok(serde_json::json!(pruned))
            }
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every periodic job the settings name has a handler in the registry the processes build;
    /// a rename on one side only would leave a schedule firing a job nobody runs.
    #[tokio::test]
    async fn every_periodic_job_has_a_handler() {
        let settings = Settings::from_lookup(|_| None).unwrap();
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        let mailer = Mailer::new(&settings.mail).unwrap();
        let queue = JobQueue::new(settings.jobs.clone());
        let cache = Cache::new(
            None,
            settings.redis.cache_ttl,
            settings.auth.access_token_ttl,
        );
        let registry = job_registry(&db, &mailer, Arc::new(settings), &queue, &cache);
        for periodic in crate::config::PERIODIC {
            assert!(
                registry.get(periodic.name).is_some(),
                "no handler for {}",
                periodic.name
            );
        }
    }
}
