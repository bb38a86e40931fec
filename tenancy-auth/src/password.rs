//! Passwords: a policy after NIST SP 800-63B and argon2id hashing off the
//! async executor.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Params, Version};
use tenancy_core::Email;
use tokio::sync::{OnceCell, Semaphore};

mod blocks;

use blocks::BlockPool;

/// A password as typed by a user. `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password text. This is a secret: never log or store it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl From<String> for Password {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Password {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordRejected {
    /// Fewer characters than the policy's minimum.
    #[error("password must be at least {min} characters long")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// More characters than the policy's maximum (checked before hashing).
    #[error("password must be at most {max} characters long")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// On the list of the most common passwords.
    #[error("password is too common")]
    Common,
    /// The same as the account's email address or its local part.
    #[error("password may not be the email address")]
    EqualsEmail,
}

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// Rules for new passwords, after NIST SP 800-63B: a minimum and maximum
/// length, no composition rules, and a blocklist of the 10,000 most common
/// passwords (compared ignoring case) and the account's email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    min_chars: usize,
    max_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_chars: 10,
            max_chars: 256,
        }
    }
}

impl PasswordPolicy {
    /// Hard upper bound on length, whatever the configuration.
    pub const MAX_CHARS: usize = 256;

    /// Sets the minimum length, clamped to 8..=256 (NIST requires at least 8).
    pub fn with_min_chars(mut self, min: usize) -> Self {
        self.min_chars = min.clamp(8, Self::MAX_CHARS);
        self
    }

    /// The minimum length.
    pub fn min_chars(&self) -> usize {
        self.min_chars
    }

    /// Whether `password` may be set, for the account with `email`.
    pub fn check(
        &self,
        password: &Password,
        email: Option<&Email>,
    ) -> Result<(), PasswordRejected> {
        let len = password.0.chars().count();
        if len > self.max_chars {
            return Err(PasswordRejected::TooLong {
                max: self.max_chars,
            });
        }
        if len < self.min_chars {
            return Err(PasswordRejected::TooShort {
                min: self.min_chars,
            });
        }
        let lowered = password.0.to_lowercase();
        if COMMON_PASSWORDS.contains(lowered.as_str()) {
            return Err(PasswordRejected::Common);
        }
        if let Some(email) = email {
            let address = email.as_str().to_lowercase();
            let local = address.split('@').next().unwrap_or_default();
            if lowered == address || lowered == local {
                return Err(PasswordRejected::EqualsEmail);
            }
        }
        Ok(())
    }

    /// Rejects over-long input before any hashing work is spent on it.
    pub(crate) fn check_length_only(&self, password: &Password) -> Result<(), PasswordRejected> {
        if password.0.chars().count() > self.max_chars {
            return Err(PasswordRejected::TooLong {
                max: self.max_chars,
            });
        }
        Ok(())
    }
}

/// argon2id cost parameters. The default is OWASP's first recommendation:
/// 19 MiB of memory, 2 iterations, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Argon2Config {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Argon2Config {
    /// Costs of `memory_kib` KiB, `iterations` passes and `parallelism`
    /// lanes (checked when a hasher is built).
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Self {
        Self {
            memory_kib,
            iterations,
            parallelism,
        }
    }
}

impl Default for Argon2Config {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// A stored password hash: a PHC string such as `$argon2id$v=19$m=19456,t=2,p=1$…`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    /// Wraps a PHC string read from storage.
    pub fn new(phc: impl Into<String>) -> Self {
        Self(phc.into())
    }

    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHashString([redacted])")
    }
}

/// Hashing failed (not a wrong password: that is [`Verification::Invalid`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The configured argon2 parameters are out of range.
    #[error("invalid argon2 parameters")]
    Params,
    /// A stored hash is not a PHC string argon2 understands.
    #[error("stored password hash is malformed")]
    MalformedHash,
    /// The hashing task did not finish (the runtime is shutting down).
    #[error("password hashing task failed")]
    Task,
    /// argon2 reported an error.
    #[error("password hashing failed")]
    Argon2,
    /// Too many hashes are already waiting for a CPU: try again later.
    #[error("password hashing is overloaded; retry in {retry_after:?}")]
    Overloaded {
        /// A fair wait before trying again: the queue ahead, at the
        /// recent pace.
        retry_after: std::time::Duration,
    },
}

/// The outcome of checking a password against its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The password matches. `needs_rehash` is set when the hash was made
    /// with weaker parameters than configured now.
    Valid {
        /// Whether to store a fresh hash.
        needs_rehash: bool,
    },
    /// The password does not match.
    Invalid,
}

