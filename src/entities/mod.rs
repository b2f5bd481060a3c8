//! sea-orm entities, one per table created in `migration/`. Private to the crate: only the
//! domain modules (`accounts`, `jobs`) read and write rows, and they hand out views
//! (`accounts::User`, `jobs::JobView`, …) made with `View`. The crate denies
//! `unnameable_types`, so a row returned from a public function does not compile.
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

/// How a domain turns one of its rows into the view it hands out.
pub(crate) trait View {
    type Of;
    fn view(self) -> Self::Of;
}
