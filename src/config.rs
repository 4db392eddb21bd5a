//! The validated configuration every layer below the builder reads, and the
//! public enums and defaults it is made of.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::io::IoBackend;
use crate::log::frame;

/// When emdb forces data to disk. Under every policy concurrent `flush()`
/// callers share device flushes (group commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// `flush()` makes every earlier write durable. The default.
    #[default]
    OnEachFlush,
    /// Many producers each calling `flush()`: their flushes are coalesced.
    /// emdb coalesces under every policy; this variant is kept for
    /// compatibility and behaves like `OnEachFlush`.
    Group,
    /// Each write is durable when its call returns; concurrent writers still
    /// share device flushes. `flush()` is then nearly free.
    WriteThrough,
}

/// How a shard core runs its writes and fdatasyncs (the portable backend has
/// no ring: it runs `RingLinked` as `Syscalls`). Each strategy's
/// cost on a machine can be measured with `cargo bench --bench writers`
/// (`EMDB_PROBE_STRATEGIES`) and compared with the raw mechanisms of
/// `cargo bench --bench sync_study`; ARCHITECTURE.md ("Sync strategies")
/// has the figures that chose the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncStrategy {
    /// The measured best here: `pwrite` and `fdatasync` system calls on
    /// the core thread for every chain (today the same as `Syscalls`). The
    /// default.
    #[default]
    Auto,
    /// `pwrite` and `fdatasync` system calls on the core thread for every
    /// chain.
    Syscalls,
    /// Like `Syscalls`, except that a lone flusher's round that is one write,
    /// with nothing else in its file waiting for a sync, is one
    /// `pwritev2(RWF_DSYNC)`.
    Dsync,
    /// Every chain through the ring: write SQEs linked to an fdatasync SQE.
    RingLinked,
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default largest key: 64 KiB - 1 bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = (64 << 10) - 1;

/// The longest key allowed with range scans on: the ordered index keeps a
/// block's key offsets in 4 bytes, and a block holds up to 129 keys.
pub const MAX_RANGE_KEY_LEN: usize = 16 << 20;
/// Default largest value: 16 MiB.
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 << 20;
/// Default largest `insert_many` batch, in records.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 1_000_000;
/// Default largest `insert_many` batch, in encoded bytes.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;
/// Default dead fraction at which a sealed segment is compacted.
pub const DEFAULT_COMPACTION_THRESHOLD: f64 = 0.4;
/// Default unwritten backlog per shard before non-durable writers wait.
pub const DEFAULT_TAIL_BUFFER_BYTES: usize = 64 << 20;
/// Segments must stay addressable by a 32-bit offset.
const MAX_SEGMENT_SIZE: u64 = (u32::MAX as u64) & !4095;

/// A validated configuration. Every limit is explicit.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `None` for an in-memory database.
    pub dir: Option<PathBuf>,
    pub flush_policy: FlushPolicy,
    pub shards: usize,
    pub backend: IoBackend,
    pub sqpoll_idle_ms: Option<u32>,
    pub sync_strategy: SyncStrategy,
    pub segment_size: u64,
    pub max_key_len: usize,
    pub max_value_len: usize,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub tail_buffer_bytes: usize,
    /// Dead fraction at which a sealed segment is compacted.
    pub compaction_threshold: f64,
    /// Whether a background thread compacts on its own.
    pub background_compaction: bool,
    /// Whether an ordered index is kept for range scans.
    pub range_scans: bool,
    /// The expiry of a write that names none (`Ttl::Default`).
    pub default_ttl: Option<std::time::Duration>,
    /// Opened read-only: nothing is created, written or removed.
    pub read_only: bool,
    #[cfg(feature = "fault-injection")]
    pub fault_plan: Option<crate::io::fault::FaultPlan>,
    /// The key or passphrase, and the cipher of a new database.
    #[cfg(feature = "encrypt")]
    pub encryption: Option<(crate::crypt::EncryptionInput, crate::crypt::Cipher)>,
}

