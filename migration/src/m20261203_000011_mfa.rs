//! Two-factor sign-in: a TOTP factor per account (its secret encrypted), single-use recovery
//! codes (hashed), and the short-lived challenges a password sign-in opens when a factor is on.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn user_fk(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_user"))
        .from(table, "user_id")
        .to("users", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Whether a password sign-in needs a second factor: read with every account row.
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .add_column(boolean("mfa_enabled").default(false))
                    .to_owned(),
            )
            .await?;
        // One factor per account. Set up but unconfirmed while `confirmed_at` is null;
        // `last_used_step` is the newest 30-second step a code was accepted for, so that no
        // code serves twice.
        manager
            .create_table(
                Table::create()
                    .table("totp_factors")
                    .if_not_exists()
                    .col(uuid("user_id").primary_key())
                    .col(text("secret_ciphertext"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("confirmed_at"))
                    .col(big_integer_null("last_used_step"))
                    .foreign_key(&mut user_fk("totp_factors"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("recovery_codes")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(string_len_uniq("code_hash", 64))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("used_at"))
                    .foreign_key(&mut user_fk("recovery_codes"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_recovery_codes_user")
                    .table("recovery_codes")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("mfa_challenges")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(string_len_uniq("token_hash", 64))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(integer("failed_attempts").default(0))
                    .col(timestamp_with_time_zone_null("used_at"))
                    .foreign_key(&mut user_fk("mfa_challenges"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mfa_challenges_user")
                    .table("mfa_challenges")
                    .col("user_id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["mfa_challenges", "recovery_codes", "totp_factors"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .drop_column("mfa_enabled")
                    .to_owned(),
            )
            .await
    }
}
