//! emdb as the log and state store of an [openraft] cluster.
//!
//! [`open`] gives one node's [`LogStore`] (openraft's `RaftLogStorage`) and
//! [`StateMachine`] (`RaftStateMachine`, a key-value map), both kept in
//! namespaces of one emdb database: `raft-log` (the entries), `raft-meta`
//! (vote, purge point, committed id, which state-machine namespace is
//! current), `sm-<generation>` (the map with its last applied id) and
//! `raft-snap` (the current snapshot). Everything goes through emdb's async
//! API: no `spawn_blocking`.
//!
//! Appends are readable when `append` returns and durable when openraft's
//! callback fires, after a `flush()` that concurrent appends share (group
//! commit). `apply` writes a batch of commands and the last applied log id
//! in one transaction. Snapshots are read through a point-in-time iterator
//! while writers go on, and installed by filling a new namespace and
//! switching to it with one durable write.
//!
//! [`local`] is an in-process network (a router of `Raft` handles) for
//! tests, examples and benchmarks.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub mod local;
mod log_store;
mod state_machine;
pub mod tcp;

pub use log_store::LogStore;
pub use state_machine::StateMachine;

/// Namespace of the log entries.
pub const LOG_NS: &str = "raft-log";
/// Namespace of the vote, the purge point and the state machine's pointer.
pub const META_NS: &str = "raft-meta";
/// Namespace of the current snapshot.
pub const SNAP_NS: &str = "raft-snap";

/// A command of the key-value state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `key` = `value`.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
}

/// Longest key a command may carry, in bytes.
pub const MAX_KEY: usize = 4096;
/// Longest value a command may carry, in bytes.
pub const MAX_VALUE: usize = 4 << 20;
/// Most bytes a command may take as JSON (control characters take six
/// each): its log entry must fit one emdb value (16 MiB by default).
pub const MAX_ENCODED: usize = 8 << 20;

impl Request {
    /// `Err` with a reason when the command is over the limits
    /// ([`MAX_KEY`], [`MAX_VALUE`], [`MAX_ENCODED`]). Check before `client_write`: a
    /// committed command over them is applied as a no-op answered with
    /// the error.
    pub fn check(&self) -> Result<(), String> {
        let (key, value) = match self {
            Request::Set { key, value } => (key, value.len()),
            Request::Delete { key } => (key, 0),
        };
        if key.len() > MAX_KEY {
            return Err(format!("a key of {} bytes is over {MAX_KEY}", key.len()));
        }
        if value > MAX_VALUE {
            return Err(format!("a value of {value} bytes is over {MAX_VALUE}"));
        }
        let encoded = serde_json::to_vec(self).map_or(usize::MAX, |b| b.len());
        if encoded > MAX_ENCODED {
            return Err(format!(
                "the command takes {encoded} bytes as JSON, over {MAX_ENCODED}"
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Set { key, value } => write!(f, "set {key:?} = {value:?}"),
            Request::Delete { key } => write!(f, "delete {key:?}"),
        }
    }
}

/// What a command returns: the value set, or the value a delete removed;
/// or, for a command over the limits, why it changed nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The value.
    pub value: Option<String>,
    /// Why the command changed nothing, if it did not.
    #[serde(default)]
    pub error: Option<String>,
}

openraft::declare_raft_types!(
    /// The type configuration of an emdb-backed key-value cluster.
    pub TypeConfig:
        D = Request,
        R = Response,
);

/// A node id.
pub type NodeId = u64;

/// The `Raft` handle of a node of this crate's type configuration.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Opens (or creates) the emdb database of one node at `path` and returns
/// its log store and state machine. Range scans are turned on (the log is
/// read in index order). The database stays open while either lives.
pub async fn open(path: impl AsRef<Path>) -> io::Result<(LogStore<TypeConfig>, StateMachine)> {
    let db = emdb::AsyncEmdb::builder()
        .path(path.as_ref())
        .enable_range_scans(true)
        .build_async()
        .await
        .map_err(io_err)?;
    open_db(db).await
}

/// [`open`] on a database opened already (it must have range scans on).
pub async fn open_db(db: emdb::AsyncEmdb) -> io::Result<(LogStore<TypeConfig>, StateMachine)> {
    let log = LogStore::open(db.clone()).await?;
    let sm = StateMachine::open(db).await?;
    Ok((log, sm))
}

pub(crate) fn io_err(e: emdb::Error) -> io::Error {
    match e {
        emdb::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

pub(crate) fn json<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn unjson<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    serde_json::from_slice(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
