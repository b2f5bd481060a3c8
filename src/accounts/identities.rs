//! Signing in with OpenID Connect providers, as account rules: which account a verified
//! provider identity signs in to (found, linked or made), the one-time login codes handed to
//! web apps, the identities an account has, and a first password for an account a provider
//! made. The sign-ins in flight are `provider_flow`'s; the protocol is `crate::oidc`'s.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{Identity, User, passwords::PasswordHash, service::*, storage::*, tokens::Purpose};
use crate::values::{EmailAddress, Password, Username};
use crate::{
    db,
    entities::{View, identity, user},
    mail::Mail,
};

/// What a provider vouched for in a verified ID token.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
}

impl Accounts {
    async fn identity_account(
        &self,
        identity: &VerifiedIdentity,
        client: &ClientInfo,
    ) -> Result<user::Model, IdentityError> {
        match self.resolve_identity(identity, client).await {
            // Two first sign-ins of one person racing: the other one linked or made the
            // account a moment ago, so looking again finds it.
            Err(IdentityError::Account(AccountError::EmailTaken)) => {
                self.resolve_identity(identity, client).await
            }
            Err(IdentityError::Account(AccountError::Db(e)))
                if is_unique_violation(&e).is_some() =>
            {
                self.resolve_identity(identity, client).await
            }
            other => other,
        }
    }

    async fn resolve_identity(
        &self,
        identity: &VerifiedIdentity,
        client: &ClientInfo,
    ) -> Result<user::Model, IdentityError> {
        if let Some(linked) = identity::Entity::find()
            .filter(identity::Column::Provider.eq(&identity.provider))
            .filter(identity::Column::Subject.eq(&identity.subject))
            .one(&self.db)
            .await?
        {
            let user = find_user(&self.db, linked.user_id).await?;
            if user.is_deleted {
                return Err(AccountError::AccountDeleted.into());
            }
            identity::Entity::update_many()
                .col_expr(identity::Column::LastSignInAt, now().into())
                .col_expr(identity::Column::Email, identity.email.clone().into())
                .filter(identity::Column::Id.eq(linked.id))
                .exec(&self.db)
                .await?;
            return Ok(user);
        }
        let email = identity
            .email
            .as_deref()
            .filter(|_| identity.email_verified)
            .and_then(|e| EmailAddress::parse(e).ok())
            .ok_or(IdentityError::ProviderEmailUnverified)?;
        if let Some(existing) = find_user_by_email(&self.db, &email).await? {
            if existing.is_deleted {
                return Err(AccountError::AccountDeleted.into());
            }
            // No takeover through an address the account never proved it owns.
            if !existing.is_verified {
                return Err(IdentityError::AccountExistsUnverified);
            }
            let txn = db::begin_write(&self.db).await?;
            let id = self.insert_identity(&txn, existing.id, identity).await?;
            self.audit(
                &txn,
                Some(existing.id),
                AuditEvent::IdentityLinked,
                client,
                Some(serde_json::json!({"id": id, "provider": identity.provider})),
            )
            .await?;
            self.queue_mail(
                &txn,
                self.mails.compose(
                    &existing.email,
                    Mail::IdentityLinked {
                        username: &existing.username,
                        provider: &identity.provider,
                    },
                ),
            )
            .await?;
            self.commit_and_dispatch(txn).await?;
            return Ok(existing);
        }
        self.create_account_for_identity(identity, &email, client)
            .await
            .map_err(Into::into)
    }