/// argon2id hashing on tokio's blocking pool, at most as many at once as
/// there are CPUs (or as configured), so logins never stall the async
/// runtime. The queue of hashes waiting for a CPU is bounded: past it a
/// hash fails at once with [`HashError::Overloaded`] rather than making
/// every caller wait longer.
///
/// Hashes run in working memory kept for reuse, one array of the
/// configured `memory_kib` per concurrent hash, allocated on first use:
/// resident memory stays near concurrency × `memory_kib` however many
/// logins the process serves.
#[derive(Clone)]
pub struct PasswordHasher {
    config: Argon2Config,
    params: Params,
    permits: Arc<Semaphore>,
    pool: Arc<BlockPool>,
    queue: Arc<HashQueue>,
    dummy: Arc<OnceCell<PasswordHashString>>,
    verifications: Arc<AtomicU64>,
}

/// Admission to the hasher: how many callers are waiting or running, and
/// how long a hash has recently taken.
struct HashQueue {
    lanes: usize,
    max_waiting: usize,
    inside: AtomicUsize,
    recent_nanos: AtomicU64,
}

/// A caller admitted to the hasher; leaving (however it ends) frees its place.
struct Admitted<'a>(&'a HashQueue);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashQueue {
    fn admit(&self) -> Result<Admitted<'_>, HashError> {
        let before = self.inside.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self);
        if before >= self.lanes.saturating_add(self.max_waiting) {
            // The queue ahead, at the recent pace, at least a second.
            let rounds = (before / self.lanes.max(1)) as u32 + 1;
            let each = std::time::Duration::from_nanos(self.recent_nanos.load(Ordering::Relaxed));
            let retry_after = (each * rounds).max(std::time::Duration::from_secs(1));
            drop(admitted);
            return Err(HashError::Overloaded { retry_after });
        }
        Ok(admitted)
    }

    /// Folds one hash's duration into the recent pace (weight 1/8).
    fn record(&self, took: std::time::Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.recent_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            took
        } else {
            old - old / 8 + took / 8
        };
        self.recent_nanos.store(new, Ordering::Relaxed);
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Hashes waiting for a CPU, beyond those running, unless configured.
    pub const DEFAULT_QUEUE: usize = 64;

    /// A hasher with `config`: one hash per CPU at once, and
    /// [`PasswordHasher::DEFAULT_QUEUE`] waiting.
    pub fn new(config: Argon2Config) -> Result<Self, HashError> {
        Self::with_limits(config, 0, Self::DEFAULT_QUEUE)
    }

    /// A hasher with `config` running `concurrency` hashes at once (0: one
    /// per CPU) with at most `queue` more waiting.
    pub fn with_limits(
        config: Argon2Config,
        concurrency: usize,
        queue: usize,
    ) -> Result<Self, HashError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|_| HashError::Params)?;
        let lanes = match concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            lanes => lanes.min(Semaphore::MAX_PERMITS),
        };
        Ok(Self {
            config,
            pool: Arc::new(BlockPool::new(params.block_count(), lanes)),
            params,
            permits: Arc::new(Semaphore::new(lanes)),
            queue: Arc::new(HashQueue {
                lanes,
                max_waiting: queue,
                inside: AtomicUsize::new(0),
                recent_nanos: AtomicU64::new(0),
            }),
            dummy: Arc::new(OnceCell::new()),
            verifications: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The configured parameters.
    pub fn config(&self) -> Argon2Config {
        self.config
    }

    /// How many argon2 verifications this hasher (and its clones) has run,
    /// real or dummy: for metrics, and for tests proving equal work.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Runs `work` on the blocking pool with the pooled memory. The permit
    /// moves into the task and is released when the work ends, not when
    /// the caller stops waiting: a login whose client went away cannot
    /// free a lane (and its memory) that is still in use.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&BlockPool) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admitted = self.queue.admit()?;
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::Task)?;
        let pool = Arc::clone(&self.pool);
        let started = std::time::Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let out = work(&pool);
            drop(permit);
            out
        })
        .await
        .map_err(|_| HashError::Task);
        self.queue.record(started.elapsed());
        out
    }

    /// Hashes `password` with a fresh random salt.
    pub async fn hash(&self, password: &Password) -> Result<PasswordHashString, HashError> {
        let params = self.params.clone();
        let secret = password.0.clone();
        self.blocking(move |pool| {
            pool.hash(params, secret.as_bytes())
                .map(|hash| PasswordHashString(hash.to_string()))
        })
        .await?
    }

    /// Checks `password` against `stored`, using the parameters recorded in
    /// the hash, and says whether the hash should be upgraded.
    pub async fn verify(
        &self,
        password: &Password,
        stored: &PasswordHashString,
    ) -> Result<Verification, HashError> {
        let secret = password.0.clone();
        let phc = stored.0.clone();
        let wanted = self.config;
        let counter = Arc::clone(&self.verifications);
        self.blocking(move |pool| {
            counter.fetch_add(1, Ordering::Relaxed);
            let parsed = PasswordHash::new(&phc).map_err(|_| HashError::MalformedHash)?;
            let needs_rehash = weaker_than(&parsed, wanted);
            if pool.verify(&parsed, secret.as_bytes())? {
                Ok(Verification::Valid { needs_rehash })
            } else {
                Ok(Verification::Invalid)
            }
        })
        .await?
    }

    /// Spends the same work as [`PasswordHasher::verify`] against a hash no
    /// password matches, so an unknown account costs what a wrong password
    /// costs. Always [`Verification::Invalid`].
    pub async fn verify_dummy(&self, password: &Password) -> Result<Verification, HashError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let random = Password(
                    crate::secret::random_256()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
                self.hash(&random).await
            })
            .await?
            .clone();
        self.verify(password, &dummy).await?;
        Ok(Verification::Invalid)
    }
}

