//! Background jobs: the outbox and status store in one table, and worker heartbeats.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("jobs")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("name", 64))
                    .col(json("payload"))
                    .col(string_len("status", 16))
                    .col(integer("attempts").default(0))
                    .col(integer("max_attempts"))
                    .col(timestamp_with_time_zone("run_at"))
                    .col(json_null("result"))
                    .col(text_null("error"))
                    .col(uuid_null("owner_id"))
                    // Unique when set: a scheduler slot or any other idempotency key enqueues once.
                    .col(string_len_null("dedupe_key", 200).unique_key())
                    .col(string_len_null("locked_by", 100))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("started_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .col(timestamp_with_time_zone_null("published_at"))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("idx_jobs_status_run_at", &["status", "run_at"][..]),
            ("idx_jobs_published_run_at", &["published_at", "run_at"][..]),
            ("idx_jobs_owner", &["owner_id"][..]),
            ("idx_jobs_created_at", &["created_at"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table("jobs");
            for col in cols {
                index.col(*col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table("worker_heartbeats")
                    .if_not_exists()
                    .col(string_len("worker_id", 100).primary_key())
                    .col(string_len("hostname", 255))
                    .col(integer("pid"))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone("last_seen"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["worker_heartbeats", "jobs"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
