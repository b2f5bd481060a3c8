//! Listings by creation time are ordered by `(created_at, id)` (the id breaks ties), and a
//! cursor continues after one such pair: an index on both answers page 10,000 as quickly as
//! page 1. It replaces the index on `created_at` alone, which is its prefix.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_users_created_at_id")
                    .table("users")
                    .col("created_at")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_created_at")
                    .table("users")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_users_created_at")
                    .table("users")
                    .col("created_at")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_created_at_id")
                    .table("users")
                    .to_owned(),
            )
            .await
    }
}
