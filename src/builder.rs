//! `EmdbBuilder`: every knob, validated into a [`Config`] with each limit
//! explicit.

use std::path::{Path, PathBuf};

use crate::db::Emdb;
use crate::error::{Error, Result};
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

/// Which disk I/O backend runs the shard cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoBackend {
    /// io_uring where the kernel allows it, else portable. The environment
    /// variable `EMDB_IO_BACKEND=uring|portable` overrides `Auto`.
    #[default]
    Auto,
    /// io_uring (Linux): linked write + fdatasync submissions. Opening fails
    /// if the kernel refuses io_uring.
    Uring,
    /// Positional writes and `fdatasync` system calls.
    Portable,
    /// No files (`Emdb::open_in_memory`). Only reported by `stats()`.
    Memory,
}

impl std::fmt::Display for IoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "io_uring",
            IoBackend::Portable => "portable",
            IoBackend::Memory => "memory",
        })
    }
}

/// Default segment size: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default largest key: 64 KiB - 1 bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = (64 << 10) - 1;
/// Default largest value: 16 MiB.
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 << 20;
/// Default largest `insert_many` batch, in records.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 1_000_000;
/// Default largest `insert_many` batch, in encoded bytes.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;
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
    pub segment_size: u64,
    pub max_key_len: usize,
    pub max_value_len: usize,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub tail_buffer_bytes: usize,
    #[cfg(feature = "fault-injection")]
    pub fault_plan: Option<crate::io::fault::FaultPlan>,
}

impl Config {
    /// The file-system operations of this database (watched by the fault
    /// plan, if any).
    pub(crate) fn files(&self) -> crate::io::Files {
        #[cfg(feature = "fault-injection")]
        return crate::io::Files::watched(self.fault_plan.clone());
        #[cfg(not(feature = "fault-injection"))]
        crate::io::Files::default()
    }

    /// The largest frame a single record can produce.
    pub(crate) fn max_frame_len(&self) -> usize {
        frame::encoded_len(self.max_key_len, self.max_value_len, true)
    }
}

/// Builder for [`Emdb`]: `Emdb::builder().path(p).build()`.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct EmdbBuilder {
    path: Option<PathBuf>,
    app_name: Option<String>,
    database_name: Option<String>,
    data_root: Option<PathBuf>,
    flush_policy: FlushPolicy,
    sqpoll_idle_ms: Option<u32>,
    shards: Option<usize>,
    backend: IoBackend,
    segment_size: Option<u64>,
    max_key_len: Option<usize>,
    max_value_len: Option<usize>,
    max_batch_records: Option<usize>,
    max_batch_bytes: Option<usize>,
    tail_buffer_bytes: Option<usize>,
    in_memory: bool,
    #[cfg(feature = "fault-injection")]
    fault_plan: Option<crate::io::fault::FaultPlan>,
}