    async fn create_account_for_identity(
        &self,
        identity: &VerifiedIdentity,
        email: &EmailAddress,
        client: &ClientInfo,
    ) -> Result<user::Model> {
        let mut attempt = 0;
        loop {
            let username = self.free_username(identity, email, attempt).await?;
            let txn = db::begin_write(&self.db).await?;
            let user = match insert_user(&txn, email, &username, PasswordHash::none(), false, true)
                .await
            {
                // Taken between the look-up and the insert: another name.
                Err(AccountError::UsernameTaken) if attempt < 5 => {
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            let id = self.insert_identity(&txn, user.id, identity).await?;
            self.audit(
                &txn,
                Some(user.id),
                AuditEvent::Register,
                client,
                Some(serde_json::json!({"provider": identity.provider, "identity_id": id})),
            )
            .await?;
            txn.commit().await?;
            self.users_changed().await;
            return Ok(user);
        }
    }

    async fn insert_identity(
        &self,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        identity: &VerifiedIdentity,
    ) -> Result<Uuid> {
        let id = Uuid::new_v4();
        identity::Entity::insert(identity::ActiveModel {
            id: Set(id),
            user_id: Set(user_id),
            provider: Set(identity.provider.clone()),
            subject: Set(identity.subject.clone()),
            email: Set(identity.email.clone()),
            created_at: Set(now()),
            last_sign_in_at: Set(now()),
        })
        .exec_without_returning(conn)
        .await?;
        Ok(id)
    }

    /// A username for a new account: the provider's preferred one or the address's local
    /// part, made to fit the rules, with a number added when it is taken.
    async fn free_username(
        &self,
        identity: &VerifiedIdentity,
        email: &EmailAddress,
        attempt: u32,
    ) -> Result<Username> {
        let local = email.as_str().split('@').next().unwrap_or_default();
        let base = username_base(identity.preferred_username.as_deref().unwrap_or(local));
        for n in attempt..attempt + 20 {
            let candidate = if n == 0 {
                base.clone()
            } else {
                let suffix = format!("-{}", rand::random_range(1000..100_000u32));
                format!("{}{suffix}", &base[..base.len().min(30 - suffix.len())])
            };
            let Ok(name) = Username::parse(&candidate) else {
                continue;
            };
            let taken = user::Entity::find()
                .filter(user::Column::UsernameLower.eq(name.as_str().to_lowercase()))
                .one(&self.db)
                .await?
                .is_some();
            if !taken {
                return Ok(name);
            }
        }
        Err(AccountError::UsernameTaken)
    }
}

impl super::Identities<'_> {
    /// The account `identity` signs in to: the one it is linked to; else the account with its
    /// (provider-verified) address, linked now if that account verified the address too;
    /// else a new, verified account without a password.
    pub async fn account_for_identity(
        &self,
        identity: &VerifiedIdentity,
        client: &ClientInfo,
    ) -> Result<User, IdentityError> {
        Ok(self.identity_account(identity, client).await?.view())
    }

    /// Signs in with a verified identity: its account (found, linked or made), then the
    /// session or, with a second factor on, `MfaRequired`.
    pub async fn sign_in_with_identity(
        &self,
        identity: &VerifiedIdentity,
        client: &ClientInfo,
    ) -> Result<TokenPair, IdentityError> {
        let user = self.identity_account(identity, client).await?;
        self.finish_sign_in(
            &user,
            client,
            serde_json::json!({"method": "oidc", "provider": identity.provider}),
        )
        .await
        .map_err(Into::into)
    }

    /// Hands a web app the account after a web sign-in: a one-time code (60 s) for
    /// `/auth/oidc/exchange`, so that no token travels in a URL.
    pub async fn issue_login_code(&self, user_id: Uuid) -> Result<String, IdentityError> {
        self.issue_one_time_token(&self.db, user_id, Purpose::OidcLogin)
            .await
            .map_err(Into::into)
    }

    /// Trades a login code for a session (or, with a second factor on, an `mfa_required`).
    pub async fn exchange_login_code(
        &self,
        code: &str,
        client: &ClientInfo,
    ) -> Result<TokenPair, IdentityError> {
        let txn = db::begin_write(&self.db).await?;
        let user_id = self
            .consume_one_time_token(&txn, code.trim(), Purpose::OidcLogin)
            .await?;
        txn.commit().await?;
        let user = find_user(&self.db, user_id).await?;
        if user.is_deleted {
            return Err(AccountError::AccountDeleted.into());
        }
        self.finish_sign_in(&user, client, serde_json::json!({"method": "oidc"}))
            .await
            .map_err(Into::into)
    }

    /// The provider identities linked to the caller's account, oldest first.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Identity>, IdentityError> {
        let linked = identity::Entity::find()
            .filter(identity::Column::UserId.eq(principal.user.id))
            .order_by_asc(identity::Column::CreatedAt)
            .all(&self.db)
            .await?;
        Ok(linked.into_iter().map(View::view).collect())
    }

