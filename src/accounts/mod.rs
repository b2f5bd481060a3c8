//! Account rules: registration, passwords, sessions and one-time tokens. Knows nothing of HTTP.

pub mod admin;
pub mod api_keys;
pub mod passwords;
pub mod tokens;
pub mod validation;

mod cleanup;
mod deletion;
pub mod directory;
mod service;

pub use cleanup::*;
pub use deletion::*;
pub use service::*;
pub use validation::FieldProblem;
