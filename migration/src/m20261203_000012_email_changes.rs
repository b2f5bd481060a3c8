//! Changing an account's email address: a request confirmed from the new address, then
//! revertible from the old one for a while.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("email_changes")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(string_len("old_email", 320))
                    .col(string_len("new_email", 320))
                    // Mailed to the new address; proves the user receives mail there.
                    .col(string_len_uniq("confirm_token_hash", 64))
                    .col(timestamp_with_time_zone("confirm_expires_at"))
                    .col(timestamp_with_time_zone_null("confirmed_at"))
                    // Mailed to the old address once confirmed: puts it back.
                    .col(string_len_null("revert_token_hash", 64).unique_key())
                    .col(timestamp_with_time_zone_null("revert_expires_at"))
                    .col(timestamp_with_time_zone_null("reverted_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_email_changes_user")
                            .from("email_changes", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_email_changes_user")
                    .table("email_changes")
                    .col("user_id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("email_changes").if_exists().to_owned())
            .await
    }
}
