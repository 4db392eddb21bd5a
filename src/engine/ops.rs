//! The operations: reads on the caller's thread, writes as futures of the
//! shard cores, flushes across shards, snapshots and figures.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch as epoch;
use parking_lot::MutexGuard;

use super::shard::{Inner, Shard};
use super::{State, MAX_LOOKUP_RETRIES};
use crate::config::FlushPolicy;
use crate::error::{Error, Result};
use crate::log::frame::{self, unpack_pos, FrameSpec, Kind};
use crate::log::segment::{Held, Segment};
use crate::log::segtable::account;
use crate::stats::EmdbStats;
use crate::value::ValueRef;

/// Batches of at least this many records are appended by a thread per
/// shard, in an encrypted database.
const PARALLEL_APPEND: usize = 4096;

/// `Error::LimitExceeded` when `len` is over `max`.
pub(super) fn within(what: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::LimitExceeded { what, len, max });
    }
    Ok(())
}

impl State {
    pub(super) fn check_key(&self, key: &[u8]) -> Result<()> {
        within("key length", key.len(), self.ctx.config.max_key_len)?;
        Ok(())
    }

    pub(super) fn check_kv(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        within("value length", value.len(), self.ctx.config.max_value_len)?;
        Ok(())
    }

    pub(super) fn write_through(&self) -> bool {
        self.ctx.config.flush_policy == FlushPolicy::WriteThrough
    }