    /// Unlinks one identity, unless it is the account's last way to sign in.
    pub async fn unlink_identity(
        &self,
        principal: &Principal,
        id: Uuid,
        client: &ClientInfo,
    ) -> Result<(), IdentityError> {
        let txn = db::begin_write(&self.db).await?;
        let user = find_user(&txn, principal.user.id).await?;
        let linked = identity::Entity::find()
            .filter(identity::Column::UserId.eq(user.id))
            .all(&txn)
            .await?;
        let target = linked
            .iter()
            .find(|i| i.id == id)
            .ok_or(AccountError::NotFound)?;
        if !user.has_password() && linked.len() == 1 {
            return Err(IdentityError::LastSignInMethod);
        }
        identity::Entity::delete_by_id(id).exec(&txn).await?;
        self.audit(
            &txn,
            Some(user.id),
            AuditEvent::IdentityUnlinked,
            client,
            Some(serde_json::json!({"id": id, "provider": target.provider})),
        )
        .await?;
        self.queue_mail(
            &txn,
            self.mails.compose(
                &user.email,
                Mail::IdentityUnlinked {
                    username: &user.username,
                    provider: &target.provider,
                },
            ),
        )
        .await?;
        self.commit_and_dispatch(txn).await.map_err(Into::into)
    }

    /// A first password for an account a provider made; sessions stay, a notice is mailed.
    pub async fn set_password(
        &self,
        principal: &Principal,
        new_password: String,
        client: &ClientInfo,
    ) -> Result<(), IdentityError> {
        let new_password =
            Password::parse("new_password", new_password).map_err(AccountError::Validation)?;
        if find_user(&self.db, principal.user.id).await?.has_password() {
            return Err(IdentityError::PasswordAlreadySet);
        }
        let hash = self.hasher.hash(&new_password).await?;
        let txn = db::begin_write(&self.db).await?;
        // Re-read in the transaction: two first passwords racing, the second is refused.
        let user = find_user(&txn, principal.user.id).await?;
        if user.has_password() {
            return Err(IdentityError::PasswordAlreadySet);
        }
        let mut active: user::ActiveModel = user.into();
        active.password_hash = Set(hash.into_string());
        active.updated_at = Set(now());
        let user = active.update(&txn).await?;
        self.audit(&txn, Some(user.id), AuditEvent::PasswordSet, client, None)
            .await?;
        self.queue_mail(&txn, self.password_changed_mail(&user))
            .await?;
        self.commit_and_dispatch(txn).await?;
        self.users_changed().await;
        Ok(())
    }
}

/// Letters, digits, `_` and `-` of `raw`, no doubled or edge separators, 3–24 characters.
fn username_base(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
        if out.len() >= 24 {
            break;
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    while out.len() < 3 {
        out.push_str(if out.is_empty() { "user" } else { "-user" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::username_base;
    use crate::values::Username;

    #[test]
    fn usernames_from_provider_names_follow_the_rules() {
        for (raw, want) in [
            ("jane.doe+news", "jane-doe-news"),
            ("__x__", "x-user"),
            ("", "user"),
            ("Ünïcödé", "n-c-d"),
            (
                "a-very-long-local-part-of-an-address",
                "a-very-long-local-part-o",
            ),
        ] {
            let got = username_base(raw);
            assert_eq!(got, want, "{raw}");
            Username::parse(&got).unwrap_or_else(|p| panic!("{raw} → {got}: {p:?}"));
        }
    }
}
