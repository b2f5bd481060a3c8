//! The schemas of `/auth/oidc` and `/auth/identities`: what a provider posts back, what the
//! sign-in exchanges take, and an account's provider identities.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde::Deserialize;
use uuid::Uuid;

use crate::accounts::Identity;

/// What a provider sends back with `response_mode=form_post`.
#[derive(Object, Deserialize, Debug)]
pub struct CallbackForm {
    #[oai(nullable)]
    pub code: Option<String>,
    #[oai(nullable)]
    pub state: Option<String>,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub error_description: Option<String>,
    /// Apple sends the name once, as JSON, on the first sign-in; it is not used.
    #[oai(nullable)]
    pub user: Option<String>,
}

#[derive(Object, Debug)]
pub struct ExchangeRequest {
    /// The `login_code` the callback added to the redirect URI (single use, 60 seconds).
    #[oai(validator(min_length = 1, max_length = 128))]
    pub login_code: String,
}

#[derive(Object, Debug)]
pub struct NativeTokenRequest {
    /// The ID token the app got from the provider's SDK.
    #[oai(validator(min_length = 1, max_length = 16384))]
    pub id_token: String,
    /// The raw nonce the app generated and gave the SDK (the token may carry it as is or as
    /// its SHA-256 in hex). Each serves one sign-in.
    #[oai(validator(min_length = 16, max_length = 256))]
    pub nonce: String,
}

#[derive(Object, Debug)]
pub struct IdentityOut {
    pub id: Uuid,
    /// The provider's name as configured (`google`, `apple`, …).
    pub provider: String,
    /// The address the provider asserted at the last sign-in.
    #[oai(nullable)]
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: DateTime<Utc>,
}

impl From<Identity> for IdentityOut {
    fn from(i: Identity) -> Self {
        Self {
            id: i.id,
            provider: i.provider,
            email: i.email,
            created_at: i.created_at,
            last_sign_in_at: i.last_sign_in_at,
        }
    }
}

#[derive(Object, Debug)]
pub struct IdentityList {
    pub identities: Vec<IdentityOut>,
}

#[derive(Object, Debug)]
pub struct SetPasswordRequest {
    /// The password rules of registration.
    #[oai(write_only)]
    pub new_password: String,
}
