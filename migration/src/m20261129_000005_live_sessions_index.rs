//! Live sessions are looked up by user and `revoked_at IS NULL` on every login and revocation;
//! an index on both keeps that proportional to the live sessions, not to every session the user
//! ever had. It replaces the index on `user_id` alone, which is its prefix.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_user_revoked")
                    .table("sessions")
                    .col("user_id")
                    .col("revoked_at")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_user")
                    .table("sessions")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_sessions_user")
                    .table("sessions")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_user_revoked")
                    .table("sessions")
                    .to_owned(),
            )
            .await
    }
}
