//! The crate's error type. Every public call returns [`Result`]; no public call
//! panics on bad input, bad file content or an I/O failure.

use std::fmt;
use std::path::PathBuf;

/// `Result<T, emdb::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in emdb.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error. Disk full shows up here as `ENOSPC`.
    Io(std::io::Error),
    /// A file at the database path does not start with emdb's magic bytes.
    MagicMismatch,
    /// A file was written by a format version this build does not read.
    VersionMismatch {
        /// Version found in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// Damage that recovery will not silently repair: valid, acknowledged
    /// data follows the damaged bytes, or a structural file is unreadable.
    Corrupted {
        /// Byte offset of the damage within `file`.
        offset: u64,
        /// What was wrong.
        reason: &'static str,
        /// The damaged file.
        file: PathBuf,
    },
    /// The builder's settings are inconsistent or out of range.
    InvalidConfig(&'static str),
    /// A transaction was rolled back.
    TransactionAborted(&'static str),
    /// Another process (or another open handle in this process) holds the
    /// database's lock file.
    LockBusy {
        /// The database directory.
        path: PathBuf,
    },
    /// An argument is not acceptable, for example an empty key.
    InvalidInput(&'static str),
    /// A nested-group prefix that is empty or has an empty segment
    /// (`nested` feature).
    InvalidPath,
    /// A TTL so long that the expiry time does not fit in Unix
    /// milliseconds (`ttl` feature).
    TtlOverflow,
    /// A key, value or batch is over a limit set in the configuration.
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The size that was asked for.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Encryption cannot go on as asked: an encrypted database opened
    /// without a key, a plaintext one with a key, a record that fails
    /// authentication, or an admin call on an open database.
    Encryption(&'static str),
    /// The key or passphrase is not the one the database was encrypted
    /// with. Nothing was read or changed.
    EncryptionKeyMismatch,
    /// The database is opened read-only (`EmdbBuilder::read_only`) and the
    /// call would change it.
    ReadOnly,
    /// A write or fsync of this shard failed earlier. The shard refuses
    /// writes from then on, because a failed fsync cannot be retried safely;
    /// reopen the database to recover what reached the disk.
    Poisoned {
        /// The shard that failed.
        shard: usize,
        /// The original failure.
        cause: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::MagicMismatch => {
                write!(f, "not an emdb file (bad magic bytes); check the path")
            }
            Error::VersionMismatch { found, expected } => write!(
                f,
                "file format version {found} is not supported (this build reads version {expected}); \
                 open it with a matching emdb release"
            ),
            Error::Corrupted { offset, reason, file } => write!(
                f,
                "corrupted database file {} at offset {offset}: {reason}; restore from a backup \
                 or move the damaged file aside",
                file.display()
            ),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::TransactionAborted(why) => write!(f, "transaction aborted: {why}"),
            Error::LockBusy { path } => write!(
                f,
                "database {} is locked by another handle or process; close it first, or use \
                 Emdb::lock_holder / Emdb::break_lock if its holder is gone",
                path.display()
            ),
            Error::InvalidInput(why) => write!(f, "invalid input: {why}"),
            Error::InvalidPath => write!(
                f,
                "invalid group prefix: it must be one or more non-empty segments joined by '.' \
                 (not empty, and no leading, trailing or doubled '.')"
            ),
            Error::TtlOverflow => write!(
                f,
                "the TTL is too long: now plus the TTL does not fit in Unix milliseconds; \
                 use Ttl::Never for a record that does not expire"
            ),
            Error::LimitExceeded { what, len, max } => write!(
                f,
                "{what} is {len}, over the configured limit of {max}; raise the limit in the builder \
                 or split the data"
            ),
            Error::Encryption(why) => write!(f, "encryption error: {why}"),
            Error::EncryptionKeyMismatch => write!(
                f,
                "the encryption key or passphrase does not match the one this database was \
                 encrypted with; nothing was read or changed, so retry with the right one"
            ),
            Error::ReadOnly => write!(
                f,
                "the database is opened read-only and this call would change it; open it \
                 without read_only() to write"
            ),
            Error::Poisoned { shard, cause } => write!(
                f,
                "shard {shard} refuses writes after an earlier I/O failure ({cause}); reopen the \
                 database to recover what reached the disk"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    pub(crate) fn corrupted(file: impl Into<PathBuf>, offset: u64, reason: &'static str) -> Self {
        Error::Corrupted {
            offset,
            reason,
            file: file.into(),
        }
    }
}
