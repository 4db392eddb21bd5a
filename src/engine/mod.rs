//! The engine: routes keys to shards, starts and stops the shard cores, and
//! implements every operation as a future of the core (reads are plain
//! functions, since they never cross threads).

mod backup;
mod block_on;
mod checkpoint;
pub(crate) mod chunk;
mod commit;
mod compaction;
mod core_loop;
mod expiry;
#[cfg(feature = "nested")]
mod groups;
pub(crate) mod handoff;
pub(crate) mod open;
mod ops;
pub(crate) mod progress;
pub(crate) mod range;
mod scrub;
pub(crate) mod shard;
pub(crate) mod ttl;
pub(crate) mod txn;
mod wait;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

pub(crate) use block_on::block_on;
use shard::Shard;

use crate::config::Config;
use crate::crypt::Crypto;
use crate::error::Result;
use crate::io::IoBackend;
use crate::lock::LockFile;
use crate::log::frame;
use crate::log::manifest::Manifest;

pub(crate) use crate::nsindex::DEFAULT_NS;
/// Lookups that met a slot pointing at a segment no longer in the table
/// (retired after the slot moved on) look again this many times.
const MAX_LOOKUP_RETRIES: u32 = 16;

/// State shared by the engine and every shard.
pub(crate) struct Ctx {
    pub config: Config,
    pub shard_count: usize,
    pub hash_seed: u64,
    pub backend: IoBackend,
    seq: AtomicU64,
    checkpoint_gen: AtomicU64,
    /// Disk databases only.
    manifest: Option<Mutex<Manifest>>,
    /// Group commit across shards.
    pub(crate) commit: commit::Commit,
    /// Held while checkpoint files are written; the last checkpoint
    /// generation written.
    pub maintenance: Mutex<u64>,
    /// Held for a whole compaction run (one at a time).
    pub compaction: Mutex<()>,
    /// The engine is closing: a compaction run stops after its current
    /// record.
    pub closing: std::sync::atomic::AtomicBool,
    /// An explicit compaction waits: a background run stops after its
    /// current record and lets it take over.
    pub compaction_wanted: std::sync::atomic::AtomicUsize,
    /// Compaction runs that retired at least one segment.
    pub compactions: AtomicU64,
    /// Bytes of segment files compaction retired.
    pub bytes_reclaimed: AtomicU64,
    /// Bytes of records compaction moved.
    pub bytes_moved: AtomicU64,
    /// The named namespaces (a copy of the manifest's list, changed only
    /// after the manifest holding the change is durable).
    namespaces: parking_lot::RwLock<Registry>,
    /// Serializes namespace creation and drops.
    namespace_change: Mutex<()>,
    /// The keys of an encrypted database.
    pub crypto: Option<Arc<Crypto>>,
    /// The maintenance call running now, and how far it is.
    pub progress: progress::Tracker,
}

/// Named namespaces by ascending id, and the next id.
struct Registry {
    names: Vec<(u32, String)>,
    next: u32,
}

/// Most named namespaces a database holds.
pub(crate) const MAX_NAMESPACES: usize = 4096;
/// Longest namespace name, in bytes.
pub(crate) const MAX_NAMESPACE_NAME: usize = 255;

impl Ctx {
    /// Adds a new segment to the manifest, durably, before any write to it
    /// can be acknowledged. On failure the manifest in memory is as before.
    pub(crate) fn register_segment(&self, shard: usize, id: u32) -> io::Result<()> {
        self.store_manifest(
            |m| {
                let list = &mut m.shards[shard].segments;
                let added = !list.contains(&id);
                if added {
                    list.push(id);
                    list.sort_unstable();
                }
                added
            },
            |m, added| {
                if added {
                    m.shards[shard].segments.retain(|&s| s != id);
                }
            },
        )
    }

    /// Applies `change` to the manifest and stores it durably (disk
    /// databases; a no-op in memory). If the store fails, `undo` gets what
    /// `change` returned and puts the manifest in memory back as it was.
    fn store_manifest<R>(
        &self,
        change: impl FnOnce(&mut Manifest) -> R,
        undo: impl FnOnce(&mut Manifest, R),
    ) -> io::Result<()> {
        let (Some(m), Some(dir)) = (&self.manifest, &self.config.dir) else {
            return Ok(());
        };
        self.config
            .files()
            .fault_point(crate::io::FaultPoint::Metadata)?;
        let mut m = m.lock();
        let undo_with = change(&mut m);
        let stored = m.store(&self.config.files(), dir);
        if stored.is_err() {
            undo(&mut m, undo_with);
        }
        stored
    }

