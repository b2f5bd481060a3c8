//! Account rules: registration, passwords, sessions and one-time tokens. Knows nothing of HTTP.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod passwords;
pub mod tokens;

mod cleanup;
mod deletion;
pub mod directory;
mod profile;
mod recovery;
mod registration;
mod service;
mod sessions;
mod storage;

pub use crate::values::{EmailAddress, FieldProblem, Password, Username};
pub use audit::AuditEvent;
pub use cleanup::*;
pub use deletion::*;
pub use passwords::PasswordHash;
pub use service::*;
pub use storage::{find_user, find_user_by_email, find_user_by_ident};

#[cfg(test)]
mod tests {
    /// The settings name the periodic jobs by the names their handlers are registered under
    /// here; a rename on one side only would leave a schedule firing a job nobody runs.
    #[test]
    fn the_periodic_jobs_are_the_accounts_handlers() {
        let names = crate::config::PERIODIC.map(|p| p.name);
        assert_eq!(
            names,
            [
                super::PURGE_DELETED_ACCOUNTS,
                super::SEND_DELETION_REMINDERS,
                super::CLEANUP_EXPIRED_TOKENS
            ]
        );
    }
}
