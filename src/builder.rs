//! `EmdbBuilder`: every knob, validated into a `Config` with each limit
//! explicit. `build()` lives with `Emdb` (db.rs), so this file needs nothing
//! above the configuration.

use std::path::{Path, PathBuf};

use crate::config::{validate, Config, FlushPolicy, SyncStrategy};
use crate::config::{
    DEFAULT_COMPACTION_THRESHOLD, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_RECORDS,
    DEFAULT_MAX_KEY_LEN, DEFAULT_MAX_VALUE_LEN, DEFAULT_SEGMENT_SIZE, DEFAULT_TAIL_BUFFER_BYTES,
};
use crate::error::{Error, Result};
use crate::io::IoBackend;

/// Builder for [`Emdb`](crate::Emdb): `Emdb::builder().path(p).build()`.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct EmdbBuilder {
    path: Option<PathBuf>,
    app_name: Option<String>,
    database_name: Option<String>,
    data_root: Option<PathBuf>,
    flush_policy: FlushPolicy,
    sqpoll_idle_ms: Option<u32>,
    sync_strategy: SyncStrategy,
    shards: Option<usize>,
    backend: IoBackend,
    segment_size: Option<u64>,
    max_key_len: Option<usize>,
    max_value_len: Option<usize>,
    max_batch_records: Option<usize>,
    max_batch_bytes: Option<usize>,
    tail_buffer_bytes: Option<usize>,
    compaction_threshold: Option<f64>,
    background_compaction: Option<bool>,
    range_scans: bool,
    read_only: bool,
    default_ttl: Option<std::time::Duration>,
    in_memory: bool,
    #[cfg(feature = "fault-injection")]
    fault_plan: Option<crate::io::fault::FaultPlan>,
    #[cfg(feature = "encrypt")]
    encryption: Option<crate::crypt::EncryptionInput>,
    #[cfg(feature = "encrypt")]
    cipher: Option<crate::crypt::Cipher>,
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

    /// How the shard cores run writes and fdatasyncs; see [`SyncStrategy`].
    /// Default [`SyncStrategy::Auto`], the best measured here. The portable
    /// backend runs `RingLinked` as `Syscalls`.
    pub fn sync_strategy(mut self, strategy: SyncStrategy) -> Self {
        self.sync_strategy = strategy;
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

    /// Largest key in bytes. Default 64 KiB - 1; below 2 GiB, and at most
    /// 16 MiB with range scans on (`Error::InvalidConfig` otherwise).
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

    /// The fraction of a sealed segment's bytes that must be dead
    /// (overwritten or removed records, tombstones) before compaction
    /// rewrites it: above 0, at most 1. Default 0.4
    /// ([`DEFAULT_COMPACTION_THRESHOLD`](crate::DEFAULT_COMPACTION_THRESHOLD)).
    pub fn compaction_threshold(mut self, dead_fraction: f64) -> Self {
        self.compaction_threshold = Some(dead_fraction);
        self
    }

    /// Keeps an ordered index of every key, so that `range`,
    /// `range_prefix`, `range_iter`, `range_prefix_iter`, `iter_from` and
    /// `iter_after` work (without it they return `Error::InvalidConfig`),
    /// and `group` becomes a prefix seek. Default off. It costs about 8
    /// to 12 bytes of memory per key plus the key's length and some slack,
    /// some work on each write of a new key and each removal, and a rebuild
    /// at open (see ARCHITECTURE.md, "Range scans", for the figures). Keys
    /// are then at most 16 MiB (`max_key_len`).
    pub fn enable_range_scans(mut self, on: bool) -> Self {
        self.range_scans = on;
        self
    }

    /// Whether a background thread compacts segments as they pass the
    /// compaction threshold. Default on; `compact()` works either way.
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = Some(on);
        self
    }

    /// Opens an existing database for reading only; beyond the emdb API.
    ///
    /// Nothing in the database's directory is created, written, renamed or
    /// removed, not even the lock file's holder line: every file is opened
    /// for reading, and the files are byte for byte the same after the
    /// handle is dropped. Recovery runs in memory only (a torn tail is
    /// ignored, not cut). Every call that would change the database
    /// (writes, `compact`, `checkpoint`, creating or dropping a namespace)
    /// returns `Error::ReadOnly`; reads, iterators, `stats` and `backup_to`
    /// (into another directory) work, and `flush` and `close` have nothing
    /// to do.
    ///
    /// It takes a shared lock: any number of read-only handles may be open
    /// at once, in any processes, and while one is open a writer's open
    /// gets `Error::LockBusy`, as a read-only open does while a writer
    /// holds the database. A directory without a lock file (a backup never
    /// opened for writing) is read without a lock. A directory that holds
    /// no database is an `Error::Io` of kind `NotFound`; combined with
    /// `in_memory()` it is `Error::InvalidConfig`.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Injects the faults of `plan` into every write and sync of this
    /// database (feature `fault-injection`; for tests).
    #[cfg(feature = "fault-injection")]
    pub fn fault_plan(mut self, plan: crate::io::fault::FaultPlan) -> Self {
        self.fault_plan = Some(plan);
        self
    }

    /// A database in memory only (no files, no lock) with this builder's
    /// other settings; [`Emdb::open_in_memory`](crate::Emdb::open_in_memory)
    /// is the same with every default. Beyond the emdb API. With `path`
    /// or the OS-resolution methods it is `Error::InvalidConfig`.
    pub fn in_memory(mut self) -> Self {
        self.in_memory = true;
        self
    }

    /// The expiry of every write that names none (`insert`, `insert_many`,
    /// and `Ttl::Default`): records then live this long unless written
    /// with `Ttl::Never` or persisted. Default: no expiry.
    #[cfg(feature = "ttl")]
    pub fn default_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Encrypts the database with this 256-bit key (feature `encrypt`). A
    /// new database is created encrypted; an existing one must have been
    /// created or encrypted with the same key, else opening fails with
    /// `Error::EncryptionKeyMismatch` before anything is read. See the
    /// crate docs, "Encryption".
    #[cfg(feature = "encrypt")]
    pub fn encryption_key(mut self, key: [u8; 32]) -> Self {
        self.encryption = Some(crate::crypt::EncryptionInput::Key(key));
        self
    }

    /// Encrypts the database with a key stretched from `passphrase` by
    /// Argon2id and the database's random salt (feature `encrypt`). The
    /// stretch is deliberately slow (about a second; see the crate docs);
    /// otherwise like [`encryption_key`](Self::encryption_key).
    #[cfg(feature = "encrypt")]
    pub fn encryption_passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.encryption = Some(crate::crypt::EncryptionInput::Passphrase(passphrase.into()));
        self
    }

    /// Encryption with `input` (the admin calls use it).
    #[cfg(feature = "encrypt")]
    pub(crate) fn encryption_input(mut self, input: crate::crypt::EncryptionInput) -> Self {
        self.encryption = Some(input);
        self
    }

    /// The AEAD of a new encrypted database (default AES-256-GCM; feature
    /// `encrypt`). An existing database keeps the cipher it was created
    /// with, which its keyring records.
    #[cfg(feature = "encrypt")]
    pub fn cipher(mut self, cipher: crate::crypt::Cipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    pub(crate) fn into_config(self) -> Result<Config> {
        let dir = if self.in_memory {
            if self.path.is_some()
                || self.app_name.is_some()
                || self.database_name.is_some()
                || self.data_root.is_some()
            {
                return Err(Error::InvalidConfig(
                    "in_memory() takes no path, app_name, database_name or data_root",
                ));
            }
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
        if self.read_only && self.in_memory {
            return Err(Error::InvalidConfig(
                "read_only() opens a database on disk; in_memory() has none",
            ));
        }
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
            sync_strategy: self.sync_strategy,
            segment_size: self.segment_size.unwrap_or(DEFAULT_SEGMENT_SIZE),
            max_key_len: self.max_key_len.unwrap_or(DEFAULT_MAX_KEY_LEN),
            max_value_len: self.max_value_len.unwrap_or(DEFAULT_MAX_VALUE_LEN),
            max_batch_records: self.max_batch_records.unwrap_or(DEFAULT_MAX_BATCH_RECORDS),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(DEFAULT_MAX_BATCH_BYTES),
            tail_buffer_bytes: self.tail_buffer_bytes.unwrap_or(DEFAULT_TAIL_BUFFER_BYTES),
            compaction_threshold: self
                .compaction_threshold
                .unwrap_or(DEFAULT_COMPACTION_THRESHOLD),
            background_compaction: self.background_compaction.unwrap_or(true) && !self.read_only,
            range_scans: self.range_scans,
            read_only: self.read_only,
            #[cfg(feature = "fault-injection")]
            fault_plan: self.fault_plan,
            default_ttl: self.default_ttl,
            #[cfg(feature = "encrypt")]
            encryption: self
                .encryption
                .map(|input| (input, self.cipher.unwrap_or_default())),
        };
        #[cfg(feature = "encrypt")]
        if self.cipher.is_some() && config.encryption.is_none() {
            return Err(Error::InvalidConfig(
                "cipher() needs encryption_key() or encryption_passphrase()",
            ));
        }
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
        assert!(b()
            .enable_range_scans(true)
            .max_key_len(16 << 20)
            .into_config()
            .is_ok());
        assert!(b()
            .enable_range_scans(true)
            .max_key_len((16 << 20) + 1)
            .into_config()
            .is_err());
        assert!(b().max_key_len((16 << 20) + 1).into_config().is_ok());
    }
}
