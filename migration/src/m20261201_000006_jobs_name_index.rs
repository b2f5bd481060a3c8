//! The latest job of a given name (the last firing of each periodic job, for `admin stats`) is
//! read from the end of an index on `(name, created_at)`, however many jobs were ever written.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_name_created_at")
                    .table("jobs")
                    .col("name")
                    .col("created_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_jobs_name_created_at")
                    .table("jobs")
                    .to_owned(),
            )
            .await
    }
}
