//! Queues, priorities, unique keys and progress for jobs.
//!
//! Every job gets the queue its name is routed to (the table is `keel::jobs::queues::ROUTES`;
//! a migration keeps its own copy, as the schema of its day), a priority (5 unless submitted
//! with another) and room for a unique key and for the progress its handler reports.
//!
//! Upgrading a running deployment: jobs still waiting were published to the old single queue.
//! They are marked unpublished, so the relay publishes them again to their own queues; a copy
//! still in the old queue is routed through the outbox too by the workers (and skipped by the
//! runner if it already ran).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The jobs outside `default`, the column's default.
const ROUTES: [(&str, &str); 5] = [
    ("send_email", "email"),
    ("purge_deleted_accounts", "maintenance"),
    ("send_deletion_reminders", "maintenance"),
    ("cleanup_expired_tokens", "maintenance"),
    ("prune_jobs", "maintenance"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for column in [
            string_len("queue", 32).default("default").to_owned(),
            integer("priority").default(5).to_owned(),
            string_len_null("unique_key", 128).to_owned(),
            json_null("progress").to_owned(),
        ] {
            manager
                .alter_table(Table::alter().table("jobs").add_column(column).to_owned())
                .await?;
        }
        let db = manager.get_connection();
        for (name, queue) in ROUTES {
            db.execute_unprepared(&format!(
                "UPDATE jobs SET queue = '{queue}' WHERE name = '{name}'"
            ))
            .await?;
        }
        db.execute_unprepared(
            "UPDATE jobs SET published_at = NULL WHERE status IN ('PENDING', 'RETRY')",
        )
        .await?;
        // What the in-process worker takes next from a queue: the highest priority, then the
        // earliest due. Partial, like the other job indexes: only waiting jobs have entries.
        db.execute_unprepared(
            "CREATE INDEX idx_jobs_queue_waiting ON jobs (queue, priority DESC, run_at) \
             WHERE status IN ('PENDING', 'RETRY')",
        )
        .await?;
        // One unfinished job per name and unique key; a finished one frees the key.
        db.execute_unprepared(
            "CREATE UNIQUE INDEX idx_jobs_unique_active ON jobs (name, unique_key) \
             WHERE unique_key IS NOT NULL AND status IN ('PENDING', 'STARTED', 'RETRY')",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in ["idx_jobs_unique_active", "idx_jobs_queue_waiting"] {
            manager
                .drop_index(Index::drop().name(index).table("jobs").to_owned())
                .await?;
        }
        for column in ["progress", "unique_key", "priority", "queue"] {
            manager
                .alter_table(Table::alter().table("jobs").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
