//! sea-orm entities, one per table created in `migration/`.
pub mod api_key;
pub mod audit_log;
pub mod job;
pub mod one_time_token;
pub mod refresh_token;
pub mod session;
pub mod user;
pub mod worker_heartbeat;