    /// Finds the live record of `key` and maps it with `f`, which may run
    /// twice (see `Segment::with_frame`). With `verify`, a frame that no
    /// one verified since open (it came from a hint file) has its CRC
    /// checked, and a mismatch is `Error::Corrupted`: a value is never
    /// returned from damaged bytes. Frames replayed at open or written by
    /// this process were verified already.
    #[inline]
    pub(super) fn lookup<R>(
        &self,
        ns: u32,
        key: &[u8],
        verify: bool,
        f: impl Fn(&Arc<Segment>, u32, &frame::Frame<'_>) -> R,
    ) -> Result<Option<R>> {
        self.find(ns, key, verify, true, f)
    }

    /// [`lookup`](State::lookup), optionally finding expired records too.
    #[inline]
    pub(super) fn find<R>(
        &self,
        ns: u32,
        key: &[u8],
        verify: bool,
        hide_expired: bool,
        f: impl Fn(&Arc<Segment>, u32, &frame::Frame<'_>) -> R,
    ) -> Result<Option<R>> {
        let keyed = self.ctx.keyed(ns, key);
        self.find_keyed(ns, key, keyed, verify, hide_expired, f)
    }

    /// [`find`](State::find) of a key whose [`keyed`](super::Ctx::keyed)
    /// hash the caller has computed already (a range scan's batch does).
    #[inline]
    pub(super) fn find_keyed<R>(
        &self,
        ns: u32,
        key: &[u8],
        (h, mac): (u64, Option<(u64, u64)>),
        verify: bool,
        hide_expired: bool,
        mut f: impl FnMut(&Arc<Segment>, u32, &frame::Frame<'_>) -> R,
    ) -> Result<Option<R>> {
        let shard = &self.shards[self.ctx.shard_of(h)];
        let guard = epoch::pin();
        let Some(index) = shard.indexes.get(ns, &guard) else {
            return Ok(None);
        };
        let mut tries = 0;
        loop {
            let mut missing = false;
            let found = index.find_map(h, &guard, |loc| {
                let (sid, off) = unpack_pos(loc);
                // The table is loaded after the slot: a segment is published
                // before any slot points into it, so a table loaded first
                // could predate both (a new segment, then this key
                // overwritten into it) and miss a key that exists.
                let Some(seg) = shard.segments(&guard).get(sid) else {
                    // Retired after the slot was re-pointed: look again.
                    missing = true;
                    return None;
                };
                seg.with_frame(off, |b| {
                    self.read_frame(ns, key, mac, seg, off, b, verify, hide_expired, &mut f)
                })
                .flatten()
            });
            if found.is_none() && missing && tries < MAX_LOOKUP_RETRIES {
                tries += 1;
                continue;
            }
            return found.transpose().map(Option::flatten);
        }
    }

    /// The record of `key` in frame bytes `b` (at `off` of `seg`), which an
    /// index slot with the key's hash points to: `None` if the frame is not
    /// that key's record (a hash collision), `Some(Ok(None))` if it expired
    /// and `hide_expired` is set, else `f` of the frame (decrypted).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn read_frame<R>(
        &self,
        ns: u32,
        key: &[u8],
        mac: Option<(u64, u64)>,
        seg: &Arc<Segment>,
        off: u32,
        b: &[u8],
        verify: bool,
        hide_expired: bool,
        f: &mut impl FnMut(&Arc<Segment>, u32, &frame::Frame<'_>) -> R,
    ) -> Option<Result<Option<R>>> {
        let fr = match frame::decode_unchecked(b) {
            Ok(fr) => fr,
            // The index points here, so a frame was written here: bytes
            // that no longer decode are damage.
            Err(_) => {
                return Some(Err(Error::corrupted(
                    seg.path.clone().unwrap_or_default(),
                    off as u64,
                    "a record the index points to no longer decodes",
                )))
            }
        };
        if fr.kind != Kind::Put || fr.namespace != ns {
            return None;
        }
        if !crate::crypt::key_matches_mac(&fr, key, mac) {
            // An encrypted frame whose index hash matched but whose key
            // check did not: a 2^-64 collision, or damage. Authenticating
            // it tells which.
            if fr.sealed.is_some() {
                if let Err(e) = self.ctx.open(seg, off, &fr, &mut Vec::new()) {
                    return Some(Err(e));
                }
            }
            return None;
        }
        // Expired: invisible (the clock is read only for a record that has
        // an expiry).
        if hide_expired && super::ttl::is_expired(fr.expires_at) {
            return Some(Ok(None));
        }
        if verify && seg.needs_crc(off) && !frame::crc_ok(b) {
            return Some(Err(Error::corrupted(
                seg.path.clone().unwrap_or_default(),
                off as u64,
                "record checksum mismatch",
            )));
        }
        if fr.sealed.is_some() {
            let mut buf = Vec::new();
            return Some(
                self.ctx
                    .open(seg, off, &fr, &mut buf)
                    .map(|p| Some(f(seg, off, &p))),
            );
        }
        Some(Ok(Some(f(seg, off, &fr))))
    }

    pub(crate) fn get(&self, ns: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(ns, key, true, |_, _, fr| fr.value.to_vec())
    }

    pub(crate) fn get_ref(&self, ns: u32, key: &[u8]) -> Result<Option<ValueRef<'static>>> {
        if self.ctx.crypto.is_some() {
            // Decrypted: the value is a buffer of its own.
            return self.lookup(ns, key, true, |_, _, fr| ValueRef::owned(fr.value.to_vec()));
        }
        self.lookup(ns, key, true, |seg, off, fr| {
            let voff = off + (fr.len - frame::CRC_LEN - fr.value.len()) as u32;
            match seg.mapped(voff, fr.value.len() as u32) {
                Some(bytes) => ValueRef::mapped(seg.clone(), bytes),
                None => ValueRef::owned(fr.value.to_vec()),
            }
        })
    }

    pub(crate) fn contains(&self, ns: u32, key: &[u8]) -> Result<bool> {
        Ok(self.lookup(ns, key, false, |_, _, _| ())?.is_some())
    }

    /// Live keys of namespace `ns`, expired ones left out.
    pub(crate) fn len(&self, ns: u32) -> usize {
        let guard = epoch::pin();
        self.shards
            .iter()
            .map(|s| {
                let n = s.indexes.get(ns, &guard).map_or(0, |ix| ix.len());
                if s.expiring_len.load(Ordering::Relaxed) == 0 {
                    return n;
                }
                let expired = s.lock().expiring.expired_in(ns, super::ttl::now_ms());
                n.saturating_sub(expired)
            })
            .sum()
    }

    /// The expiry of a write that names none: the configured default.
    pub(crate) fn default_expiry(&self) -> Result<Option<u64>> {
        match self.ctx.config.default_ttl {
            None => Ok(None),
            Some(d) => super::ttl::deadline(d).map(Some).ok_or(Error::TtlOverflow),
        }
    }

    /// Inserts with the default expiry (none unless `default_ttl` is set).
    pub(crate) async fn insert(&self, ns: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let expires_at = self.default_expiry()?;
        self.insert_expiring(ns, key, value, expires_at).await
    }

    /// Inserts `key` expiring at `expires_at` (Unix ms), or never.
    pub(crate) async fn insert_expiring(
        &self,
        ns: u32,
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
    ) -> Result<()> {
        self.ctx.writable()?;
        self.check_kv(key, value)?;
        let (h, mac) = self.ctx.keyed(ns, key);
        let si = self.ctx.shard_of(h);
        let shard = &self.shards[si];
        let len = self
            .ctx
            .frame_len(key.len(), value.len(), expires_at.is_some());
        let target = {
            let mut g = shard.lock_for_append(len).await?;
            self.ctx.check_namespace(ns)?;
            self.put_locked(shard, &mut g, (ns, h, mac), key, value, expires_at)?;
            shard.finish_write(&g)
        };
        if self.write_through() {
            self.await_durable(&[(si, target)]).await?;
        }
        Ok(())
    }

    /// Appends a put under the shard lock and points the index at it,
    /// keeping the live-byte accounting and the expiry list.
    /// The caller ends the write with `Shard::finish_write`.
    pub(super) fn put_locked(
        &self,
        shard: &Shard,
        g: &mut Inner,
        (ns, h, mac): (u32, u64, Option<(u64, u64)>),
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
    ) -> Result<()> {
        let spec = FrameSpec {
            kind: Kind::Put,
            seq: self.ctx.next_seq(),
            namespace: ns,
            batch_count: 0,
            expires_at,
            key,
            value,
        };
        let loc = shard.append_keyed(g, &spec, true, mac)?;
        let guard = epoch::pin();
        shard.index_put(
            g,
            &guard,
            (ns, h),
            key,
            loc,
            self.ctx.spec_len(&spec),
            expires_at,
        );
        Ok(())
    }

    pub(crate) async fn remove(&self, ns: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.ctx.writable()?;
        self.check_key(key)?;
        let h = self.ctx.hash(ns, key);
        let si = self.ctx.shard_of(h);
        let shard = &self.shards[si];
        let len = self.ctx.frame_len(key.len(), 0, false);
        let (old, target) = {
            let mut g = shard.lock_for_append(len).await?;
            // Under the lock no other writer can change this key.
            // A damaged prior value is reported, and the key left in place.
            // An expired record is removed too (so no sweep finds it later),
            // but has no value to return.
            let found = self.find(ns, key, true, false, |_, _, fr| {
                (!super::ttl::is_expired(fr.expires_at)).then(|| fr.value.to_vec())
            })?;
            let Some(old) = found else {
                return Ok(None);
            };
            let spec = FrameSpec {
                kind: Kind::Remove,
                seq: self.ctx.next_seq(),
                namespace: ns,
                batch_count: 0,
                expires_at: None,
                key,
                value: &[],
            };
            shard.append(&mut g, &spec, true)?;
            shard.index_remove(&mut g, &epoch::pin(), (ns, h), key);
            (old, shard.finish_write(&g))
        };
        if self.write_through() {
            self.await_durable(&[(si, target)]).await?;
        }
        Ok(old)
    }

    /// One atomic batch: every frame carries the batch's single sequence
    /// number and its record count, and recovery applies it only whole.
    pub(crate) async fn insert_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        ns: u32,
        items: &[(K, V)],
    ) -> Result<()> {
        self.ctx.writable()?;
        if items.is_empty() {
            return Ok(());
        }
        let cfg = &self.ctx.config;
        within("batch record count", items.len(), cfg.max_batch_records)?;
        let expires_at = self.default_expiry()?;
        let n = self.shards.len();
        let mut per_shard = vec![0usize; n];
        let mut routed = Vec::with_capacity(items.len());
        let mut total = 0usize;
        for (k, v) in items {
            let (k, v) = (k.as_ref(), v.as_ref());
            self.check_kv(k, v)?;
            let (h, mac) = self.ctx.keyed(ns, k);
            let s = self.ctx.shard_of(h);
            let len = self.ctx.frame_len(k.len(), v.len(), expires_at.is_some());
            per_shard[s] += len;
            total += len;
            routed.push((h, s, mac));
        }
        within("batch size in bytes", total, cfg.max_batch_bytes)?;
        // With range scans, each shard's part of the batch is appended and
        // indexed in key order: an ordered scan then reads the batch's
        // records in the order they lie in the log, and its new keys enter
        // the ordered index neighbour after neighbour. Of equal keys the
        // later pair is still written last and wins (ties go by position).
        let mut order: Vec<usize> = (0..items.len()).collect();
        if cfg.range_scans {
            let key = |i: usize| items[i].0.as_ref();
            let mut by_head: Vec<(u64, usize)> = order
                .iter()
                .map(|&i| (crate::sorted::key_head(key(i)), i))
                .collect();
            by_head.sort_unstable_by(|a, b| {
                crate::sorted::cmp_headed(a.0, key(a.1), b.0, key(b.1)).then(a.1.cmp(&b.1))
            });
            order = by_head.into_iter().map(|(_, i)| i).collect();
        }
        let targets = {
            let mut guards = self.lock_shards(&per_shard).await?;
            self.ctx.check_namespace(ns)?;
            let seq = self.ctx.next_seq();
            // Append every frame first; the index changes only once all are
            // appended, so a failure part-way (say, a segment that cannot be
            // created) leaves nothing visible, and the frames already
            // appended form an incomplete batch that recovery ignores.
            let kv: Vec<(&[u8], &[u8])> = items
                .iter()
                .map(|(k, v)| (k.as_ref(), v.as_ref()))
                .collect();
            // Each shard's part in `order`, appended in turn here; in an
            // encrypted database, by a thread per shard when the batch is
            // large (the seals run in parallel: measured, this pays for
            // the threads only when there is sealing to do).
            let count = items.len() as u32;
            let part = |s: usize, g: &mut Inner| -> Result<(usize, Vec<u64>)> {
                let mut out = Vec::new();
                for &i in order.iter().filter(|&&i| routed[i].1 == s) {
                    let spec = FrameSpec {
                        kind: Kind::Put,
                        seq,
                        namespace: ns,
                        batch_count: count,
                        expires_at,
                        key: kv[i].0,
                        value: kv[i].1,
                    };
                    out.push(self.shards[s].append_keyed(g, &spec, true, routed[i].2)?);
                }
                Ok((s, out))
            };
            let busy: Vec<(usize, &mut Inner)> = guards
                .iter_mut()
                .enumerate()
                .filter_map(|(s, g)| g.as_mut().map(|g| (s, &mut **g)))
                .collect();
            let parts: Vec<Result<(usize, Vec<u64>)>> =
                if self.ctx.crypto.is_some() && busy.len() > 1 && items.len() >= PARALLEL_APPEND {
                    std::thread::scope(|sc| {
                        let part = &part;
                        let handles: Vec<_> = busy
                            .into_iter()
                            .map(|(s, g)| sc.spawn(move || part(s, g)))
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or(Err(Error::InvalidInput(
                                    "a batch append thread panicked",
                                )))
                            })
                            .collect()
                    })
                } else {
                    busy.into_iter().map(|(s, g)| part(s, g)).collect()
                };
            // Per shard, its locations in `order`.
            let mut per: Vec<std::vec::IntoIter<u64>> =
                vec![Vec::new().into_iter(); self.shards.len()];
            for r in parts {
                match r {
                    Ok((s, v)) => per[s] = v.into_iter(),
                    Err(e) => {
                        self.ctx.abort_batch(seq);
                        return Err(e);
                    }
                }
            }
            let guard = epoch::pin();
            for &i in &order {
                let ((k, v), (h, s, _)) = (&items[i], &routed[i]);
                let Some(loc) = per[*s].next() else {
                    continue;
                };
                let Some(g) = guards[*s].as_mut() else {
                    continue;
                };
                let (k, v) = (k.as_ref(), v.as_ref());
                let len = self.ctx.frame_len(k.len(), v.len(), expires_at.is_some());
                self.shards[*s].index_put(g, &guard, (ns, *h), k, loc, len, expires_at);
            }
            self.finish_batch(&guards)
        };
        if self.write_through() {
            self.await_durable(&targets).await?;
        }
        Ok(())
    }

    /// Removes every record of namespace `ns`: one clear frame per shard,
    /// written as one batch.
    pub(crate) async fn clear(&self, ns: u32) -> Result<()> {
        self.ctx.writable()?;
        let clear_len = self.ctx.frame_len(0, 0, false);
        let targets = {
            let mut guards = self
                .lock_shards(&vec![clear_len; self.shards.len()])
                .await?;
            self.ctx.check_namespace(ns)?;
            let seq = self.ctx.next_seq();
            let mut targets = Vec::new();
            for (s, g) in guards.iter_mut().enumerate() {
                let Some(g) = g else { continue };
                let spec = FrameSpec {
                    kind: Kind::Clear,
                    seq,
                    namespace: ns,
                    batch_count: self.shards.len() as u32,
                    expires_at: None,
                    key: &[],
                    value: &[],
                };
                // As for batches: append everywhere first, then clear.
                if let Err(e) = self.shards[s].append(g, &spec, true) {
                    self.ctx.abort_batch(seq);
                    return Err(e);
                }
            }
            let guard = epoch::pin();
            for (s, g) in guards.iter_mut().enumerate() {
                let Some(g) = g else { continue };
                let segs = self.shards[s].segments(&guard);
                if let Some(ix) = self.shards[s].indexes.get(ns, &guard) {
                    ix.for_each(|_, loc| account(segs, None, Some(loc)));
                    ix.clear();
                }
                g.expiring.forget_namespace(ns);
                if let Some(o) = &mut g.ordered {
                    o.clear(ns);
                }
                targets.push((s, self.shards[s].finish_write(g)));
            }
            targets
        };
        if self.write_through() {
            self.await_durable(&targets).await?;
        }
        Ok(())
    }

    /// Locks every shard with bytes to append (`per_shard`, in shard
    /// order, so batches never deadlock) once each has room in its tail
    /// buffer and, where those bytes rotate its active segment, a prepared
    /// next segment; checks each for poison. No lock is held while
    /// waiting. The backlog may overshoot by at most one batch. A segment
    /// waited for once and taken by another writer meanwhile is then
    /// created inline by the rotation (rare).
    /// Ends a batch written under `guards`: [`Shard::finish_write`] for
    /// each locked shard; the durability targets of the batch.
    pub(super) fn finish_batch(
        &self,
        guards: &[Option<MutexGuard<'_, Inner>>],
    ) -> Vec<(usize, u64)> {
        guards
            .iter()
            .enumerate()
            .filter_map(|(s, g)| Some((s, self.shards[s].finish_write(g.as_ref()?))))
            .collect()
    }

    pub(super) async fn lock_shards(
        &self,
        per_shard: &[usize],
    ) -> Result<Vec<Option<MutexGuard<'_, Inner>>>> {
        self.lock_shards_also(per_shard, &[]).await
    }

    /// [`lock_shards`](State::lock_shards), also locking (with nothing to
    /// append) every shard `also` marks: a transaction validates its reads
    /// there.
    pub(super) async fn lock_shards_also(
        &self,
        per_shard: &[usize],
        also: &[bool],
    ) -> Result<Vec<Option<MutexGuard<'_, Inner>>>> {
        for (s, bytes) in per_shard.iter().enumerate() {
            if *bytes > 0 {
                drop(self.shards[s].lock_for_append(*bytes).await?);
            }
        }
        let mut waited = vec![false; per_shard.len()];
        loop {
            let unready = match self.try_lock_shards(per_shard, also, &waited)? {
                Ok(guards) => return Ok(guards),
                Err(s) => s,
            };
            waited[unready] = true;
            self.shards[unready].next_segment().await?;
        }
    }

    /// The locks of [`lock_shards`](State::lock_shards), or the first
    /// shard (not waited for yet) that would rotate into a segment not
    /// prepared yet, with every lock released.
    #[allow(clippy::type_complexity)]
    fn try_lock_shards(
        &self,
        per_shard: &[usize],
        also: &[bool],
        waited: &[bool],
    ) -> Result<std::result::Result<Vec<Option<MutexGuard<'_, Inner>>>, usize>> {
        let guards: Vec<_> = per_shard
            .iter()
            .enumerate()
            .map(|(s, b)| {
                (*b > 0 || also.get(s).copied().unwrap_or(false)).then(|| self.shards[s].lock())
            })
            .collect();
        for (s, g) in guards.iter().enumerate() {
            let Some(g) = g else { continue };
            self.shards[s].check_poison(g)?;
            if !waited[s]
                && Shard::needs_rotation(g, per_shard[s] as u64)
                && !self.shards[s].next_prepared()
            {
                return Ok(Err(s));
            }
        }
        Ok(Ok(guards))
    }

    /// Drops namespace `name`: one durable manifest store makes it gone,
    /// atomically (records are ignored by recovery and dropped by
    /// compaction once their namespace is not listed); then each shard
    /// lets go of its index. False if no namespace has that name.
    pub(crate) fn drop_namespace(&self, name: &str) -> Result<bool> {
        self.ctx.writable()?;
        let Some(id) = self.ctx.unregister_namespace(name)? else {
            return Ok(false);
        };
        for shard in &self.shards {
            let mut g = shard.lock();
            let guard = epoch::pin();
            if let Some(ix) = shard.indexes.remove(id, &guard) {
                let segs = shard.segments(&guard);
                ix.for_each(|_, loc| account(segs, None, Some(loc)));
            }
            g.expiring.forget_namespace(id);
            if let Some(o) = &mut g.ordered {
                o.clear(id);
            }
            shard.note_expiring(&g);
        }
        Ok(true)
    }

    /// Returns once every write this database accepted before the call is
    /// durable, in every shard.
    pub(crate) async fn flush(&self) -> Result<()> {
        let mut targets = Vec::with_capacity(self.shards.len());
        for (i, s) in self.shards.iter().enumerate() {
            // A failed write or sync leaves records whose durability is
            // unknown: no later flush may report success, even when the
            // shard has nothing newer to write.
            s.flushable()?;
            targets.push((i, s.user_end()));
        }
        self.await_durable(&targets).await
    }

    /// Waits until each listed shard is durable up to its target: joins a
    /// commit generation (one device flush for all its shards, shared with
    /// every concurrent waiter) until the targets are covered.
    pub(super) async fn await_durable(&self, targets: &[(usize, u64)]) -> Result<()> {
        let mut needing: Vec<(usize, u64)> = Vec::with_capacity(targets.len());
        loop {
            needing.clear();
            for &(s, t) in targets {
                let shard = &self.shards[s];
                if shard.durable_lpos() >= t {
                    continue;
                }
                shard.flushable()?;
                needing.push((s, t));
            }
            if needing.is_empty() {
                return Ok(());
            }
            super::commit::CommitWait::new(&self.ctx.commit, &needing).await;
        }
    }

    /// A point-in-time snapshot of every live location of namespace `ns`,
    /// taken under all shard locks at once, with claims on the segments
    /// they point into (taken under the locks too: before compaction can
    /// move a record off a segment, so before it can retire one).
    pub(crate) fn snapshot(&self, ns: u32) -> crate::iter::Snap {
        let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let guard = epoch::pin();
        let out = self
            .shards
            .iter()
            .map(|s| {
                let mut locs = Vec::new();
                if let Some(ix) = s.indexes.get(ns, &guard) {
                    locs.reserve(ix.len());
                    ix.for_each(|_, loc| locs.push(loc));
                }
                let segs = s.segment_list().into_iter().map(Held::new).collect();
                (segs, locs)
            })
            .collect();
        drop(guards);
        crate::iter::Snap {
            shards: out,
            crypto: self.ctx.crypto.clone(),
        }
    }

    pub(crate) fn stats(&self) -> EmdbStats {
        let mut st = EmdbStats::empty(self.ctx.backend, self.shards.len());
        st.namespace_count = self.ctx.namespace_count();
        st.encrypted = self.ctx.crypto.is_some();
        for s in &self.shards {
            // Under the shard lock, so that each shard's figures agree with
            // each other: appends (the core's markers too) and the moves of
            // a background compaction change them under it, a record's
            // bytes leaving one segment and joining another in two steps.
            let inner = s.lock();
            for g in s.segment_list() {
                st.logical_size_bytes += g.data_end.load(Ordering::Acquire) as u64;
                st.live_bytes += g.live_bytes.load(Ordering::Relaxed);
                st.dead_bytes += g.dead_bytes();
                st.unverified_bytes += g.unverified_bytes();
                st.segments += 1;
                if self.ctx.config.dir.is_some() {
                    st.file_size_bytes += g.file_len();
                }
            }
            st.device_flushes += s.device_flushes.load(Ordering::Relaxed);

            st.durable_records += s.durable_records.load(Ordering::Relaxed);
            st.live_records += s.indexes.total_len() as u64;
            st.index_bytes += s.indexes.memory_bytes() as u64;
            st.ordered_index_bytes += inner.ordered.as_ref().map_or(0, |o| o.memory_bytes()) as u64;
            drop(inner);
        }
        st.range_scans_enabled = self.ctx.config.range_scans;
        st.compactions = self.ctx.compactions.load(Ordering::Relaxed);
        st.bytes_reclaimed = self.ctx.bytes_reclaimed.load(Ordering::Relaxed);
        st.bytes_moved = self.ctx.bytes_moved.load(Ordering::Relaxed);
        st.preallocated_bytes = st.file_size_bytes.saturating_sub(st.logical_size_bytes);
        st.records_per_flush = if st.device_flushes == 0 {
            0.0
        } else {
            st.durable_records as f64 / st.device_flushes as f64
        };
        st
    }
}
