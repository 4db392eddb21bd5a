//! emdb: an embedded key-value store for Linux services.
//!
//! A Bitcask-style append-only log with an in-memory hash index, run by
//! thread-per-core shards: each shard core owns a slice of the key space,
//! its segment files, its tail buffer and its I/O backend (an io_uring, or
//! plain system calls). Writers append to the tail buffer and return; the
//! core writes the buffer at the log tail. Durability is served by commit
//! generations: every flush that joins one is made durable by a single
//! device flush, whatever shards its records went to, so concurrent flushes
//! share device flushes ([`SyncStrategy`] picks how the cores issue their
//! writes and syncs). Reads are an index lookup plus the mapped file, on the
//! caller's thread.
//!
//! ```
//! # fn main() -> emdb::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! let db = emdb::Emdb::open(dir.path().join("db"))?;
//! db.insert("user:1", "ada")?;
//! db.flush()?; // durable from here on
//! assert_eq!(db.get("user:1")?.as_deref(), Some(&b"ada"[..]));
//! # Ok(()) }
//! ```
//!
//! With the `async` feature, `AsyncEmdb` hands the same
//! engine futures to any executor (tokio, tokio-uring,
//! `futures::executor`), with no `spawn_blocking`: see its
//! documentation for what runs where and what cancellation means.
//!
//! # Encryption
//!
//! With the `encrypt` feature, `EmdbBuilder::encryption_key` (32 raw bytes)
//! or `EmdbBuilder::encryption_passphrase` encrypts keys, values and
//! namespace names in every file, with AES-256-GCM (default) or
//! ChaCha20-Poly1305 (`EmdbBuilder::cipher`). A passphrase is stretched with
//! Argon2id, 256 MiB of memory and 4 passes (about 0.8 s per open on the
//! 2-core machine it was measured on), with a random salt stored in the
//! database's `KEYRING` file; the cost is recorded there too, so a
//! database keeps opening if the default changes. The wrong key is
//! `Error::EncryptionKeyMismatch` at open, before anything is read; a
//! record changed on disk is `Error::Corrupted`, never a wrong value.
//! `Emdb::enable_encryption`, `Emdb::disable_encryption` and
//! `Emdb::rotate_encryption_key` work on a closed database, atomically.
//! ARCHITECTURE.md, "Encryption", has the threat model: what is protected
//! against whom, and what is not (metadata such as record sizes and
//! expiry times, rollback of whole files, anyone inside the process).
//!
//! # Operating a database
//!
//! [`EmdbBuilder::read_only`] opens a database without changing a byte of
//! it (a shared lock; every write is `Error::ReadOnly`);
//! [`EmdbBuilder::verify`] checks every file and reports each problem with
//! its file and offset; [`Emdb::maintenance_progress`] tells how far a
//! compaction, backup or checkpoint is. The `emdb` command-line tool
//! (workspace member `cli/`) is built on these.
//!
//! See ARCHITECTURE.md for the design, the on-disk format and the measured
//! figures, and docs/API.md for a table of every call.

#![warn(missing_docs)]

#[cfg(feature = "encrypt")]
mod admin;
mod arena;
#[cfg(feature = "async")]
mod async_db;
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_api;
mod builder;
mod config;
mod crypt;
mod db;
mod engine;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api;
mod index;
mod io;
mod iter;
#[macro_use]
mod kv;
mod lock;
mod log;
mod namespace;
#[cfg(feature = "nested")]
mod nested;
mod nsindex;
mod range;
mod recovery;
mod sorted;
mod stats;
mod value;
mod verify;

#[cfg(feature = "async")]
pub use async_db::{AsyncEmdb, EmdbKeyStream, EmdbRangeStream, EmdbStream, SnapshotStream};
pub use builder::EmdbBuilder;
#[cfg(feature = "ttl")]
pub use config::Ttl;
pub use config::{
    FlushPolicy, SyncStrategy, DEFAULT_COMPACTION_THRESHOLD, DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_RECORDS, DEFAULT_MAX_KEY_LEN, DEFAULT_MAX_VALUE_LEN, DEFAULT_SEGMENT_SIZE,
    DEFAULT_TAIL_BUFFER_BYTES,
};
#[cfg(all(feature = "encrypt", feature = "fault-injection"))]
#[doc(hidden)]
pub use crypt::nonce_log;

/// `Emdb::rotate_encryption_key` with its file changes watched by `plan`,
/// for the power-cut test of rotation (features `encrypt` and
/// `fault-injection`).
#[cfg(all(feature = "encrypt", feature = "fault-injection"))]
#[doc(hidden)]
pub fn rotate_encryption_key_under_plan(
    path: impl AsRef<std::path::Path>,
    current: EncryptionInput,
    new: EncryptionInput,
    plan: &FaultPlan,
) -> Result<()> {
    let files = io::Files::watched(Some(plan.clone()));
    admin::rotate_with(&files, path.as_ref(), &current, &new)
}

/// `Emdb::enable_encryption` (with `Some(input)`) or
/// `Emdb::disable_encryption` (with the key in `from`) with every file
/// change and write watched by `plan`, for the power-cut test of the
/// rewrites (features `encrypt` and `fault-injection`).
#[cfg(all(feature = "encrypt", feature = "fault-injection"))]
#[doc(hidden)]
pub fn rewrite_encryption_under_plan(
    path: impl AsRef<std::path::Path>,
    from: Option<EncryptionInput>,
    to: Option<EncryptionInput>,
    plan: &FaultPlan,
) -> Result<()> {
    let files = io::Files::watched(Some(plan.clone()));
    let source = match from {
        Some(i) => Emdb::builder().encryption_input(i),
        None => Emdb::builder(),
    }
    .fault_plan(plan.clone());
    let plan = plan.clone();
    admin::rewrite(&files, path.as_ref(), source, move |b| {
        let b = b.fault_plan(plan);
        match to {
            Some(i) => b.encryption_input(i),
            None => b,
        }
    })
}
#[cfg(feature = "encrypt")]
pub use crypt::{Cipher, EncryptionInput};
pub use db::Emdb;
pub use engine::progress::{MaintenanceProgress, MaintenanceTask};
pub use engine::txn::Transaction;
pub use error::{Error, Result};
pub use io::IoBackend;
pub use iter::{EmdbIter, EmdbKeyIter};
pub use lock::LockHolder;
#[cfg(feature = "async")]
pub use namespace::AsyncNamespace;
pub use namespace::{Namespace, NamespaceIter, NamespaceKeyIter, NamespaceRangeIter};
#[cfg(feature = "nested")]
pub use nested::{Focus, GroupIter};
pub use range::{EmdbRangeCursor, EmdbRangeIter};
pub use stats::EmdbStats;
pub use value::ValueRef;
pub use verify::{Finding, VerifyReport};

#[cfg(feature = "fault-injection")]
pub use engine::ttl::advance_clock;
#[cfg(feature = "fault-injection")]
pub use io::fault::{FaultPlan, ImagePolicy, ImageReport};
