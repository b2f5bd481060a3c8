//! `email_changes`: requested, confirmed and reverted changes of an account's email address.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub old_email: String,
    pub new_email: String,
    #[sea_orm(unique)]
    pub confirm_token_hash: String,
    pub confirm_expires_at: DateTimeUtc,
    pub confirmed_at: Option<DateTimeUtc>,
    #[sea_orm(unique)]
    pub revert_token_hash: Option<String>,
    pub revert_expires_at: Option<DateTimeUtc>,
    pub reverted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
