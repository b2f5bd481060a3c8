//! argon2id hashing off the async runtime, with a cap on how many run at once.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task ended abnormally")]
    Task,
}

/// Hashes and verifies passwords with argon2id at the crate's default (OWASP) parameters.
///
/// Each hash runs in `spawn_blocking`, and a semaphore bounds how many run at once so that a burst
/// of logins queues here instead of filling the blocking pool and starving other requests.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when an account does not exist so that a
    /// failed login costs the same time either way.
    dummy_hash: Arc<str>,
    concurrency: usize,
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let random: [u8; 16] = rand::random();
        let dummy = hash_blocking(&hex::encode(random))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy.into(),
            concurrency: concurrency.max(1),
        })
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Task)?;
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|_| HashError::Task)?
    }

    /// True when `password` matches `hash`; an unparseable stored hash never matches.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Task)?;
        tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
            .await
            .map_err(|_| HashError::Task)
    }

    /// Spends the time of one verification without an account to verify against.
    pub async fn verify_dummy(&self, password: String) -> Result<(), HashError> {
        self.verify(password, self.dummy_hash.to_string())
            .await
            .map(|_| ())
    }
}

pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

pub fn verify_blocking(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let hasher = PasswordHasher::new(2).unwrap();
        let a = hasher.hash("Secret123!".into()).await.unwrap();
        let b = hasher.hash("Secret123!".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts must differ");
        assert!(hasher.verify("Secret123!".into(), a.clone()).await.unwrap());
        assert!(!hasher.verify("Secret124!".into(), a).await.unwrap());
        assert!(
            !hasher
                .verify("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
    }
}
