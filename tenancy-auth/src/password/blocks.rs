//! argon2 working memory, kept for reuse.
//!
//! Each argon2id hash needs `m_cost` KiB of blocks (19 MiB by default).
//! Allocated per hash and freed after, those arrays stay with the process:
//! the allocator keeps them in per-thread arenas, and resident memory grew
//! by hundreds of MiB after a few hundred logins. The pool keeps at most
//! one array per hashing lane, allocated on first use and handed from hash
//! to hash, so resident memory stays near lanes × `m_cost`.

#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::HashError;

/// Block arrays of one size for argon2, at most `capacity` of them kept.
pub(super) struct BlockPool {
    /// Blocks per array: the configured parameters' block count.
    blocks: usize,
    capacity: usize,
    free: Mutex<Vec<Box<[Block]>>>,
    /// Arrays allocated over the pool's life (kept or not), for tests.
    #[cfg(test)]
    allocated: AtomicUsize,
}

impl BlockPool {
    /// A pool of arrays of `blocks` blocks, keeping at most `capacity`.
    pub(super) fn new(blocks: usize, capacity: usize) -> Self {
        Self {
            blocks,
            capacity,
            // Grown on demand: `capacity` may be as large as the
            // configured hash concurrency, `usize::MAX` included.
            free: Mutex::new(Vec::new()),
            #[cfg(test)]
            allocated: AtomicUsize::new(0),
        }
    }

    fn free(&self) -> MutexGuard<'_, Vec<Box<[Block]>>> {
        // A panic elsewhere cannot leave the list half-changed.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An array of at least `needed` blocks: a kept one when it is large
    /// enough, else a new one. Argon2 overwrites every block it uses
    /// before reading it, so a reused array needs no clearing.
    pub(super) fn take(&self, needed: usize) -> Box<[Block]> {
        if needed <= self.blocks
            && let Some(blocks) = self.free().pop()
        {
            return blocks;
        }
        #[cfg(test)]
        self.allocated.fetch_add(1, Ordering::Relaxed);
        vec![Block::new(); needed.max(self.blocks)].into_boxed_slice()
    }

    /// Returns an array to the pool; one of another size (a stored hash
    /// with larger costs) or beyond the capacity is freed instead.
    pub(super) fn give(&self, blocks: Box<[Block]>) {
        if blocks.len() != self.blocks {
            return;
        }
        let mut free = self.free();
        if free.len() < self.capacity {
            free.push(blocks);
        }
    }

    /// How many arrays the pool holds now.
    #[cfg(test)]
    pub(super) fn kept(&self) -> usize {
        self.free().len()
    }

    /// How many arrays were allocated over the pool's life.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Runs argon2 over `password` and `salt` into `out`, in pooled memory.
    fn run(
        &self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let mut blocks = self.take(argon2.params().block_count());
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut *blocks);
        self.give(blocks);
        result.map_err(|_| HashError::Argon2)
    }

    /// Hashes `password` with a fresh random salt into a PHC hash.
    pub(super) fn hash(&self, params: Params, password: &[u8]) -> Result<PasswordHash, HashError> {
        let salt = argon2::password_hash::try_generate_salt().map_err(|_| HashError::Argon2)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let len = argon2
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let mut out = vec![0u8; len];
        self.run(&argon2, password, &salt, &mut out)?;
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).map_err(|_| HashError::Argon2)?,
            salt: Some(Salt::new(&salt).map_err(|_| HashError::Argon2)?),
            hash: Some(Output::new(&out).map_err(|_| HashError::Argon2)?),
        })
    }

    /// Whether `password` matches `stored`, hashing with the algorithm,
    /// version and costs recorded in it; the outputs are compared in
    /// constant time. A hash without salt or output is malformed.
    pub(super) fn verify(&self, stored: &PasswordHash, password: &[u8]) -> Result<bool, HashError> {
        let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
            return Err(HashError::MalformedHash);
        };
        let algorithm =
            Algorithm::try_from(stored.algorithm.as_str()).map_err(|_| HashError::MalformedHash)?;
        let version = stored
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(|_| HashError::MalformedHash)?
            .unwrap_or_default();
        // The costs, and the output length of the stored output.
        let params = Params::try_from(stored).map_err(|_| HashError::MalformedHash)?;
        let argon2 = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        self.run(&argon2, password, salt.as_ref(), &mut out)?;
        Ok(crate::secret::bytes_equal(&out, expected.as_bytes()))
    }
}
