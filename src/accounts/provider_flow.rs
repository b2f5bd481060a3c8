//! The web sign-ins in flight with OpenID Connect providers (the state, nonce and PKCE
//! verifier a sign-in started with, taken once by the browser that started it) and the nonces
//! of native apps' ID tokens, each accepted once.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use super::{IdentityError, service::*, tokens};
use crate::entities::{oidc_authorization, oidc_used_nonce};

/// How long a web sign-in may stay at the provider.
pub const AUTHORIZATION_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// A web sign-in started here, back from the provider.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    pub nonce: String,
    pub code_verifier: String,
    pub redirect_uri: String,
}

/// A web sign-in to send to the provider.
#[derive(Debug, Clone)]
pub struct NewAuthorization {
    pub state: String,
    pub nonce: String,
    pub code_challenge: String,
}

impl super::Identities<'_> {
    /// Records a web sign-in about to go to `provider`; `binding` is the browser's cookie
    /// value, so that the answer is taken only from the browser that asked.
    pub async fn begin_oidc_authorization(
        &self,
        provider: &str,
        redirect_uri: &str,
        binding: &str,
    ) -> Result<NewAuthorization, IdentityError> {
        let state = tokens::new_opaque_token();
        let nonce = tokens::new_opaque_token();
        let (code_verifier, code_challenge) = crate::oidc::pkce_pair();
        oidc_authorization::Entity::insert(oidc_authorization::ActiveModel {
            id: Set(Uuid::new_v4()),
            provider: Set(provider.to_string()),
            state_hash: Set(tokens::hash_token(&state)),
            binding_hash: Set(tokens::hash_token(binding)),
            nonce: Set(nonce.clone()),
            code_verifier: Set(code_verifier),
            redirect_uri: Set(redirect_uri.to_string()),
            created_at: Set(now()),
            expires_at: Set(after(AUTHORIZATION_TTL)),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(NewAuthorization {
            state,
            nonce,
            code_challenge,
        })
    }

    /// Takes the web sign-in `state` names, once: a second callback with the same state (a
    /// replay) finds nothing.
    pub async fn take_oidc_authorization(
        &self,
        provider: &str,
        state: &str,
        binding: Option<&str>,
    ) -> Result<PendingAuthorization, IdentityError> {
        let found = oidc_authorization::Entity::find()
            .filter(oidc_authorization::Column::StateHash.eq(tokens::hash_token(state)))
            .one(&self.db)
            .await?
            .ok_or(IdentityError::StateInvalid)?;
        let taken = oidc_authorization::Entity::delete_many()
            .filter(oidc_authorization::Column::Id.eq(found.id))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        let same_browser = binding.is_some_and(|b| tokens::hash_token(b) == found.binding_hash);
        if !taken || !same_browser || found.provider != provider {
            return Err(IdentityError::StateInvalid);
        }
        if found.expires_at <= now() {
            return Err(IdentityError::StateExpired);
        }
        Ok(PendingAuthorization {
            nonce: found.nonce,
            code_verifier: found.code_verifier,
            redirect_uri: found.redirect_uri,
        })
    }

    /// Notes the nonce of a native app's ID token as used until the token expires; a second
    /// sign-in with it is refused.
    pub async fn use_native_nonce(
        &self,
        provider: &str,
        nonce: &str,
        token_expires_at: i64,
    ) -> Result<(), IdentityError> {
        let expires_at = chrono::DateTime::from_timestamp(
            token_expires_at.saturating_add(crate::oidc::CLOCK_SKEW_SECS as i64),
            0,
        )
        .unwrap_or_else(now);
        let inserted = oidc_used_nonce::Entity::insert(oidc_used_nonce::ActiveModel {
            nonce_hash: Set(tokens::hash_token(&format!("{provider}\n{nonce}"))),
            expires_at: Set(expires_at),
        })
        .exec_without_returning(&self.db)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e).is_some() => Err(IdentityError::NonceReused),
            Err(e) => Err(e.into()),
        }
    }
}