    /// A batch failed part-way (its frames on disk are incomplete): it is
    /// recorded as aborted in the manifest (stored with the next manifest
    /// store, before any batch floor can pass it), under the shard locks
    /// the batch holds.
    pub(crate) fn abort_batch(&self, seq: u64) {
        if let Some(m) = &self.manifest {
            let mut m = m.lock();
            if !m.aborted.contains(&seq) {
                m.aborted.push(seq);
                m.aborted.sort_unstable();
            }
        }
    }

    /// `Err(Error::ReadOnly)` in a read-only open: every call that would
    /// change the database asks this first.
    #[inline]
    pub(crate) fn writable(&self) -> Result<()> {
        if self.config.read_only {
            return Err(crate::error::Error::ReadOnly);
        }
        Ok(())
    }

    /// Whether namespace `ns` exists (the default always does).
    #[inline]
    pub(crate) fn namespace_live(&self, ns: u32) -> bool {
        ns == DEFAULT_NS
            || self
                .namespaces
                .read()
                .names
                .binary_search_by_key(&ns, |(id, _)| *id)
                .is_ok()
    }

    /// A write to a dropped namespace is refused.
    pub(crate) fn check_namespace(&self, ns: u32) -> Result<()> {
        if self.namespace_live(ns) {
            Ok(())
        } else {
            Err(crate::error::Error::InvalidInput(
                "the namespace was dropped; open it again with namespace(name)",
            ))
        }
    }

    /// Namespaces, the default one included.
    pub(crate) fn namespace_count(&self) -> usize {
        self.namespaces.read().names.len() + 1
    }

