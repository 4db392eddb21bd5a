//! `RaftLogStorage` on emdb: the Raft log in namespace `raft-log` (key: the
//! entry's index, 8 bytes big-endian, so range scans read it in order;
//! value: the entry as JSON), the vote, the last purged log id and the
//! committed log id in namespace `raft-meta`.
//!
//! An append is `insert_many` batches (each crash-atomic, at most
//! `APPEND_BYTES` each): the entries are readable when `append` returns,
//! and a `flush()` future spawned on the runtime fires the callback when
//! they are durable, so concurrent appends share device flushes. Truncation
//! removes the suffix in atomic batches from the end and is durable before
//! it returns; purge records the last purged id, makes everything durable
//! (the state machine's applies included), then removes the prefix.
//!
//! emdb keeps writes in order within a shard, not across shards: after a
//! crash, a later unflushed batch can survive an earlier one. Neither was
//! reported durable (each callback waits for a flush covering every earlier
//! write), so the open cuts the log at the first entry missing after the
//! purge point.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use emdb::{AsyncEmdb, AsyncNamespace};
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};

use crate::{io_err, json, unjson, LOG_NS, META_NS};

/// Most removals in one atomic batch while truncating.
const REMOVE_BATCH: usize = 10_000;
/// Most bytes of entries in one atomic append batch.
const APPEND_BYTES: usize = 16 << 20;

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// The Raft log of one node (cheap to clone: every clone shares the
/// database).
pub struct LogStore<C: RaftTypeConfig> {
    db: AsyncEmdb,
    log: AsyncNamespace,
    meta: AsyncNamespace,
    /// The last entry's log id (this store is the log's only writer; its
    /// readers share it).
    last: Arc<Mutex<Option<LogIdOf<C>>>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            last: self.last.clone(),
        }
    }
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> io::Result<u64> {
    let b: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(b))
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// The log of the database `db` (range scans must be on). Entries that
    /// follow a gap are removed first: a crash can leave a later append
    /// durable and an earlier one not, but only before either was reported
    /// durable (each callback waits for a flush that covers every earlier
    /// append), so nothing acknowledged is lost.
    pub async fn open(db: AsyncEmdb) -> io::Result<LogStore<C>> {
        let log = db.namespace(LOG_NS).await.map_err(io_err)?;
        let meta = db.namespace(META_NS).await.map_err(io_err)?;
        let store = LogStore {
            db,
            log,
            meta,
            last: Arc::new(Mutex::new(None)),
        };
        store.finish_purge().await?;
        store.remove_after_gap().await?;
        let last = match store.keys(..).await?.last() {
            Some(i) => match store.log.get(key(*i)).await.map_err(io_err)? {
                Some(v) => Some(unjson::<EntryOf<C>>(&v)?.log_id()),
                None => None,
            },
            None => None,
        };
        *store.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        Ok(store)
    }

    /// Removes what a purge a crash interrupted left at or below the last
    /// purged index.
    async fn finish_purge(&self) -> io::Result<()> {
        let Some(purged) = self.get_meta::<LogIdOf<C>>(LAST_PURGED).await? else {
            return Ok(());
        };
        let keys: Vec<Vec<u8>> = self.raw_keys(..=key(purged.index()).to_vec()).await?;
        self.remove_prefix(keys).await
    }

    /// Removes `keys` (a prefix of the log) in atomic batches from the
    /// front: a crash part-way leaves a shorter prefix, never a gap.
    async fn remove_prefix(&self, keys: Vec<Vec<u8>>) -> io::Result<()> {
        for part in keys.chunks(REMOVE_BATCH) {
            self.remove_batch(part.to_vec()).await?;
        }
        Ok(())
    }

    /// Removes `keys` in one transaction: all or nothing after a crash.
    async fn remove_batch(&self, keys: Vec<Vec<u8>>) -> io::Result<()> {
        self.log
            .transaction(move |tx| {
                for k in &keys {
                    tx.remove(k)?;
                }
                Ok(())
            })
            .await
            .map_err(io_err)
    }

    /// Cuts the log at the first entry missing after the purge point (or
    /// after index 0 if nothing was purged): what follows was never
    /// reported durable.
    async fn remove_after_gap(&self) -> io::Result<()> {
        let purged: Option<LogIdOf<C>> = self.get_meta(LAST_PURGED).await?;
        // openraft's log starts at index 0; after a purge, right after it.
        let mut expect = purged.map_or(0, |p| p.index() + 1);
        let keys = self.keys(..).await?;
        let cut = keys
            .iter()
            .position(|i| {
                let missing = *i != expect;
                expect += 1;
                missing
            })
            .unwrap_or(keys.len());
        if cut == keys.len() {
            return Ok(());
        }
        let after: Vec<Vec<u8>> = keys[cut..].iter().map(|i| key(*i).to_vec()).collect();
        self.remove_all(after).await?;
        self.db.flush().await.map_err(io_err)
    }

    /// The indexes of the entries in `range`, ascending (the stream reads
    /// each entry; only the index is kept).
    async fn keys<R: RangeBounds<Vec<u8>>>(&self, range: R) -> io::Result<Vec<u64>> {
        self.raw_keys(range)
            .await?
            .iter()
            .map(|k| index_of(k))
            .collect()
    }

    /// The log keys in `range`, ascending, as stored.
    async fn raw_keys<R: RangeBounds<Vec<u8>>>(&self, range: R) -> io::Result<Vec<Vec<u8>>> {
        let mut s = self.log.range_stream(range).await.map_err(io_err)?;
        let mut out = Vec::new();
        while let Some((k, _)) = futures::StreamExt::next(&mut s).await {
            out.push(k);
        }
        Ok(out)
    }

    async fn get_meta<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> io::Result<Option<T>> {
        match self.meta.get(k.to_vec()).await.map_err(io_err)? {
            Some(v) => unjson(&v).map(Some),
            None => Ok(None),
        }
    }

    fn set_last(&self, last: Option<LogIdOf<C>>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    fn last(&self) -> Option<LogIdOf<C>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes `keys`, in atomic batches from the end backwards, so that a
    /// crash part-way leaves a log without a gap.
    async fn remove_all(&self, mut keys: Vec<Vec<u8>>) -> io::Result<()> {
        while !keys.is_empty() {
            let part = keys.split_off(keys.len().saturating_sub(REMOVE_BATCH));
            let more = !keys.is_empty();
            self.remove_batch(part).await?;
            if more {
                // Durable before the next (lower) batch goes.
                self.db.flush().await.map_err(io_err)?;
            }
        }
        Ok(())
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => Bound::Included(key(*x).to_vec()),
            Bound::Excluded(x) => Bound::Excluded(key(*x).to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Bound::Included(key(*x).to_vec()),
            Bound::Excluded(x) => Bound::Excluded(key(*x).to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        // Streamed: no thread of its own, no shard lock held meanwhile.
        let mut rows = self.log.range_stream((start, end)).await.map_err(io_err)?;
        let mut out = Vec::new();
        while let Some((_, v)) = futures::StreamExt::next(&mut rows).await {
            out.push(unjson(&v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(VOTE).await
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<C>> = self.get_meta(LAST_PURGED).await?;
        let last_log_id = match self.last() {
            Some(l) => Some(l),
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.meta
            .insert(VOTE.to_vec(), json(vote)?)
            .await
            .map_err(io_err)?;
        // Durable before it is acted on.
        self.db.flush().await.map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        match committed {
            Some(c) => self.meta.insert(COMMITTED.to_vec(), json(&c)?).await,
            None => self.meta.remove(COMMITTED.to_vec()).await.map(|_| ()),
        }
        .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        // Saved without a flush: after a crash it may be ahead of the log,
        // whose tail was not durable. What the log holds up to it is
        // committed (truncations are durable before later appends).
        let committed: Option<LogIdOf<C>> = self.get_meta(COMMITTED).await?;
        let floor: Option<LogIdOf<C>> = self.get_meta(LAST_PURGED).await?;
        let last = self.last().or(floor);
        Ok(match (committed, last) {
            (Some(c), Some(l)) if l.index() < c.index() => Some(l),
            (Some(_), None) => None,
            (c, _) => c,
        })
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        let (mut bytes, mut last) = (0usize, None);
        for e in entries {
            let v = json(&e)?;
            bytes += v.len();
            batch.push((key(e.index()).to_vec(), v));
            last = Some(e.log_id());
            if bytes >= APPEND_BYTES {
                // Readable when this returns; a crash may keep this batch
                // and lose the next (never the other way round reported).
                self.log
                    .insert_many(std::mem::take(&mut batch))
                    .await
                    .map_err(io_err)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.log.insert_many(batch).await.map_err(io_err)?;
        }
        if last.is_some() {
            self.set_last(last);
        }
        // Durable later: the callback waits for a flush, which concurrent
        // appends share.
        let flushed = self.db.flush();
        // Detached: the task runs on without its handle.
        drop(C::spawn(async move {
            callback.io_completed(flushed.await.map_err(io_err));
        }));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index() + 1);
        let keys: Vec<Vec<u8>> = self.raw_keys(key(from).to_vec()..).await?;
        self.remove_all(keys).await?;
        // Durable before anything is appended after it: a new entry must
        // never survive a crash beside the old one it replaced.
        self.db.flush().await.map_err(io_err)?;
        // What remains ends at `last_log_id` (or is empty).
        let last = self.last().filter(|l| l.index() < from);
        self.set_last(last.or(last_log_id));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.meta
            .insert(LAST_PURGED.to_vec(), json(&log_id)?)
            .await
            .map_err(io_err)?;
        // Everything before durable first: the last purged id, and the
        // state machine's applies up to it (they are not flushed one by
        // one; the log below this point is their only other copy).
        self.db.flush().await.map_err(io_err)?;
        let keys: Vec<Vec<u8>> = self.raw_keys(..=key(log_id.index()).to_vec()).await?;
        // What a crash leaves of this is finished by the next open.
        self.remove_prefix(keys).await?;
        if self.last().is_none_or(|l| l.index() <= log_id.index()) {
            // Purged to the end: `get_log_state` reports the purged id.
            self.set_last(None);
        }
        Ok(())
    }
}
