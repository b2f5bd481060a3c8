//! The signed-in user's own profile.

use crate::entities::View;
use sea_orm::{ActiveModelTrait, Set};

use super::User;
use super::audit::AuditEvent;
use super::{service::*, storage::*};
use crate::values::Username;
use crate::{db, entities::user};

impl Accounts {
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

    /// Creates the configured first superuser (verified) unless that email already exists.
    pub async fn ensure_first_superuser(&self) -> Result<Option<User>> {
        let Some(first) = self.settings.auth.first_superuser.clone() else {
            return Ok(None);
        };
        // The settings hold parsed values: the first superuser obeys every account rule.
        if find_user_by_email(&self.db, &first.email).await?.is_some() {
            return Ok(None);
        }
        let hash = self.hasher.hash(&first.password).await?;
        let user = insert_user(&self.db, &first.email, &first.username, hash, true, true).await?;
        self.audit(
            &self.db,
            Some(user.id),
            AuditEvent::SuperuserCreated,
            &ClientInfo::default(),
            None,
        )
        .await?;
        self.users_changed().await;
        Ok(Some(user.view()))
    }

    /// Creates a verified superuser after checking every account rule (operator CLI).
    pub async fn create_superuser(
        &self,
        email: &str,
        username: &str,
        password: String,
    ) -> Result<User> {
        let (email, username, password) = self
            .check_new_account(NewAccount {
                email: email.to_string(),
                username: username.to_string(),
                password,
            })
            .await?;
        let hash = self.hasher.hash(&password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, true, true).await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::SuperuserCreated,
            &ClientInfo::default(),
            None,
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user.view())
    }
}
