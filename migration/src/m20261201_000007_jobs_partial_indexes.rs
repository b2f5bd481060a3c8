//! Indexes over the few jobs that move instead of over every job ever run. Each job's row is
//! written four times on its way to SUCCESS, and with a status column in a full index every
//! write added an entry to every index. Partial indexes take entries only for the rows their
//! predicate holds: waiting jobs (what the relay and the in-process worker look for), running
//! ones (orphan recovery) and failed ones (the dead letters). The predicates are plain SQL that
//! PostgreSQL and SQLite both accept; queries that should use them spell the same literals.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PARTIAL: [(&str, &str, &str); 3] = [
    (
        "idx_jobs_waiting",
        "run_at",
        "status IN ('PENDING', 'RETRY')",
    ),
    ("idx_jobs_running", "started_at", "status = 'STARTED'"),
    ("idx_jobs_failed", "finished_at", "status = 'FAILURE'"),
];

const REPLACED: [(&str, [&str; 2]); 2] = [
    ("idx_jobs_status_run_at", ["status", "run_at"]),
    ("idx_jobs_published_run_at", ["published_at", "run_at"]),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in REPLACED {
            manager
                .drop_index(Index::drop().name(name).table("jobs").to_owned())
                .await?;
        }
        let db = manager.get_connection();
        for (name, column, predicate) in PARTIAL {
            db.execute_unprepared(&format!(
                "CREATE INDEX {name} ON jobs ({column}) WHERE {predicate}"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _, _) in PARTIAL {
            manager
                .drop_index(Index::drop().name(name).table("jobs").to_owned())
                .await?;
        }
        for (name, columns) in REPLACED {
            let mut index = Index::create();
            index.name(name).table("jobs");
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}
