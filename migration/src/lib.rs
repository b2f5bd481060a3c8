//! Keel's schema migrations. Every migration here must run on both PostgreSQL and SQLite, so only
//! portable column types and constraints are used (no Postgres-only types; a partial index's
//! predicate is plain SQL both accept).
pub use sea_orm_migration::prelude::*;

mod m20261129_000001_accounts;
mod m20261129_000002_jobs;
mod m20261129_000003_api_keys;
mod m20261129_000004_account_deletion;
mod m20261129_000005_live_sessions_index;
mod m20261201_000006_jobs_name_index;
mod m20261201_000007_jobs_partial_indexes;
mod m20261201_000008_jobs_finished_index;
mod m20261201_000009_job_queues;
mod m20261202_000010_users_listing_index;
mod m20261203_000011_mfa;
mod m20261203_000012_email_changes;
mod m20261203_000013_oidc;
mod m20261207_000014_job_origin;
mod m20261207_000015_job_limits;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_accounts::Migration),
            Box::new(m20261129_000002_jobs::Migration),
            Box::new(m20261129_000003_api_keys::Migration),
            Box::new(m20261129_000004_account_deletion::Migration),
            Box::new(m20261129_000005_live_sessions_index::Migration),
            Box::new(m20261201_000006_jobs_name_index::Migration),
            Box::new(m20261201_000007_jobs_partial_indexes::Migration),
            Box::new(m20261201_000008_jobs_finished_index::Migration),
            Box::new(m20261201_000009_job_queues::Migration),
            Box::new(m20261202_000010_users_listing_index::Migration),
            Box::new(m20261203_000011_mfa::Migration),
            Box::new(m20261203_000012_email_changes::Migration),
            Box::new(m20261203_000013_oidc::Migration),
            Box::new(m20261207_000014_job_origin::Migration),
            Box::new(m20261207_000015_job_limits::Migration),
        ]
    }
}
