//! The signed-in user's own profile.

use sea_orm::{ActiveModelTrait, Set};

use super::{service::*, storage::*, validation};
use crate::{db, entities::user};

impl Accounts {
    pub async fn update_username(
        &self,
        principal: &Principal,
        username: &str,
    ) -> Result<user::Model> {
        let username = validation::validate_username(username).map_err(AccountError::Validation)?;
        let user = find_user(&self.db, principal.user.id).await?;
        if user.username == username {
            return Ok(user);
        }
        let mut active: user::ActiveModel = user.into();
        active.username = Set(username.clone());
        active.username_lower = Set(username.to_lowercase());
        active.updated_at = Set(now());
        let user = active
            .update(&self.db)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                Some(_) => AccountError::UsernameTaken,
                None => e.into(),
            })?;
        self.users_changed().await;
        Ok(user)
    }

    /// Creates the configured first superuser (verified) unless that email already exists.
    pub async fn ensure_first_superuser(&self) -> Result<Option<user::Model>> {
        let Some(first) = self.settings.auth.first_superuser.clone() else {
            return Ok(None);
        };
        let email = validation::normalise_email(&first.email)
            .map_err(|p| AccountError::Validation(vec![p]))?;
        if find_user_by_email(&self.db, &email).await?.is_some() {
            return Ok(None);
        }
        let (username, password) = (first.username, first.password);
        let hash = self.hasher.hash(password).await?;
        let user = insert_user(&self.db, &email, &username, hash, true, true).await?;
        self.audit(
            &self.db,
            Some(user.id),
            "superuser_created",
            &ClientInfo::default(),
            None,
        )
        .await?;
        self.users_changed().await;
        Ok(Some(user))
    }

    /// Creates a verified superuser after checking every account rule (operator CLI).
    pub async fn create_superuser(
        &self,
        email: &str,
        username: &str,
        password: String,
    ) -> Result<user::Model> {
        let (email, username) = self
            .check_new_account(&NewAccount {
                email: email.to_string(),
                username: username.to_string(),
                password: password.clone(),
            })
            .await?;
        let hash = self.hasher.hash(password).await?;
        let txn = db::begin_write(&self.db).await?;
        let user = insert_user(&txn, &email, &username, hash, true, true).await?;
        self.audit(
            &txn,
            Some(user.id),
            "superuser_created",
            &ClientInfo::default(),
            None,
        )
        .await?;
        txn.commit().await?;
        self.users_changed().await;
        Ok(user)
    }
}
