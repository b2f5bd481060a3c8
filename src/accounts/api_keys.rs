//! API keys: `sk_` + 256 random bits, shown once, stored as a SHA-256 hash, limited to scopes.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};
use uuid::Uuid;

use super::audit::AuditEvent;
use super::{
    AccountError, ApiKey, ClientInfo, Credential, FieldProblem, Principal, Result, SignInError,
    tokens,
};
use crate::{
    db,
    entities::user,
    entities::{View, api_key},
};

pub const KEY_PREFIX: &str = "sk_";
pub use super::principal::{SCOPES, Scope};

/// Writing `last_used_at` on every call would turn reads into writes; once a minute is enough.
const LAST_USED_RESOLUTION: Duration = Duration::minutes(1);

pub struct NewApiKey {
    pub label: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn validate(new: &NewApiKey) -> Result<(String, String)> {
    let mut problems = Vec::new();
    let label = new.label.clone();
    if label.is_empty() || label.chars().count() > 100 {
        problems.push(FieldProblem::new(
            "label",
            "must be 1 to 100 characters long",
        ));
    }
    let mut scopes: Vec<&str> = Vec::new();
    for scope in &new.scopes {
        match Scope::parse(scope).map(Scope::as_str) {
            Some(s) if !scopes.contains(&s) => scopes.push(s),
            Some(_) => {}
            None => problems.push(FieldProblem::new(
                "scopes",
                format!("unknown scope {scope:?}; known: {}", SCOPES.join(", ")),
            )),
        }
    }
    if scopes.is_empty() && problems.iter().all(|p| p.field != "scopes") {
        problems.push(FieldProblem::new("scopes", "must name at least one scope"));
    }
    if new.expires_at.is_some_and(|at| at <= Utc::now()) {
        problems.push(FieldProblem::new("expires_at", "must be in the future"));
    }
    if problems.is_empty() {
        Ok((label, scopes.join(" ")))
    } else {
        Err(AccountError::Validation(problems))
    }
}

async fn insert(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    label: String,
    scopes: String,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(ApiKey, String)> {
    let raw = format!("{KEY_PREFIX}{}", tokens::new_opaque_token());
    let model = api_key::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user_id),
        label: Set(label),
        prefix: Set(raw.chars().take(11).collect()),
        key_hash: Set(tokens::hash_token(&raw)),
        scopes: Set(scopes),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok((model.view(), raw))
}

impl super::Accounts {
    async fn own_live_key(&self, user_id: Uuid, id: Uuid) -> Result<api_key::Model> {
        api_key::Entity::find_by_id(id)
            .one(self.db())
            .await?
            .filter(|k| k.user_id == user_id && k.revoked_at.is_none())
            .ok_or(AccountError::NotFound)
    }
}

impl super::ApiKeys<'_> {
    /// Creates a key for the signed-in user; the raw key is returned once and never stored.
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        new: NewApiKey,
        client: &ClientInfo,
    ) -> Result<(ApiKey, String)> {
        let (label, scopes) = validate(&new)?;
        let txn = db::begin_write(self.db()).await?;
        let created = insert(&txn, principal.user.id, label, scopes, new.expires_at).await?;
        self.audit_event(
            &txn,
            principal.user.id,
            AuditEvent::ApiKeyCreated,
            client,
            created.0.id,
        )
        .await?;
        txn.commit().await?;
        Ok(created)
    }

    pub async fn list_api_keys(&self, user_id: Uuid) -> Result<Vec<ApiKey>> {
        let keys = api_key::Entity::find()
            .filter(api_key::Column::UserId.eq(user_id))
            .order_by_desc(api_key::Column::CreatedAt)
            .all(self.db())
            .await?;
        Ok(keys.into_iter().map(View::view).collect())
    }

    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        id: Uuid,
        client: &ClientInfo,
    ) -> Result<()> {
        let key = self.own_live_key(principal.user.id, id).await?;
        let txn = db::begin_write(self.db()).await?;
        api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(api_key::Column::Id.eq(key.id))
            .exec(&txn)
            .await?;
        self.audit_event(
            &txn,
            principal.user.id,
            AuditEvent::ApiKeyRevoked,
            client,
            key.id,
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Replaces a key with a new one of the same label, scopes and expiry; the old one stops
    /// working at once.
    pub async fn rotate_api_key(
        &self,
        principal: &Principal,
        id: Uuid,
        client: &ClientInfo,
    ) -> Result<(ApiKey, String)> {
        let old = self.own_live_key(principal.user.id, id).await?;
        let txn = db::begin_write(self.db()).await?;
        let revoked = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
            .filter(api_key::Column::Id.eq(old.id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if revoked.rows_affected != 1 {
            return Err(AccountError::NotFound);
        }
        let created = insert(
            &txn,
            principal.user.id,
            old.label,
            old.scopes,
            old.expires_at,
        )
        .await?;
        self.audit_event(
            &txn,
            principal.user.id,
            AuditEvent::ApiKeyRotated,
            client,
            created.0.id,
        )
        .await?;
        txn.commit().await?;
        Ok(created)
    }

    /// Resolves a raw `sk_` key to its user and scopes.
    pub async fn authenticate_api_key(&self, raw: &str) -> Result<Principal, SignInError> {
        let key = api_key::Entity::find()
            .filter(api_key::Column::KeyHash.eq(tokens::hash_token(raw.trim())))
            .one(self.db())
            .await?
            .ok_or(AccountError::TokenInvalid)?;
        let now = Utc::now();
        if key.revoked_at.is_some() {
            return Err(SignInError::ApiKeyRevoked);
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(AccountError::TokenExpired.into());
        }
        let user = user::Entity::find_by_id(key.user_id)
            .one(self.db())
            .await?
            .filter(|u| !u.is_deleted)
            .ok_or(SignInError::ApiKeyRevoked)?;
        if key
            .last_used_at
            .is_none_or(|at| now - at > LAST_USED_RESOLUTION)
        {
            api_key::Entity::update_many()
                .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
                .filter(api_key::Column::Id.eq(key.id))
                .exec(self.db())
                .await?;
        }
        Ok(Principal {
            user: user.view(),
            credential: Credential::ApiKey {
                key_id: key.id,
                // A scope this version does not know grants nothing.
                scopes: key
                    .scopes
                    .split_whitespace()
                    .filter_map(Scope::parse)
                    .collect(),
            },
            users_version: None,
        })
    }
}