    /// Every namespace name, the default (`""`) first, then by name.
    pub(crate) fn namespace_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .namespaces
            .read()
            .names
            .iter()
            .map(|(_, n)| n.clone())
            .collect();
        names.sort_unstable();
        names.insert(0, String::new());
        names
    }

    /// The named namespaces, for a backup's manifest: the list and the next id.
    pub(crate) fn namespace_registry(&self) -> (Vec<(u32, String)>, u32) {
        let r = self.namespaces.read();
        (r.names.clone(), r.next)
    }

    /// The id of namespace `name`, created (durably, before this returns)
    /// if it does not exist.
    pub(crate) fn namespace_id(&self, name: &str) -> Result<u32> {
        validate_namespace_name(name)?;
        if let Some(id) = self.find_namespace(name) {
            return Ok(id);
        }
        self.writable()?;
        let _one = self.namespace_change.lock();
        if let Some(id) = self.find_namespace(name) {
            return Ok(id);
        }
        let (count, id) = {
            let r = self.namespaces.read();
            (r.names.len(), r.next)
        };
        if count >= MAX_NAMESPACES {
            return Err(crate::error::Error::LimitExceeded {
                what: "namespace count",
                len: count + 1,
                max: MAX_NAMESPACES,
            });
        }
        let next = id.checked_add(1).ok_or(crate::error::Error::InvalidInput(
            "namespace ids are exhausted",
        ))?;
        self.store_namespaces(|list, n| {
            list.push((id, name.to_string()));
            *n = next;
        })?;
        let mut r = self.namespaces.write();
        r.names.push((id, name.to_string()));
        r.next = next;
        Ok(id)
    }

    /// Removes namespace `name` from the registry, durably; its id, if it
    /// existed. Its records are ignored from then on.
    pub(crate) fn unregister_namespace(&self, name: &str) -> Result<Option<u32>> {
        let _one = self.namespace_change.lock();
        let Some(id) = self.find_namespace(name) else {
            return Ok(None);
        };
        self.store_namespaces(|list, _| list.retain(|(i, _)| *i != id))?;
        self.namespaces.write().names.retain(|(i, _)| *i != id);
        Ok(Some(id))
    }

    /// The id of namespace `name`, if it exists.
    pub(crate) fn find_namespace(&self, name: &str) -> Option<u32> {
        self.namespaces
            .read()
            .names
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
    }

    /// Applies `change` to the manifest's namespace list and stores the
    /// manifest (disk databases); on failure the manifest in memory is as
    /// before.
    fn store_namespaces(
        &self,
        change: impl FnOnce(&mut Vec<(u32, String)>, &mut u32),
    ) -> Result<()> {
        self.store_manifest(
            |m| {
                let before = (m.namespaces.clone(), m.next_namespace);
                change(&mut m.namespaces, &mut m.next_namespace);
                before
            },
            |m, before| (m.namespaces, m.next_namespace) = before,
        )?;
        Ok(())
    }

    #[inline]
    pub(crate) fn hash(&self, ns: u32, key: &[u8]) -> u64 {
        self.keyed(ns, key).0
    }

    /// The index hash of a key and, in an encrypted database, its whole
    /// MAC (index hash and key check), which the append then need not
    /// compute again.
    #[inline]
    pub(crate) fn keyed(&self, ns: u32, key: &[u8]) -> (u64, Option<(u64, u64)>) {
        match &self.crypto {
            Some(c) => {
                let mac = c.mac(ns, key);
                (mac.0, Some(mac))
            }
            None => (crate::index::key_hash(self.hash_seed, ns, key), None),
        }
    }

    /// The bytes a frame of this key and value takes, with what encryption
    /// adds.
    #[inline]
    pub(crate) fn frame_len(&self, key_len: usize, value_len: usize, expires: bool) -> usize {
        frame::encoded_len(key_len, value_len, expires)
            + if self.crypto.is_some() {
                frame::SEAL_LEN
            } else {
                0
            }
    }

    /// Decrypts the encrypted frame `f` at `off` of `seg` into `buf`; a
    /// frame that fails authentication (or an encrypted frame in a database
    /// opened without a key) is `Error::Corrupted` with file and offset.
    pub(crate) fn open<'b>(
        &self,
        seg: &crate::log::segment::Segment,
        off: u32,
        f: &frame::Frame<'_>,
        buf: &'b mut Vec<u8>,
    ) -> Result<frame::Frame<'b>> {
        let opened = match &self.crypto {
            Some(c) => c.open_frame(seg.place(), off, f, buf),
            None => Err("an encrypted record in a database opened without a key"),
        };
        opened.map_err(|why| {
            crate::error::Error::corrupted(seg.path.clone().unwrap_or_default(), off as u64, why)
        })
    }

    /// The keys of an encrypted database.
    #[inline]
    pub(crate) fn crypto(&self) -> Option<&Crypto> {
        self.crypto.as_deref()
    }

    /// The bytes the frame of `spec` takes in the log.
    #[inline]
    pub(crate) fn spec_len(&self, spec: &frame::FrameSpec<'_>) -> usize {
        spec.encoded_len()
            + if self.crypto.is_some() && crate::crypt::sealed_kind(spec.kind) {
                frame::SEAL_LEN
            } else {
                0
            }
    }

    /// The shard of a key hash: the high 32 bits scaled onto the shard
    /// count (multiply-shift, no division; the index uses the low bits).
    /// Part of the on-disk contract: a key must always map to the same shard.
    #[inline]
    pub(crate) fn shard_of(&self, h: u64) -> usize {
        crate::index::shard_for(h, self.shard_count)
    }

    /// The sequence number the next write will draw.
    fn next_seq_peek(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn new(
        config: &Config,
        shard_count: usize,
        hash_seed: u64,
        backend: IoBackend,
        (seq, gen): (u64, u64),
        manifest: Option<Manifest>,
        crypto: Option<Arc<Crypto>>,
    ) -> Ctx {
        let registry = match &manifest {
            Some(m) => Registry {
                names: m.namespaces.clone(),
                next: m.next_namespace,
            },
            None => Registry {
                names: Vec::new(),
                next: 1,
            },
        };
        Ctx {
            config: config.clone(),
            shard_count,
            hash_seed,
            backend,
            seq: AtomicU64::new(seq),
            checkpoint_gen: AtomicU64::new(gen),
            manifest: manifest.map(Mutex::new),
            commit: commit::Commit::new(shard_count),
            maintenance: Mutex::new(gen),
            compaction: Mutex::new(()),
            closing: std::sync::atomic::AtomicBool::new(false),
            compaction_wanted: std::sync::atomic::AtomicUsize::new(0),
            compactions: AtomicU64::new(0),
            bytes_reclaimed: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            namespaces: parking_lot::RwLock::new(registry),
            namespace_change: Mutex::new(()),
            crypto,
            progress: Default::default(),
        }
    }
}

