//! Limits on when jobs start: a job's `concurrency_key` (at most `JOB_KEY_CONCURRENCY` jobs of
//! one key run at once), why a job waits (`waiting_for`: the limit that holds it back), and
//! `job_limits`, one row per rate-limited queue holding the time its next job may start (so the
//! rate holds across workers and their restarts). Running jobs are counted by queue and by key
//! through partial indexes over the running ones only.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const RUNNING: [(&str, &str); 2] = [
    ("idx_jobs_running_queue", "queue"),
    ("idx_jobs_running_key", "concurrency_key"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for column in [
            string_len_null("concurrency_key", 128),
            string_len_null("waiting_for", 32),
        ] {
            manager
                .alter_table(Table::alter().table("jobs").add_column(column).to_owned())
                .await?;
        }
        let db = manager.get_connection();
        for (name, column) in RUNNING {
            db.execute_unprepared(&format!(
                "CREATE INDEX {name} ON jobs ({column}) WHERE status = 'STARTED'"
            ))
            .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("job_limits")
                    .col(string_len("name", 64).primary_key())
                    .col(timestamp_with_time_zone("next_start"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("job_limits").to_owned())
            .await?;
        for (name, _) in RUNNING {
            manager
                .drop_index(Index::drop().name(name).table("jobs").to_owned())
                .await?;
        }
        for column in ["waiting_for", "concurrency_key"] {
            manager
                .alter_table(Table::alter().table("jobs").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
