//! The signed-in user's own profile.

use sea_orm::{ActiveModelTrait, Set};

use super::User;
use super::{service::*, storage::*};
use crate::entities::{View, user};
use crate::values::Username;

impl super::Profile<'_> {
    pub async fn update_username(&self, principal: &Principal, username: &str) -> Result<User> {
        let username = Username::parse(username).map_err(AccountError::Validation)?;
        let user = find_user(&self.db, principal.user.id).await?;
        if user.username == username.as_str() {
            return Ok(user.view());
        }
        let mut active: user::ActiveModel = user.into();
        active.username_lower = Set(username.as_str().to_lowercase());
        active.username = Set(username.into_string());
        active.updated_at = Set(now());
        let user = active
            .update(&self.db)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                Some(_) => AccountError::UsernameTaken,
                None => e.into(),
            })?;
        self.users_changed().await;
        Ok(user.view())
    }
}
