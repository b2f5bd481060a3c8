//! Sign-in with OpenID Connect providers: the provider identities linked to accounts, the
//! web sign-ins in flight (state, nonce, PKCE verifier) and the nonces native apps have used.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("identities")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    // The configured provider's name (`google`, `apple`, …).
                    .col(string_len("provider", 64))
                    // The provider's `sub`: stable per provider, never reassigned.
                    .col(string_len("subject", 255))
                    // The address the provider asserted at the last sign-in.
                    .col(string_len_null("email", 320))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("last_sign_in_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_identities_user")
                            .from("identities", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_identities_provider_subject")
                    .table("identities")
                    .col("provider")
                    .col("subject")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_identities_user")
                    .table("identities")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("oidc_authorizations")
                    .if_not_exists()
                    .col(pk_uuid("id"))
                    .col(string_len("provider", 64))
                    .col(string_len_uniq("state_hash", 64))
                    // Ties the sign-in to the browser that started it (a cookie's hash).
                    .col(string_len("binding_hash", 64))
                    .col(string_len("nonce", 64))
                    .col(string_len("code_verifier", 128))
                    .col(text("redirect_uri"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("oidc_used_nonces")
                    .if_not_exists()
                    // SHA-256 of provider and nonce: a native sign-in's token serves once.
                    .col(string_len("nonce_hash", 64).primary_key())
                    .col(timestamp_with_time_zone("expires_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["oidc_used_nonces", "oidc_authorizations", "identities"] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
