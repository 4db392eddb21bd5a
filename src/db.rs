//! `Emdb`: the blocking API. Each write, flush and checkpoint is a future of
//! the async core driven to completion on the calling thread; reads run
//! directly on the calling thread, since they never cross threads.

use std::path::Path;
use std::sync::Arc;

use crate::builder::EmdbBuilder;
use crate::config::Config;
use crate::engine::{block_on, Engine, DEFAULT_NS};
use crate::error::Result;
use crate::lock::{self, LockHolder};
use crate::stats::EmdbStats;

/// An open database. `Send + Sync`; share it across threads by reference or
/// with [`Emdb::clone_handle`]. The engine closes when the last handle drops:
/// it writes and syncs everything, attempts a checkpoint, and releases the
/// lock.
pub struct Emdb {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for Emdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emdb")
            .field("path", &self.engine.path())
            .finish_non_exhaustive()
    }
}

crate::kv::key_value_api!(Emdb, "the default namespace");

impl Emdb {
    #[inline]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    #[inline]
    pub(crate) const fn ns(&self) -> u32 {
        DEFAULT_NS
    }

    /// Opens or creates the database directory at `path` with every default.
    /// Fails with `Error::LockBusy` while another handle holds it.
    pub fn open(path: impl AsRef<Path>) -> Result<Emdb> {
        EmdbBuilder::new().path(path).build()
    }

    /// A database that lives in memory only: no files, no lock. Same
    /// semantics otherwise.
    ///
    /// # Panics
    /// Only if the process cannot map memory or start a thread, where no
    /// database could work at all.
    pub fn open_in_memory() -> Emdb {
        let built = EmdbBuilder::new()
            .in_memory()
            .into_config()
            .and_then(Emdb::open_with);
        match built {
            Ok(db) => db,
            Err(e) => panic!("emdb: cannot create an in-memory database: {e}"),
        }
    }

    /// A builder for every setting.
    pub fn builder() -> EmdbBuilder {
        EmdbBuilder::new()
    }

    #[cfg(feature = "async")]
    pub(crate) fn from_engine(engine: Arc<Engine>) -> Emdb {
        Emdb { engine }
    }

    #[cfg(feature = "async")]
    pub(crate) fn into_engine(self) -> Arc<Engine> {
        self.engine
    }

    pub(crate) fn open_with(config: Config) -> Result<Emdb> {
        Ok(Emdb {
            engine: Arc::new(Engine::open(config)?),
        })
    }

    /// Another handle to the same database. Cheap: one reference count.
    pub fn clone_handle(&self) -> Emdb {
        Emdb {
            engine: self.engine.clone(),
        }
    }

    /// The database directory (empty for an in-memory database).
    pub fn path(&self) -> &Path {
        self.engine.path()
    }

    /// Returns once every write accepted before the call, by any handle of
    /// this database, is durable. Concurrent callers share device flushes.
    pub fn flush(&self) -> Result<()> {
        block_on(self.engine.flush())
    }

    /// Writes per-segment index snapshots (hint files) so that the next open
    /// loads them instead of replaying the log. Makes everything durable
    /// first. No-op in memory.
    pub fn checkpoint(&self) -> Result<()> {
        block_on(self.engine.checkpoint())
    }

    /// Reclaims space: moves the live records of each segment whose dead
    /// fraction is at least the compaction threshold (builder, default 0.4),
    /// the one being written included (it is sealed first), to the log tail,
    /// and removes those segments; then, if it removed any, checkpoints, so
    /// the next open is fast. A background compaction in progress stops and
    /// lets this one take over.
    ///
    /// Writers and readers go on meanwhile: records move under their
    /// shard's lock a few at a time, and a write that lands during the move
    /// wins.
    /// Values already handed out by `get_zerocopy` and open iterators stay
    /// valid (a segment's file is removed when the last of them lets go).
    /// In memory the same happens without files.
    pub fn compact(&self) -> Result<()> {
        let threshold = self.engine.ctx.config.compaction_threshold;
        self.engine.compact_with(threshold, true).map(|_| ())
    }

    /// Writes a consistent copy of the database to the new directory `path`
    /// while writers go on; the copy opens like any database.
    ///
    /// The copy is cut at one point of this call: it holds every write that
    /// returned before the call began, none that began after it returned,
    /// and each write (each batch too) that raced with it whole or not at
    /// all. Every file and directory of the copy is fsynced before this
    /// returns. `path` must not exist or be an empty directory, and must not
    /// lie inside the database; otherwise `Error::InvalidInput`. A copy that
    /// fails part-way (a full disk) is removed. Compaction waits while it
    /// runs. An in-memory database is copied to disk the same way.
    pub fn backup_to(&self, path: impl AsRef<Path>) -> Result<()> {
        self.engine.backup_to(path.as_ref())
    }

    /// Closes this handle and reports what a drop would hide. It makes
    /// every write accepted so far durable and, on disk, checkpoints (so the
    /// next open is fast), returning the first error. When this is the last
    /// handle it also stops the engine and releases the lock before it
    /// returns; otherwise the engine stays open for the other handles.
    ///
    /// Dropping the last handle does the same but can only ignore errors.
    pub fn close(self) -> Result<()> {
        crate::engine::close_handle(self.engine)
    }

