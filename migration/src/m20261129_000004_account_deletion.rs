//! Account deletion: the request and its reminders, and who soft-deleted an account and why.
//!
//! One column per `ALTER TABLE`: SQLite accepts only one change per statement.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const COLUMNS: [&str; 4] = [
    "deletion_requested_at",
    "deletion_reminder_days",
    "deletion_reason",
    "deleted_by",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let add = |column: ColumnDef| Table::alter().table("users").add_column(column).to_owned();
        // When the user asked to delete the account (cleared by cancelling).
        manager
            .alter_table(add(timestamp_with_time_zone_null("deletion_requested_at")))
            .await?;
        // The most urgent reminder already mailed for the current schedule (days before), so that
        // each reminder goes out once however often the reminder job runs.
        manager
            .alter_table(add(integer_null("deletion_reminder_days")))
            .await?;
        manager
            .alter_table(add(string_len_null("deletion_reason", 500)))
            .await?;
        manager.alter_table(add(uuid_null("deleted_by"))).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_users_deletion_scheduled_for")
                    .table("users")
                    .col("deletion_scheduled_for")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_deletion_scheduled_for")
                    .table("users")
                    .to_owned(),
            )
            .await?;
        for column in COLUMNS {
            manager
                .alter_table(Table::alter().table("users").drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