impl Config {
    /// The file-system operations of this database (watched by the fault
    /// plan, if any).
    pub(crate) fn files(&self) -> crate::io::Files {
        #[cfg(feature = "fault-injection")]
        let files = crate::io::Files::watched(self.fault_plan.clone());
        #[cfg(not(feature = "fault-injection"))]
        let files = crate::io::Files::default();
        files.read_only(self.read_only)
    }

    /// The I/O backend of one core, created on
    /// the calling thread.
    pub(crate) fn backend(&self, kind: IoBackend) -> std::io::Result<Box<dyn crate::io::Io>> {
        let io = crate::io::create(kind, self.sqpoll_idle_ms)?;
        Ok(self.files().wrap_backend(io))
    }

    /// Whether the database is opened with a key (feature `encrypt`).
    pub(crate) fn encrypted(&self) -> bool {
        #[cfg(feature = "encrypt")]
        return self.encryption.is_some();
        #[cfg(not(feature = "encrypt"))]
        false
    }

    /// The largest frame a single record can produce.
    pub(crate) fn max_frame_len(&self) -> usize {
        frame::encoded_len(self.max_key_len, self.max_value_len, true)
            + if self.encrypted() { frame::SEAL_LEN } else { 0 }
    }
}

pub(crate) fn validate(c: &Config) -> Result<()> {
    if c.segment_size < 4096 || c.segment_size > MAX_SEGMENT_SIZE {
        return Err(Error::InvalidConfig(
            "segment_size must be between 4 KiB and 4 GiB - 4 KiB",
        ));
    }
    if c.max_key_len == 0 || c.max_key_len > u32::MAX as usize / 2 {
        return Err(Error::InvalidConfig(
            "max_key_len must be at least 1 and below 2 GiB",
        ));
    }
    if c.range_scans && c.max_key_len > MAX_RANGE_KEY_LEN {
        return Err(Error::InvalidConfig(
            "with range scans on, max_key_len must be at most 16 MiB",
        ));
    }
    if c.max_value_len > u32::MAX as usize / 2 {
        return Err(Error::InvalidConfig("max_value_len must be below 2 GiB"));
    }
    let room = c.segment_size as usize - frame::SEGMENT_HEADER_LEN - SYNC_RESERVE;
    if c.max_frame_len() > room {
        return Err(Error::InvalidConfig(
            "segment_size is too small for max_key_len + max_value_len; raise it or lower the limits",
        ));
    }
    if c.max_batch_records == 0 || c.max_batch_bytes == 0 {
        return Err(Error::InvalidConfig("batch limits must be at least 1"));
    }
    if !(c.compaction_threshold > 0.0 && c.compaction_threshold <= 1.0) {
        return Err(Error::InvalidConfig(
            "compaction_threshold must be above 0 and at most 1",
        ));
    }
    if c.tail_buffer_bytes < c.max_frame_len() {
        return Err(Error::InvalidConfig(
            "tail_buffer_bytes must hold at least the largest frame",
        ));
    }
    Ok(())
}

/// Room `validate` leaves beside the largest frame in a segment, so that a
/// full-size record and a sync marker fit one segment. Appends reserve
/// nothing: a frame that does not fit rotates to the next segment.
pub(crate) const SYNC_RESERVE: usize = frame::MIN_FRAME + 8;

/// How long a record lives (feature `ttl`).
///
/// Expiry uses the wall clock (Unix milliseconds). A record is invisible
/// to every read from the millisecond its expiry is reached; nothing is
/// written then (`sweep_expired` and compaction write its tombstone later).
/// A clock step forward expires records early; a step back makes expired,
/// not yet swept records visible again until the clock passes their time.
#[cfg(feature = "ttl")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ttl {
    /// The database's `default_ttl`, or no expiry if it has none.
    #[default]
    Default,
    /// No expiry.
    Never,
    /// Expires this long after the write (wall clock).
    After(std::time::Duration),
}
