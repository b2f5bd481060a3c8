//! argon2id hashing off the async runtime, with a cap on how many run at once.

use std::sync::{Arc, Mutex, mpsc};

use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash as Phc, Salt},
};
use tokio::sync::oneshot;

use crate::argon2_memory::WorkingMemory;
use crate::values::Password;

/// An argon2id PHC string made by [`PasswordHasher::hash`] from a [`Password`]: what the users
/// table stores. It does not print either.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// No password: the account signs in some other way until it sets one.
    pub fn none() -> Self {
        Self(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed")]
    Hash(#[source] argon2::Error),
    #[error("could not encode the password hash")]
    Encode(#[source] argon2::password_hash::Error),
    #[error("could not encode the password hash")]
    EncodePart(#[source] argon2::password_hash::phc::Error),
    #[error("could not start the password hashing threads")]
    Threads(#[source] std::io::Error),
    #[error("the password hashing threads are gone")]
    Stopped,
}

/// Where a hashing thread's answer arrives.
type Hashed = oneshot::Receiver<Result<String, HashError>>;

enum Work {
    Hash(String, oneshot::Sender<Result<String, HashError>>),
    Verify(String, String, oneshot::Sender<bool>),
}

/// Hashes and verifies passwords with argon2id at the crate's default (OWASP) parameters.
///
/// The work runs on a fixed set of dedicated threads fed by a queue, never on the async runtime:
/// a burst of logins waits in the queue while other requests go on. Dedicated threads also bound
/// memory: each argon2 call needs ~19 MiB, and the allocator keeps that per thread, so a fixed
/// set of threads holds `concurrency` × 19 MiB instead of growing with a blocking pool.
#[derive(Clone)]
pub struct PasswordHasher {
    queue: mpsc::Sender<Work>,
    /// A real hash of a random password, verified against when an account does not exist so that a
    /// failed login costs the same time either way. Made beside the hasher as it starts (not
    /// before it returns: one hash is ~20 ms of start-up).
    dummy_hash: Arc<tokio::sync::OnceCell<Arc<str>>>,
    first_dummy: Arc<Mutex<Option<Hashed>>>,
    concurrency: usize,
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let concurrency = concurrency.max(1);
        let (queue, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..concurrency {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || hashing_thread(&rx))
                .map_err(HashError::Threads)?;
        }
        // On a thread of its own, whose working memory goes with it: a hashing thread would
        // keep its 19 MiB (an idle one gives it back only when it gets its turn to time out).
        let (tx, first_dummy) = oneshot::channel();
        std::thread::Builder::new()
            .name("argon2-dummy".into())
            .spawn(move || {
                let _ = tx.send(hash_blocking(&random_text()));
            })
            .map_err(HashError::Threads)?;
        Ok(Self {
            queue,
            dummy_hash: Arc::default(),
            first_dummy: Arc::new(Mutex::new(Some(first_dummy))),
            concurrency,
        })
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Hashes a password that passed the rules; nothing else can be hashed for storage.
    pub async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        self.hash_text(password.expose().to_string())
            .await
            .map(PasswordHash)
    }

    async fn hash_text(&self, text: String) -> Result<String, HashError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Work::Hash(text, tx))
            .map_err(|_| HashError::Stopped)?;
        rx.await.map_err(|_| HashError::Stopped)?
    }

    /// True when `password` matches `hash`; an unparseable stored hash never matches.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Work::Verify(password, hash, tx))
            .map_err(|_| HashError::Stopped)?;
        rx.await.map_err(|_| HashError::Stopped)
    }

    /// Spends the time of one verification without an account to verify against.
    pub async fn verify_dummy(&self, password: String) -> Result<(), HashError> {
        let dummy = self
            .dummy_hash
            .get_or_try_init(|| async {
                let first = self.first_dummy.lock().ok().and_then(|mut f| f.take());
                let hashed = match first {
                    Some(made) => made.await.map_err(|_| HashError::Stopped)?,
                    // The first attempt failed: another.
                    None => self.hash_text(random_text()).await,
                };
                hashed.map(Arc::<str>::from)
            })
            .await?;
        self.verify(password, dummy.to_string()).await.map(|_| ())
    }
}

fn random_text() -> String {
    let random: [u8; 16] = rand::random();
    hex::encode(random)
}

/// A hashing thread idle this long gives its working memory back.
const RELEASE_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

fn hashing_thread(rx: &Mutex<mpsc::Receiver<Work>>) {
    // The argon2 working memory, reused for every call: allocating 19 MiB per call makes the
    // allocator's footprint grow far beyond what is in use (measured: +5 MiB RSS per login).
    // Kept while logins come, returned when they stop.
    let mut memory = WorkingMemory::new();
    loop {
        // The lock is held only while waiting for the next item, never while hashing; a
        // thread that waited long enough releases it, so each idle thread gets its turn to
        // time out and give its memory back.
        let next = match rx.lock() {
            Ok(guard) => guard.recv_timeout(RELEASE_AFTER_IDLE),
            Err(_) => return,
        };
        let next = match next {
            Ok(work) => Ok(work),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                memory.release();
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
        };
        match next {
            // A caller that gave up (request cancelled) is simply not answered.
            Ok(Work::Hash(password, reply)) => {
                let _ = reply.send(hash_with(&password, &mut memory));
            }
            Ok(Work::Verify(password, hash, reply)) => {
                let _ = reply.send(verify_with(&password, &hash, &mut memory));
            }
            Err(_) => return,
        }
    }
}

/// Hashes with a fresh working memory; for one-off use outside the hashing threads.
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    hash_with(password, &mut WorkingMemory::new())
}

