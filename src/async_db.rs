//! `AsyncEmdb`: the async API (feature `async`). The design is in the
//! documentation of [`AsyncEmdb`] and in ARCHITECTURE.md, "The async API".

use std::future::Future;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::builder::EmdbBuilder;
use crate::db::Emdb;
use crate::engine::{handoff, Engine, DEFAULT_NS};
use crate::error::Result;
use crate::iter::{EmdbIter, EmdbKeyIter};
use crate::namespace::AsyncNamespace;
use crate::stats::EmdbStats;

/// An open database with an async API. `Send + Sync + Clone`; every
/// clone shares one engine.
///
/// ```
/// # futures::executor::block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// let db = emdb::AsyncEmdb::open(dir.path().join("db")).await?;
/// db.insert("user:1", "ada").await?;
/// db.flush().await?; // durable from here on
/// assert_eq!(db.get("user:1").await?, Some(b"ada".to_vec()));
/// db.close().await?; // flush, checkpoint, release the lock
/// # Ok::<(), emdb::Error>(()) }).unwrap();
/// ```
///
/// The engine is async-native: a write is a future that appends under its
/// shard's lock on the polling thread and is done; a flush is a future that
/// joins a commit generation and is woken by the shard core that finishes
/// the generation's device flush. The blocking [`Emdb`] drives those same
/// futures with a parking `block_on`; `AsyncEmdb` hands them to your
/// executor. Nothing here spawns onto a runtime or depends on one, so the
/// futures run on tokio (multi-thread or current-thread), inside
/// `tokio_uring::start`, under `futures::executor::block_on`, or on any
/// other executor.
///
/// # What runs where
/// - **On the polling thread:** appends (a copy into the shard's tail
///   buffer under its lock, a few hundred nanoseconds) and point reads
///   (`get`, `contains_key`, tens of nanoseconds from the index and the
///   file mapping; a read of a page not in memory faults it in, as a
///   synchronous read of a mapped file does). Reads are done when the call
///   is made: the returned future is ready at once.
/// - **On the shard cores:** the log writes and fdatasyncs; they wake the
///   futures waiting for room in a tail buffer or for durability.
/// - **On a thread of its own, awaited:** opening (recovery), `checkpoint`,
///   `compact`, `backup_to` and `close`, which do file I/O for
///   milliseconds or more; also the creation of a segment file when the log
///   rotates (a writer waits for it without holding any lock).
///
/// # Cancellation
/// Every future owns what it needs (a clone of the handle, owned keys and
/// values) and is `Send + 'static`. Dropping one at any await point:
/// - never leaves a shard locked (no lock is held across an await);
/// - never frees a buffer the kernel may still read (records are copied
///   into the engine's tail buffers before the kernel sees them);
/// - never undoes an acknowledged write.
///
/// A write (`insert`, `insert_many`, `remove`, `clear`) whose future is
/// dropped is either applied whole or not at all: it is applied by the poll
/// that finds room for it, in one step under the shard locks, and not at
/// all if dropped before. An applied write becomes durable with the next
/// flush like any other, even if its future (waiting for durability under
/// `FlushPolicy::WriteThrough`) was dropped. A dropped `flush` changes
/// nothing. A dropped `checkpoint`, `compact`, `backup_to` or `close` runs
/// to completion on its thread; only its result is lost.
///
/// # Closing
/// [`AsyncEmdb::close`] flushes, checkpoints and, for the last handle,
/// stops the engine and releases the lock, all off the polling thread, and
/// returns the errors. Dropping the last handle without it never blocks the
/// dropping task: the engine closes on a closer thread. An open of the same
/// database in this process waits for that close, and the process waits for
/// it at exit (up to 60 s); another process may see `Error::LockBusy` until
/// it is done, so prefer `close().await`.
pub struct AsyncEmdb {
    engine: ManuallyDrop<Arc<Engine>>,
}

impl Clone for AsyncEmdb {
    fn clone(&self) -> Self {
        AsyncEmdb::wrap(Arc::clone(&self.engine))
    }
}

impl Drop for AsyncEmdb {
    fn drop(&mut self) {
        // SAFETY: taken once, here, and never used again.
        let engine = unsafe { ManuallyDrop::take(&mut self.engine) };
        if let Some(engine) = Arc::into_inner(engine) {
            handoff::close_in_background(engine);
        }
    }
}

impl std::fmt::Debug for AsyncEmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEmdb")
            .field("path", &self.engine.path())
            .finish_non_exhaustive()
    }
}

