//! sea-orm entities, one per table created in `migration/`.
pub mod api_key;
pub mod audit_log;
pub mod email_change;
pub mod identity;
pub mod job;
pub mod mfa_challenge;
pub mod oidc_authorization;
pub mod oidc_used_nonce;
pub mod one_time_token;
pub mod recovery_code;
pub mod refresh_token;
pub mod session;
pub mod totp_factor;
pub mod user;
pub mod worker_heartbeat;