    /// Current figures, engine figures included.
    pub fn stats(&self) -> Result<EmdbStats> {
        Ok(self.engine.stats())
    }

    /// How far the maintenance call running on this database is (beyond
    /// the emdb API): `compact()` or a background compaction run,
    /// `backup_to()`, or `checkpoint()` (`close()` runs one), called from
    /// any handle or thread. `None` when none runs. One call is tracked at
    /// a time (the first to begin); `emdb compact`, `backup` and
    /// `checkpoint` draw their progress bars from it.
    pub fn maintenance_progress(&self) -> Option<crate::MaintenanceProgress> {
        self.engine.ctx.progress.get()
    }

    /// Who holds the lock of the database at `path`, if anyone.
    pub fn lock_holder(path: impl AsRef<Path>) -> Result<Option<LockHolder>> {
        lock::holder(path.as_ref())
    }

    /// Removes a stale lock of the database at `path` (one still held by a
    /// descriptor whose recorded holder process is gone). Refuses with
    /// `Error::LockBusy` while its holder process is alive, or while
    /// read-only handles (`EmdbBuilder::read_only`) hold it; a lock nobody
    /// holds is left as it is (`Ok`).
    pub fn break_lock(path: impl AsRef<Path>) -> Result<()> {
        lock::break_lock(path.as_ref())
    }
}

/// At-rest encryption of a closed database (feature `encrypt`). Each call
/// takes the database's lock (`Error::LockBusy` while it is open) and is
/// atomic: a crash or power cut at any point leaves the old database or the
/// new one, never a mix, and no copy of the old one is left behind.
#[cfg(feature = "encrypt")]
impl Emdb {
    /// Encrypts the plaintext database at `path` with `input` (AES-256-GCM):
    /// every live record, with its namespace and expiry, is rewritten into
    /// an encrypted database beside it, which then replaces it. Takes time
    /// and space in proportion to the live data. An encrypted database is
    /// `Error::Encryption`.
    pub fn enable_encryption(path: impl AsRef<Path>, input: crate::EncryptionInput) -> Result<()> {
        let dir = path.as_ref();
        if dir.join(crate::crypt::KEYRING_NAME).exists() {
            return Err(crate::Error::Encryption(
                "the database is encrypted already: use Emdb::rotate_encryption_key to change its key",
            ));
        }
        crate::admin::rewrite(&crate::io::Files::default(), dir, Emdb::builder(), |b| {
            b.encryption_input(input)
        })
    }

    /// Decrypts the database at `path`, encrypted with `input`: rewritten
    /// as plaintext beside it, which then replaces it. A wrong `input` is
    /// `Error::EncryptionKeyMismatch` and changes nothing; a plaintext
    /// database is `Error::Encryption`.
    pub fn disable_encryption(path: impl AsRef<Path>, input: crate::EncryptionInput) -> Result<()> {
        let dir = path.as_ref();
        if !dir.join(crate::crypt::KEYRING_NAME).exists() {
            return Err(crate::Error::Encryption("the database is not encrypted"));
        }
        crate::admin::rewrite(
            &crate::io::Files::default(),
            dir,
            Emdb::builder().encryption_input(input),
            |b| b,
        )
    }

    /// Replaces the key (or passphrase) of the encrypted database at `path`:
    /// its database key is unwrapped with `current` and wrapped again under
    /// `new` in a new keyring file, renamed over the old one. The data is
    /// not rewritten, so this takes the same time at any size (plus the
    /// Argon2id stretches of passphrases). A wrong `current` is
    /// `Error::EncryptionKeyMismatch` and changes nothing.
    pub fn rotate_encryption_key(
        path: impl AsRef<Path>,
        current: crate::EncryptionInput,
        new: crate::EncryptionInput,
    ) -> Result<()> {
        crate::admin::rotate(path.as_ref(), &current, &new)
    }
}

impl EmdbBuilder {
    /// Opens (or creates) the database.
    pub fn build(self) -> Result<Emdb> {
        let config = self.into_config()?;
        Emdb::open_with(config)
    }

    /// Checks the database at this builder's path without changing a byte
    /// (beyond the emdb API; `emdb verify` runs it): every segment frame by
    /// frame (checksum, and for an encrypted database authentication, so
    /// give it the key), the manifest, the last checkpoint's hint files, and
    /// then recovery's own rules in a read-only open. Each problem is a
    /// [`Finding`](crate::Finding) with its file and offset; after a damaged
    /// frame the scan goes on at the next valid one.
    ///
    /// It takes the lock shared, as [`read_only`](EmdbBuilder::read_only)
    /// does: `Error::LockBusy` while a writer holds the database. Errors are
    /// for what stops the check itself (no database at the path, a wrong
    /// key); damage is in the report.
    pub fn verify(self) -> Result<crate::VerifyReport> {
        let config = self.read_only(true).into_config()?;
        crate::verify::verify(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Emdb>();
        assert_send_sync::<crate::value::ValueRef<'static>>();
    }
}
