//! Transactions: optimistic, serializable, crash-atomic.
//!
//! A transaction stages its writes in memory and remembers the version of
//! every key it read (the location of the key's visible record, or none).
//! Commit takes the locks of every shard it writes or read from, checks
//! that no read key changed since it was read (else
//! `Error::TransactionAborted("conflict")`), appends every staged write as
//! one batch (one sequence number, the batch's frame count in each frame:
//! recovery applies it whole or not at all), and updates the indexes, all
//! under those locks. Plain writes take the same shard locks, so a plain
//! write to a key the transaction read either lands before the commit's
//! validation (and aborts it) or after the commit; transactions are
//! serializable with each other and with plain writes.

use std::collections::{BTreeMap, HashMap};

use crossbeam_epoch as epoch;

use super::State;
use crate::error::{Error, Result};
use crate::log::frame::{pack_pos, FrameSpec, Kind};

/// A staged write.
enum Staged {
    Put {
        value: Vec<u8>,
        expires_at: Option<u64>,
    },
    Remove,
}

/// The open transaction handed to the closure of `transaction`: reads see
/// its own staged writes; nothing reaches the database unless the closure
/// returns `Ok` and the commit validates.
///
/// **Isolation: serializable.** Reads inside the closure see the latest
/// committed state (not a snapshot); the commit checks, under the locks of
/// every shard involved, that each key read still has the version it was
/// read at, and fails with `Error::TransactionAborted("conflict")` if not
/// (a plain write or another transaction changed it). Retry with
/// `transaction_retry`. Write skew is impossible.
///
/// **Atomicity.** A committed transaction (removes included) is one batch
/// with one sequence number: after a crash it is all there or not there.
/// Its index changes are made under the same locks as its appends, so a
/// point-in-time view (`iter`, `keys`, the streams) sees all of it or none;
/// a point read made while the commit runs may see some keys new and others
/// old, one made after `transaction` returned sees all of it.
///
/// **Limits** as `insert_many`: at most `max_batch_records` writes and
/// `max_batch_bytes` encoded bytes (`Error::LimitExceeded`).
pub struct Transaction<'a> {
    state: &'a State,
    ns: u32,
    /// Key -> location of the visible record when first read (None: absent).
    reads: HashMap<Vec<u8>, Option<u64>>,
    writes: BTreeMap<Vec<u8>, Staged>,
}

impl<'a> Transaction<'a> {
    pub(crate) fn new(state: &'a State, ns: u32) -> Transaction<'a> {
        Transaction {
            state,
            ns,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
        }
    }

    /// Stages `key` = `value` (with the database's default expiry).
    pub fn insert<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(&mut self, key: K, value: V) -> Result<()> {
        let expires_at = self.state.default_expiry()?;
        self.stage_put(key.into(), value.into(), expires_at)
    }

    /// Stages `key` = `value` expiring per `ttl`.
    #[cfg(feature = "ttl")]
    pub fn insert_with_ttl<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(
        &mut self,
        key: K,
        value: V,
        ttl: crate::Ttl,
    ) -> Result<()> {
        let expires_at = self.state.expiry_of(ttl)?;
        self.stage_put(key.into(), value.into(), expires_at)
    }

    fn stage_put(&mut self, key: Vec<u8>, value: Vec<u8>, expires_at: Option<u64>) -> Result<()> {
        self.state.check_kv(&key, &value)?;
        self.writes.insert(key, Staged::Put { value, expires_at });
        Ok(())
    }

    /// Stages the removal of `key`; returns its value as this transaction
    /// sees it.
    pub fn remove<K: AsRef<[u8]>>(&mut self, key: K) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        let prior = self.get(key)?;
        self.writes.insert(key.to_vec(), Staged::Remove);
        Ok(prior)
    }