/// Verifies with a fresh working memory; for one-off use outside the hashing threads.
pub fn verify_blocking(password: &str, hash: &str) -> bool {
    verify_with(password, hash, &mut WorkingMemory::new())
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password` with a random salt.
fn hash_with(password: &str, memory: &mut WorkingMemory) -> Result<String, HashError> {
    let params = Params::default();
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out,
            memory.blocks(params.block_count()),
        )
        .map_err(HashError::Hash)?;
    let phc = Phc {
        algorithm: ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(HashError::Encode)?,
        salt: Some(Salt::new(&salt).map_err(HashError::EncodePart)?),
        hash: Some(Output::new(&out).map_err(HashError::EncodePart)?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against a stored PHC string, with the parameters the string records,
/// reusing `memory` as the argon2 working memory.
pub fn verify_with(password: &str, hash: &str, memory: &mut WorkingMemory) -> bool {
    let Ok(phc) = Phc::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = phc.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Ok(params)) = (version, Params::try_from(&phc)) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password.as_bytes(),
        salt.as_ref(),
        &mut out,
        memory.blocks(params.block_count()),
    );
    // `Output`'s equality is constant-time.
    computed.is_ok() && Output::new(&out).is_ok_and(|o| &o == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let hasher = PasswordHasher::new(2).unwrap();
        let password = Password::parse("password", "Unusual-Secret-42".into()).unwrap();
        let a = hasher.hash(&password).await.unwrap().into_string();
        let b = hasher.hash(&password).await.unwrap().into_string();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salts must differ");
        assert!(
            hasher
                .verify("Unusual-Secret-42".into(), a.clone())
                .await
                .unwrap()
        );
        assert!(!hasher.verify("Unusual-Secret-43".into(), a).await.unwrap());
        assert!(
            !hasher
                .verify("x".into(), "not a hash".into())
                .await
                .unwrap()
        );
    }

    /// The resident size of the mapping that holds `addr`, from `/proc/self/smaps`; `None`
    /// when nothing is mapped there.
    #[cfg(target_os = "linux")]
    fn mapped_rss_kib(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((from, to)) = range
                && let (Ok(from), Ok(to)) = (
                    usize::from_str_radix(from, 16),
                    usize::from_str_radix(to, 16),
                )
            {
                inside = from <= addr && addr < to;
                continue;
            }
            if inside && let Some(kib) = line.strip_prefix("Rss:") {
                return kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
        None
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn working_memory_is_an_aligned_mapping_given_back_on_release() {
        let hash = hash_blocking("Secret123!").unwrap();
        let mut memory = WorkingMemory::new();
        assert!(verify_with("Secret123!", &hash, &mut memory));
        let start = memory.blocks(1).as_ptr() as usize;
        assert_eq!(start % (2 << 20), 0, "not aligned to 2 MiB: {start:#x}");
        // argon2 wrote every one of its 19 MiB.
        let rss = mapped_rss_kib(start).expect("the working memory is mapped");
        assert!(rss >= 19 * 1024 - 64, "{rss} KiB resident");
        // Reused, not reallocated, by the next call.
        assert!(verify_with("Secret123!", &hash, &mut memory));
        assert_eq!(memory.blocks(1).as_ptr() as usize, start);
        assert!(memory.release());
        assert_eq!(mapped_rss_kib(start), None, "still mapped after release");
        assert!(!memory.release());
    }

    #[test]
    fn compatible_with_the_argon2_crate_both_ways() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let ours = hash_blocking("Secret123!").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(
            Argon2::default()
                .verify_password(b"Secret123!", ours.as_str())
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password(b"Secret123!")
            .unwrap()
            .to_string();
        assert!(verify_blocking("Secret123!", &theirs));
        assert!(!verify_blocking("Secret124!", &theirs));
        // A hash made with other parameters verifies with the parameters it records.
        let other = Params::new(8192, 1, 1, None).unwrap();
        let custom = Argon2::new(Algorithm::Argon2id, Version::V0x13, other)
            .hash_password(b"pw-with-other-params")
            .unwrap()
            .to_string();
        assert!(verify_blocking("pw-with-other-params", &custom));
        assert!(!verify_blocking("pw-with-other-paramz", &custom));
    }
}