/// A namespace name must be 1 to 255 bytes of UTF-8 without control
/// characters. (The default namespace has no name and is not opened by
/// name.)
fn validate_namespace_name(name: &str) -> Result<()> {
    use crate::error::Error;
    if name.is_empty() {
        return Err(Error::InvalidInput(
            "a namespace name must not be empty (the default namespace is the database itself)",
        ));
    }
    if name.len() > MAX_NAMESPACE_NAME {
        return Err(Error::LimitExceeded {
            what: "namespace name length",
            len: name.len(),
            max: MAX_NAMESPACE_NAME,
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "a namespace name must not contain control characters",
        ));
    }
    Ok(())
}

/// What every operation needs: the shared context and the shards. The
/// engine's background threads (the compactor) hold an `Arc` of it, never
/// of the `Engine`, so dropping the last handle always stops them.
pub(crate) struct State {
    pub ctx: Arc<Ctx>,
    pub shards: Vec<Arc<Shard>>,
}

/// An open engine: its state, its threads and its lock.
pub(crate) struct Engine {
    state: Arc<State>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    compactor: Mutex<Option<compaction::Compactor>>,
    /// The background check of frames recovery took from hint files.
    scrubber: Mutex<Option<scrub::Scrubber>>,
    path: PathBuf,
    /// `close()` did the flush and checkpoint; drop only stops the threads.
    closed: std::sync::atomic::AtomicBool,
    _lock: Option<LockFile>,
}

impl std::ops::Deref for Engine {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl Engine {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The state, for what outlives a call (a range iterator reads on).
    pub(crate) fn state(&self) -> Arc<State> {
        self.state.clone()
    }

    fn shutdown(&self) {
        for s in &self.shards {
            s.request_shutdown();
        }
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        // Cores first (they finish with their own syncs), then segment
        // preparation.
        for t in threads {
            let _ = t.join();
        }
        for s in &self.shards {
            s.join_prep();
        }
    }
}

impl Engine {
    /// Closes the engine and reports what a drop would hide: stops
    /// compaction, makes every accepted write durable, checkpoints (on
    /// disk), stops the cores and releases the lock. On an error the
    /// engine still closes (as a drop would) and the error is returned.
    pub(crate) fn close(self) -> Result<()> {
        self.ctx.closing.store(true, Ordering::Release);
        if let Some(mut c) = self.compactor.lock().take() {
            c.stop();
        }
        if let Some(mut s) = self.scrubber.lock().take() {
            s.stop();
        }
        let mut result = block_on(self.flush());
        if result.is_ok() && self.ctx.config.dir.is_some() && !self.ctx.config.read_only {
            result = block_on(self.checkpoint());
        }
        // Drop finishes the close without a second checkpoint.
        self.closed.store(true, Ordering::Release);
        drop(self);
        result
    }
}

/// Closes one handle: the engine itself if it is the last one, else a
/// flush and (on disk) a checkpoint on behalf of this handle.
pub(crate) fn close_handle(engine: Arc<Engine>) -> Result<()> {
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close(),
        Err(shared) => {
            block_on(shared.flush())?;
            if shared.ctx.config.dir.is_some() && !shared.ctx.config.read_only {
                block_on(shared.checkpoint())?;
            }
            Ok(())
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            self.shutdown();
            return;
        }
        self.ctx.closing.store(true, Ordering::Release);
        if let Some(mut c) = self.compactor.lock().take() {
            c.stop();
        }
        if let Some(mut s) = self.scrubber.lock().take() {
            s.stop();
        }
        if self.ctx.config.dir.is_some()
            && !self.ctx.config.read_only
            && !self.shards.iter().any(|s| s.is_poisoned())
        {
            // Best effort: a failed checkpoint only makes the next open slower.
            let _ = block_on(self.checkpoint());
        }
        self.shutdown();
    }
}