/// Whether a stored hash used a weaker algorithm or smaller costs than `wanted`.
fn weaker_than(hash: &PasswordHash, wanted: Argon2Config) -> bool {
    let Ok(params) = Params::try_from(hash) else {
        return true;
    };
    hash.algorithm.as_str() != Algorithm::Argon2id.as_str()
        || hash.version != Some(Version::V0x13.into())
        || params.m_cost() < wanted.memory_kib
        || params.t_cost() < wanted.iterations
        || params.p_cost() < wanted.parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::new("Ann.Lee@example.com").unwrap()
    }

    #[test]
    fn policy_rules() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check(&"correct horse battery".into(), Some(&email())),
            Ok(())
        );
        assert_eq!(
            policy.check(&"short".into(), None),
            Err(PasswordRejected::TooShort { min: 10 })
        );
        let long = "x".repeat(257);
        assert_eq!(
            policy.check(&long.as_str().into(), None),
            Err(PasswordRejected::TooLong { max: 256 })
        );
        assert_eq!(policy.check(&"x".repeat(256).as_str().into(), None), Ok(()));
        for common in ["1234567890", "QWERTYUIOP", "1q2w3e4r5t"] {
            assert_eq!(
                policy.check(&common.into(), None),
                Err(PasswordRejected::Common),
                "{common}"
            );
        }
        assert_eq!(
            policy.check(&"ANN.LEE@example.com".into(), Some(&email())),
            Err(PasswordRejected::EqualsEmail)
        );
        let lenient = PasswordPolicy::default().with_min_chars(3);
        assert_eq!(lenient.min_chars(), 8);
        assert_eq!(
            lenient.check(
                &"ann.lee1".into(),
                Some(&Email::new("ann.lee1@x.io").unwrap())
            ),
            Err(PasswordRejected::EqualsEmail)
        );
        assert_eq!(
            PasswordRejected::Common.to_string(),
            "password is too common"
        );
        assert_eq!(
            PasswordRejected::TooShort { min: 10 }.to_string(),
            "password must be at least 10 characters long"
        );
    }

    #[test]
    fn the_queue_admits_lanes_plus_waiting_then_refuses() {
        let queue = HashQueue {
            lanes: 1,
            max_waiting: 1,
            inside: AtomicUsize::new(0),
            recent_nanos: AtomicU64::new(0),
        };
        queue.record(std::time::Duration::from_secs(3));
        let running = queue.admit().unwrap();
        let waiting = queue.admit().unwrap();
        match queue.admit() {
            Err(HashError::Overloaded { retry_after }) => {
                // Two ahead of it, and its own: three hashes of three seconds.
                assert_eq!(retry_after, std::time::Duration::from_secs(9));
            }
            other => panic!("expected overload, got {:?}", other.err()),
        }
        assert_eq!(queue.inside.load(Ordering::Acquire), 2);
        drop(running);
        let next = queue.admit().unwrap();
        drop((waiting, next));
        assert_eq!(queue.inside.load(Ordering::Acquire), 0);
    }

    #[test]
    fn blocklist_holds_ten_thousand_entries() {
        assert!(COMMON_PASSWORDS.len() >= 10_000);
        assert!(COMMON_PASSWORDS.contains("password"));
    }

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            format!("{:?}", Password::new("hunter2")),
            "Password([redacted])"
        );
        assert_eq!(
            format!("{:?}", PasswordHashString::new("$argon2id$...")),
            "PasswordHashString([redacted])"
        );
    }

    fn cheap() -> Argon2Config {
        Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hash_verify_and_rehash() {
        let hasher = PasswordHasher::new(cheap()).unwrap();
        let password = Password::new("correct horse battery");
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_eq!(
            hasher.verify(&password, &hash).await.unwrap(),
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(
            hasher
                .verify(&Password::new("wrong horse"), &hash)
                .await
                .unwrap(),
            Verification::Invalid
        );
        let stronger = PasswordHasher::new(Argon2Config {
            memory_kib: 2048,
            ..cheap()
        })
        .unwrap();
        assert_eq!(
            stronger.verify(&password, &hash).await.unwrap(),
            Verification::Valid { needs_rehash: true }
        );
        assert!(matches!(
            hasher
                .verify(&password, &PasswordHashString::new("not a phc"))
                .await,
            Err(HashError::MalformedHash)
        ));
        assert_eq!(
            hasher.verify_dummy(&password).await.unwrap(),
            Verification::Invalid
        );
        assert!(
            PasswordHasher::new(Argon2Config {
                memory_kib: 1,
                ..cheap()
            })
            .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn working_memory_is_bounded_by_the_lanes_and_reused() {
        let hasher = PasswordHasher::with_limits(cheap(), 2, 64).unwrap();
        let password = Password::new("correct horse battery");
        let hash = hasher.hash(&password).await.unwrap();
        assert_eq!((hasher.pool.allocated(), hasher.pool.kept()), (1, 1));
        // Many more hashes than lanes, all at once.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..24 {
            let (hasher, password, hash) = (hasher.clone(), password.clone(), hash.clone());
            tasks.spawn(async move {
                if i % 2 == 0 {
                    hasher.verify(&password, &hash).await.map(|_| ())
                } else {
                    hasher.hash(&password).await.map(|_| ())
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        assert!(hasher.pool.allocated() <= 2, "{}", hasher.pool.allocated());
        assert_eq!(hasher.pool.kept(), hasher.pool.allocated());
        // Sequential work after that allocates nothing new.
        let before = hasher.pool.allocated();
        for _ in 0..5 {
            hasher.verify(&password, &hash).await.unwrap();
        }
        assert_eq!(hasher.pool.allocated(), before);
    }

    #[test]
    fn the_pool_keeps_only_its_own_size_up_to_its_capacity() {
        let pool = BlockPool::new(8, 1);
        let (a, b) = (pool.take(8), pool.take(8));
        assert_eq!((a.len(), pool.allocated()), (8, 2));
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.kept(), 1);
        // Larger than the pool's arrays: a new one, freed after use.
        let large = pool.take(16);
        assert_eq!((large.len(), pool.allocated()), (16, 3));
        pool.give(large);
        assert_eq!(pool.kept(), 1);
        // Smaller: the kept array serves.
        assert_eq!(pool.take(4).len(), 8);
        assert_eq!((pool.allocated(), pool.kept()), (3, 0));
    }

    #[tokio::test]
    async fn pooled_hashes_match_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(cheap()).unwrap();
        let password = Password::new("correct horse battery");
        let reference = argon2::Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        // Ours verifies with the crate's own verifier ...
        let ours = hasher.hash(&password).await.unwrap();
        let parsed = PasswordHash::new(ours.as_str()).unwrap();
        reference
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .unwrap();
        // ... and a hash the crate made (with larger costs than the pool's
        // arrays, and with argon2i) verifies with ours.
        for (algorithm, memory, needs_rehash) in [
            (Algorithm::Argon2id, 2048, false),
            (Algorithm::Argon2i, 1024, true),
        ] {
            let made = argon2::Argon2::new(
                algorithm,
                Version::V0x13,
                Params::new(memory, 1, 1, None).unwrap(),
            )
            .hash_password(password.expose_secret().as_bytes())
            .unwrap()
            .to_string();
            let stored = PasswordHashString::new(made);
            assert_eq!(
                hasher.verify(&password, &stored).await.unwrap(),
                Verification::Valid { needs_rehash }
            );
            assert_eq!(
                hasher
                    .verify(&Password::new("wrong horse"), &stored)
                    .await
                    .unwrap(),
                Verification::Invalid
            );
        }
        assert_eq!(hasher.pool.kept(), 1);
    }
}