crate::kv::async_key_value_api!(AsyncEmdb, "the default namespace");

impl AsyncEmdb {
    #[inline]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn engine_arc(&self) -> Arc<Engine> {
        Arc::clone(&self.engine)
    }

    /// An owning handle for a future.
    #[inline]
    fn owner(&self) -> AsyncEmdb {
        self.clone()
    }

    #[inline]
    const fn ns(&self) -> u32 {
        DEFAULT_NS
    }

    /// As [`Emdb::namespace`]. A namespace that exists resolves at once;
    /// creating one stores the manifest, on a thread of its own.
    pub fn namespace(
        &self,
        name: impl AsRef<str>,
    ) -> impl Future<Output = Result<AsyncNamespace>> + Send + 'static {
        let (db, name) = (self.clone(), name.as_ref().to_string());
        let existing = self.engine.ctx.find_namespace(&name);
        async move {
            let id = match existing {
                Some(id) => id,
                None => {
                    let owner = db.clone();
                    let n = name.clone();
                    handoff::offload("emdb-namespace", move || owner.engine.ctx.namespace_id(&n))
                        .await?
                }
            };
            Ok(AsyncNamespace::new(db, id, &name))
        }
    }

    /// As [`Emdb::drop_namespace`], on a thread of its own (it stores the
    /// manifest).
    pub fn drop_namespace(
        &self,
        name: impl AsRef<str>,
    ) -> impl Future<Output = Result<bool>> + Send + 'static {
        let (db, name) = (self.clone(), name.as_ref().to_string());
        handoff::offload("emdb-drop-namespace", move || {
            db.engine.drop_namespace(&name)
        })
    }

    /// As [`Emdb::list_namespaces`].
    pub fn list_namespaces(&self) -> impl Future<Output = Result<Vec<String>>> + Send + 'static {
        std::future::ready(Ok(self.engine.ctx.namespace_names()))
    }

    fn wrap(engine: Arc<Engine>) -> AsyncEmdb {
        AsyncEmdb {
            engine: ManuallyDrop::new(engine),
        }
    }

    /// Opens or creates the database directory at `path` with every
    /// default. Recovery runs on a thread of its own. Fails with
    /// `Error::LockBusy` while another process holds the database.
    pub fn open(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<AsyncEmdb>> + Send + 'static {
        EmdbBuilder::new().path(path).build_async()
    }

    /// A database in memory only, as [`Emdb::open_in_memory`].
    ///
    /// # Panics
    /// Only if the process cannot map memory or start a thread.
    pub fn open_in_memory() -> AsyncEmdb {
        AsyncEmdb::from_sync(Emdb::open_in_memory())
    }

    /// Wraps a blocking handle: both then share one engine.
    pub fn from_sync(db: Emdb) -> AsyncEmdb {
        AsyncEmdb::wrap(db.into_engine())
    }

    /// A builder; finish it with [`EmdbBuilder::build_async`].
    pub fn builder() -> EmdbBuilder {
        EmdbBuilder::new()
    }

    /// A blocking handle to the same engine (for `get_zerocopy`, the lazy
    /// iterators, or code that is not async).
    pub fn sync_handle(&self) -> Arc<Emdb> {
        Arc::new(Emdb::from_engine(Arc::clone(&self.engine)))
    }

    /// The database directory (empty for an in-memory database).
    pub fn path(&self) -> &Path {
        self.engine.path()
    }

    /// Resolves once every write accepted before the call, by any handle,
    /// is durable. Concurrent flushes share device flushes; the waiting
    /// task is woken by the shard core that completes the flush.
    pub fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let db = self.clone();
        async move { db.engine.flush().await }
    }

    /// As [`Emdb::checkpoint`], on a thread of its own.
    pub fn checkpoint(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let db = self.clone();
        handoff::offload("emdb-checkpoint", move || {
            crate::engine::block_on(db.engine.checkpoint())
        })
    }

    /// As [`Emdb::compact`], on a thread of its own.
    pub fn compact(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let db = self.clone();
        handoff::offload("emdb-compact", move || {
            let threshold = db.engine.ctx.config.compaction_threshold;
            db.engine.compact_with(threshold, true).map(|_| ())
        })
    }

    /// As [`Emdb::backup_to`], on a thread of its own.
    pub fn backup_to(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (db, dest) = (self.clone(), path.as_ref().to_path_buf());
        handoff::offload("emdb-backup", move || db.engine.backup_to(&dest))
    }

    /// Current figures, as [`Emdb::stats`].
    pub fn stats(&self) -> impl Future<Output = Result<EmdbStats>> + Send + 'static {
        std::future::ready(Ok(self.engine.stats()))
    }

    /// How far the running maintenance call is, as
    /// [`Emdb::maintenance_progress`] (it never waits).
    pub fn maintenance_progress(&self) -> Option<crate::MaintenanceProgress> {
        self.engine.ctx.progress.get()
    }

    /// Closes this handle, off the polling thread, and returns what a drop
    /// would hide, as [`Emdb::close`]: every accepted write durable, a
    /// checkpoint on disk, and for the last handle the engine stopped and
    /// the lock released before it resolves.
    pub fn close(mut self) -> impl Future<Output = Result<()>> + Send + 'static {
        // SAFETY: taken once; `forget` below keeps Drop from taking it again.
        let engine = unsafe { ManuallyDrop::take(&mut self.engine) };
        std::mem::forget(self);
        handoff::offload("emdb-close", move || crate::engine::close_handle(engine))
    }
}

