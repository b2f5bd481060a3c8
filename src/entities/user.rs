//! `users`: the accounts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub email: String,
    pub username: String,
    #[sea_orm(unique)]
    pub username_lower: String,
    pub password_hash: String,
    pub is_superuser: bool,
    pub is_verified: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTimeUtc>,
    pub deletion_scheduled_for: Option<DateTimeUtc>,
    pub deletion_requested_at: Option<DateTimeUtc>,
    pub deletion_reminder_days: Option<i32>,
    pub deletion_reason: Option<String>,
    pub deleted_by: Option<Uuid>,
    /// A password sign-in needs a second factor (a confirmed TOTP factor exists).
    pub mfa_enabled: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::session::Entity")]
    Session,
}

impl Related<super::session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Session.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// Accounts made by a provider sign-in have no password until they set one (stored as an
    /// empty hash, which no password verifies against).
    pub fn has_password(&self) -> bool {
        !self.password_hash.is_empty()
    }
}
