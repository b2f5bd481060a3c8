//! The finished jobs that retention prunes by age: succeeded and revoked ones, by when they
//! finished (failed ones already have `idx_jobs_failed`). Partial, like the other job indexes,
//! so that a job's earlier writes add no entry to it.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_jobs_finished ON jobs (finished_at) \
                 WHERE status IN ('SUCCESS', 'REVOKED')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_jobs_finished")
                    .table("jobs")
                    .to_owned(),
            )
            .await
    }
}
