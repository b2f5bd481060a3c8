//! `totp_factors`: an account's TOTP secret, encrypted, and the newest step a code served for.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "totp_factors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    /// base64 of nonce ‖ AES-256-GCM ciphertext; never the secret itself.
    pub secret_ciphertext: String,
    pub created_at: DateTimeUtc,
    /// Null while set up but not confirmed with a first code.
    pub confirmed_at: Option<DateTimeUtc>,
    pub last_used_step: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
