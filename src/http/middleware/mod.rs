//! The HTTP middleware, one concern per file. `http::routes` stacks them; its comment lists
//! the order, outermost first.

pub mod input;
pub mod rate_limit;
pub mod request_id;
pub mod security;

pub use security::SecurityConfig;