    /// The value of `key` as this transaction sees it: its own staged write
    /// if any, else the database's (recorded for validation at commit).
    pub fn get<Q: AsRef<[u8]>>(&mut self, key: Q) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        match self.writes.get(key) {
            Some(Staged::Put { value, .. }) => return Ok(Some(value.clone())),
            Some(Staged::Remove) => return Ok(None),
            None => {}
        }
        self.state.check_key(key)?;
        let found = self.state.find(self.ns, key, true, true, |seg, off, fr| {
            (pack_pos(seg.id, off), fr.value.to_vec())
        })?;
        let (version, value) = match found {
            Some((loc, v)) => (Some(loc), Some(v)),
            None => (None, None),
        };
        self.reads.entry(key.to_vec()).or_insert(version);
        Ok(value)
    }

    /// Whether `key` has a value, as this transaction sees it.
    pub fn contains_key<Q: AsRef<[u8]>>(&mut self, key: Q) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Validates the reads and applies the writes atomically.
    pub(crate) async fn commit(self) -> Result<()> {
        if self.state.ctx.config.read_only && self.writes.is_empty() {
            // Reads only, and no writer can exist beside a read-only
            // open (the lock): nothing to validate or write.
            return Ok(());
        }
        self.state.ctx.writable()?;
        let state = self.state;
        let ns = self.ns;
        let cfg = &state.ctx.config;
        super::ops::within(
            "transaction write count",
            self.writes.len(),
            cfg.max_batch_records,
        )?;
        let n = state.shards.len();
        let mut per_shard = vec![0usize; n];
        let mut also = vec![false; n];
        let mut total = 0usize;
        let mut routed = Vec::with_capacity(self.writes.len());
        for (k, w) in &self.writes {
            let h = state.ctx.hash(ns, k);
            let s = state.ctx.shard_of(h);
            let len = match w {
                Staged::Put { value, expires_at } => {
                    self.state
                        .ctx
                        .frame_len(k.len(), value.len(), expires_at.is_some())
                }
                Staged::Remove => self.state.ctx.frame_len(k.len(), 0, false),
            };
            per_shard[s] += len;
            total += len;
            routed.push((h, s));
        }
        super::ops::within("transaction size in bytes", total, cfg.max_batch_bytes)?;
        for k in self.reads.keys() {
            also[state.ctx.shard_of(state.ctx.hash(ns, k))] = true;
        }
        let targets = {
            let mut guards = state.lock_shards_also(&per_shard, &also).await?;
            if !self.writes.is_empty() {
                state.ctx.check_namespace(ns)?;
            }
            // Validation: every key read still has the version it was read at.
            for (k, seen) in &self.reads {
                let now = state.find(ns, k, false, true, |seg, off, _| pack_pos(seg.id, off))?;
                if now != *seen {
                    return Err(Error::TransactionAborted("conflict"));
                }
            }
            if self.writes.is_empty() {
                return Ok(());
            }
            let seq = state.ctx.next_seq();
            let count = self.writes.len() as u32;
            let mut locs = Vec::with_capacity(self.writes.len());
            for ((k, w), (_, s)) in self.writes.iter().zip(&routed) {
                let Some(g) = guards[*s].as_mut() else {
                    continue;
                };
                let spec = match w {
                    Staged::Put { value, expires_at } => FrameSpec {
                        kind: Kind::Put,
                        seq,
                        namespace: ns,
                        batch_count: count,
                        expires_at: *expires_at,
                        key: k,
                        value,
                    },
                    Staged::Remove => FrameSpec {
                        kind: Kind::Remove,
                        seq,
                        namespace: ns,
                        batch_count: count,
                        expires_at: None,
                        key: k,
                        value: &[],
                    },
                };
                match state.shards[*s].append(g, &spec, true) {
                    Ok(loc) => locs.push((loc, state.ctx.spec_len(&spec))),
                    Err(e) => {
                        state.ctx.abort_batch(seq);
                        return Err(e);
                    }
                }
            }
            // Every frame appended: now the indexes, still under every lock,
            // so no snapshot sees half of the transaction.
            let guard = epoch::pin();
            for (((k, w), (h, s)), (loc, len)) in self.writes.iter().zip(&routed).zip(locs) {
                let shard = &state.shards[*s];
                let Some(g) = guards[*s].as_mut() else {
                    continue;
                };
                match w {
                    Staged::Put { expires_at, .. } => {
                        shard.index_put(g, &guard, (ns, *h), k, loc, len, *expires_at);
                    }
                    Staged::Remove => {
                        shard.index_remove(g, &guard, (ns, *h), k);
                    }
                }
            }
            // Shards locked only for validation wrote nothing.
            guards
                .iter()
                .enumerate()
                .filter(|(s, _)| per_shard[*s] > 0)
                .filter_map(|(s, g)| Some((s, state.shards[s].finish_write(g.as_ref()?))))
                .collect::<Vec<_>>()
        };
        if state.write_through() {
            state.await_durable(&targets).await?;
        }
        Ok(())
    }
}

impl State {
    /// Runs `f` in a transaction of namespace `ns` and commits it; an `Err`
    /// from `f` discards every staged write.
    pub(crate) async fn transaction<T>(
        &self,
        ns: u32,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut tx = Transaction::new(self, ns);
        let out = f(&mut tx)?;
        tx.commit().await?;
        Ok(out)
    }
}

/// Whether `e` is a commit's validation failure, worth a retry.
pub(crate) fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::TransactionAborted("conflict"))
}
