//! `one_time_tokens`: hashed mail-link tokens, each for one purpose, used once.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "one_time_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub purpose: Purpose,
    #[sea_orm(unique)]
    pub token_hash: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// What a one-time token may be used for; a token minted for one purpose never serves another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
pub enum Purpose {
    #[sea_orm(string_value = "verify_email")]
    VerifyEmail,
    #[sea_orm(string_value = "reset_password")]
    ResetPassword,
    /// Confirms a requested account deletion.
    #[sea_orm(string_value = "confirm_deletion")]
    ConfirmDeletion,
    /// Cancels a scheduled account deletion; mailed with the confirmation and each reminder.
    #[sea_orm(string_value = "cancel_deletion")]
    CancelDeletion,
    /// Handed to the web app after an OpenID Connect sign-in, for `/auth/oidc/exchange`.
    #[sea_orm(string_value = "oidc_login")]
    OidcLogin,
}