impl EmdbBuilder {
    /// Opens (or creates) the database as an [`AsyncEmdb`]. Recovery runs
    /// on a thread of its own; the configuration is checked first.
    pub fn build_async(self) -> impl Future<Output = Result<AsyncEmdb>> + Send + 'static {
        let config = self.into_config();
        async move {
            let config = config?;
            let db = handoff::offload("emdb-open", move || Emdb::open_with(config)).await?;
            Ok(AsyncEmdb::from_sync(db))
        }
    }
}

/// Records a stream yields before it lets the executor run something else.
const YIELD_EVERY: u32 = 64;

/// A stream over a point-in-time snapshot that reads each record when it
/// is polled for it (see [`AsyncEmdb::iter_stream`]). Every
/// 64 items it wakes itself and returns `Pending`, giving the
/// executor a turn: a stream whose items are always ready would otherwise
/// hold its worker for the whole scan.
pub struct SnapshotStream<I> {
    iter: I,
    budget: u32,
}

/// Stream of `(key, value)` pairs over a point-in-time snapshot, in no
/// particular order (see [`AsyncEmdb::iter_stream`]).
pub type EmdbStream = SnapshotStream<EmdbIter>;

/// Stream of keys over a point-in-time snapshot (see
/// [`AsyncEmdb::keys_stream`]).
pub type EmdbKeyStream = SnapshotStream<EmdbKeyIter>;

/// Stream of `(key, value)` pairs of a key range in ascending order (see
/// [`AsyncEmdb::range_stream`]): an [`EmdbRangeIter`](crate::EmdbRangeIter)
/// polled one record at a time, so at most one chunk (128 records) is in
/// memory, and what it sees follows `EmdbRangeIter`'s rule. Reading a
/// chunk (when the previous one is used up) holds the shard locks for
/// tens of microseconds inside `poll_next`.
pub type EmdbRangeStream = SnapshotStream<crate::range::EmdbRangeIter>;

impl<I> SnapshotStream<I> {
    pub(crate) fn new(iter: I) -> SnapshotStream<I> {
        SnapshotStream {
            iter,
            budget: YIELD_EVERY,
        }
    }
}

impl<I: Iterator + Unpin> futures_core::Stream for SnapshotStream<I> {
    type Item = I::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        let me = &mut *self;
        if me.budget == 0 {
            me.budget = YIELD_EVERY;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        me.budget -= 1;
        Poll::Ready(me.iter.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    fn send_static<T: Send + 'static>(_: &T) {}

    #[test]
    fn handles_and_futures_are_send() {
        send_sync_clone::<AsyncEmdb>();
        let db = AsyncEmdb::open_in_memory();
        let key = String::from("k");
        send_static(&db.insert(key.as_str(), "v"));
        send_static(&db.insert_many([(key.as_str(), "v")]));
        send_static(&db.get(&key));
        send_static(&db.remove(&key));
        send_static(&db.contains_key(&key));
        send_static(&db.flush());
        send_static(&db.clear());
        send_static(&db.checkpoint());
        send_static(&db.compact());
        send_static(&db.backup_to("/nonexistent-emdb-test"));
        send_static(&db.iter_stream());
        send_static(&db.keys_stream());
        send_static(&db.clone().close());
        send_static(&AsyncEmdb::open("/nonexistent-emdb-test"));
    }
}