impl EmdbBuilder {
    /// A builder with every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The database directory. Wins over OS path resolution; combining it
    /// with `app_name`, `database_name` or `data_root` is `InvalidConfig`.
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    /// Application folder name under the platform data root
    /// (`$XDG_DATA_HOME`, else `~/.local/share`, on Linux). One folder name:
    /// no `/`, `\`, `..`, not empty.
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = Some(name.into());
        self
    }

    /// Database folder name inside the application folder (default
    /// `"emdb"`). Same rules as `app_name`.
    pub fn database_name(mut self, name: impl Into<String>) -> Self {
        self.database_name = Some(name.into());
        self
    }

    /// Replaces the platform data root in OS path resolution.
    pub fn data_root(mut self, root: impl AsRef<Path>) -> Self {
        self.data_root = Some(root.as_ref().to_path_buf());
        self
    }

    /// When data is forced to disk; see [`FlushPolicy`].
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.flush_policy = policy;
        self
    }

    /// Run each shard's io_uring with a kernel submission-polling thread
    /// that sleeps after `idle_ms` idle milliseconds. Burns up to one core
    /// per shard while busy, so it is opt-in. Ignored by the portable backend.
    pub fn iouring_sqpoll(mut self, idle_ms: u32) -> Self {
        self.sqpoll_idle_ms = Some(idle_ms);
        self
    }

    /// Number of shard cores (threads), at least 1. Default: available CPUs.
    /// Fixed when the database is created: a reopen uses the stored count.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Forces a disk I/O backend. See [`IoBackend`].
    pub fn io_backend(mut self, backend: IoBackend) -> Self {
        self.backend = backend;
        self
    }

    /// Size of each preallocated segment file. Default 64 MiB; at least
    /// 4 KiB, at most 4 GiB - 4 KiB, and large enough for the largest frame.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = Some(bytes);
        self
    }

    /// Largest key in bytes. Default 64 KiB - 1.
    pub fn max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = Some(n);
        self
    }

    /// Largest value in bytes. Default 16 MiB.
    pub fn max_value_len(mut self, n: usize) -> Self {
        self.max_value_len = Some(n);
        self
    }

    /// Most records in one `insert_many`. Default 1,000,000.
    pub fn max_batch_records(mut self, n: usize) -> Self {
        self.max_batch_records = Some(n);
        self
    }

    /// Most encoded bytes in one `insert_many`. Default 64 MiB.
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.max_batch_bytes = Some(n);
        self
    }

    /// Bytes a shard may hold appended but not yet written to its file
    /// before non-durable writers wait for the core. Default 64 MiB.
    pub fn tail_buffer_bytes(mut self, n: usize) -> Self {
        self.tail_buffer_bytes = Some(n);
        self
    }

    /// Injects the faults of `plan` into every write and sync of this
    /// database (feature `fault-injection`; for tests).
    #[cfg(feature = "fault-injection")]
    pub fn fault_plan(mut self, plan: crate::io::fault::FaultPlan) -> Self {
        self.fault_plan = Some(plan);
        self
    }

    pub(crate) fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self
    }

    /// Opens (or creates) the database.
    pub fn build(self) -> Result<Emdb> {
        let config = self.into_config()?;
        Emdb::open_with(config)
    }

    pub(crate) fn into_config(self) -> Result<Config> {
        let dir = if self.in_memory {
            None
        } else {
            Some(self.resolve_path()?)
        };
        let shards = match self.shards {
            Some(0) => return Err(Error::InvalidConfig("shards must be at least 1")),
            Some(n) if n > 1024 => return Err(Error::InvalidConfig("shards must be at most 1024")),
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let backend = if self.in_memory {
            IoBackend::Memory
        } else {
            match self.backend {
                IoBackend::Auto => backend_from_env()?,
                IoBackend::Memory => {
                    return Err(Error::InvalidConfig(
                        "IoBackend::Memory is chosen by Emdb::open_in_memory, not the builder",
                    ))
                }
                b => b,
            }
        };
        let config = Config {
            dir,
            flush_policy: self.flush_policy,
            shards,
            backend,
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            segment_size: self.segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE),
            max_key_len: self.max_key_len.unwrap_or(DEFAULT_MAX_KEY_LEN),
            max_value_len: self.max_value_len.unwrap_or(DEFAULT_MAX_VALUE_LEN),
            max_batch_records: self.max_batch_records.unwrap_or(DEFAULT_MAX_BATCH_RECORDS),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(DEFAULT_MAX_BATCH_BYTES),
            tail_buffer_bytes: self.tail_buffer_bytes.unwrap_or(DEFAULT_TAIL_BUFFER_BYTES),
            #[cfg(feature = "fault-injection")]
            fault_plan: self.fault_plan,
        };
        validate(&config)?;
        Ok(config)
    }

    fn resolve_path(&self) -> Result<PathBuf> {
        let os =
            self.app_name.is_some() || self.database_name.is_some() || self.data_root.is_some();
        match (&self.path, os) {
            (Some(_), true) => Err(Error::InvalidConfig(
                "path() cannot be combined with app_name/database_name/data_root",
            )),
            (Some(p), false) => Ok(p.clone()),
            (None, false) => Err(Error::InvalidConfig(
                "no location: call path(), or app_name() for OS path resolution",
            )),
            (None, true) => {
                let app = self.app_name.as_deref().ok_or(Error::InvalidConfig(
                    "database_name/data_root need app_name",
                ))?;
                check_folder_name(app, "app_name must be one non-empty folder name")?;
                let db = self.database_name.as_deref().unwrap_or("emdb");
                check_folder_name(db, "database_name must be one non-empty folder name")?;
                let root = match &self.data_root {
                    Some(r) => r.clone(),
                    None => platform_data_root()?,
                };
                Ok(root.join(app).join(db))
            }
        }
    }
}

fn check_folder_name(name: &str, why: &'static str) -> Result<()> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.contains("..");
    if bad {
        Err(Error::InvalidConfig(why))
    } else {
        Ok(())
    }
}

fn platform_data_root() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Ok(p);
        }
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local").join("share")),
        None => Err(Error::InvalidConfig(
            "neither XDG_DATA_HOME nor HOME is set; use data_root()",
        )),
    }
}

fn backend_from_env() -> Result<IoBackend> {
    match std::env::var("EMDB_IO_BACKEND") {
        Err(_) => Ok(IoBackend::Auto),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(IoBackend::Auto),
            "uring" | "io_uring" | "iouring" => Ok(IoBackend::Uring),
            "portable" | "posix" => Ok(IoBackend::Portable),
            _ => Err(Error::InvalidConfig(
                "EMDB_IO_BACKEND must be uring, portable or auto",
            )),
        },
    }
}

fn validate(c: &Config) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_resolution_rules() {
        let e = EmdbBuilder::new().into_config().unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)));
        let e = EmdbBuilder::new()
            .path("/tmp/x")
            .app_name("a")
            .into_config()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)));
        for bad in ["", "a/b", "..", "a\\b", "x..y"] {
            let e = EmdbBuilder::new()
                .app_name(bad)
                .data_root("/tmp")
                .into_config()
                .unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{bad:?}");
        }
        let c = EmdbBuilder::new()
            .app_name("app")
            .database_name("db")
            .data_root("/srv/data")
            .io_backend(IoBackend::Portable)
            .into_config()
            .unwrap();
        assert_eq!(c.dir.as_deref(), Some(Path::new("/srv/data/app/db")));
    }

    #[test]
    fn limits_are_checked() {
        let b = || {
            EmdbBuilder::new()
                .path("/tmp/x")
                .io_backend(IoBackend::Portable)
        };
        assert!(b().shards(0).into_config().is_err());
        assert!(b().segment_size(100).into_config().is_err());
        assert!(
            b().segment_size(1 << 20).into_config().is_err(),
            "16 MiB values do not fit"
        );
        assert!(b()
            .segment_size(1 << 20)
            .max_value_len(1000)
            .into_config()
            .is_ok());
        assert!(b().max_key_len(0).into_config().is_err());
    }
}
