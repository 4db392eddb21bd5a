//! One shard core: the write side of a slice of the key space.
//!
//! Writers (any thread) append frames to the active segment's shadow under
//! the shard lock, update the index and return; they never wait for the core
//! unless the unwritten backlog is over `tail_buffer_bytes`. The core thread
//! (one per shard, [`run_core`]) repeatedly takes everything appended since
//! its last submission and hands it to its I/O backend as one chain: the
//! writes at the log tail, the fsync of any segment sealed meanwhile, and,
//! when a flush waiter exists, one fdatasync linked behind them. Every flush
//! that arrives while a chain is in flight is served by the next chain: that
//! is the group commit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::ttl::Expiring;
use super::Ctx;
use crate::error::{Error, Result};
use crate::log::frame::{self, pack_pos, FrameSpec, Kind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::log::segment::Segment;
use crate::log::segtable::{account, frame_has_key, SegTable};
use crate::nsindex::Indexes;

/// Unwritten bytes past which an appender wakes a lingering core early.
pub(super) const WAKE_BYTES: u64 = 1 << 20;

/// A contiguous appended range of one segment not yet written.
pub(super) struct Chunk {
    pub(super) seg: Arc<Segment>,
    pub(super) from: u32,
    pub(super) to: u32,
}

pub(crate) struct Inner {
    pub(super) active: Arc<Segment>,
    /// Next append offset in `active`.
    pub(super) reserved: u32,
    /// A pre-created segment to rotate into.
    pub(super) chunks: VecDeque<Chunk>,
    /// Sealed segments whose sealing fsync the core has not issued yet.
    pub(super) to_seal: Vec<Arc<Segment>>,
    /// Bytes appended in this process's lifetime (a log position).
    pub(super) lpos: u64,
    /// User records appended in this process's lifetime.
    pub(super) records: u64,
    pub(super) space_waiters: Vec<Waker>,
    pub(super) poison: Option<Poison>,
    pub(super) shutdown: bool,
    /// A durable position to record in a sync marker.
    pub(super) marker_due: Option<u64>,
    pub(super) next_segment_id: u32,
    /// Preparation of the next segment was asked for since the last rotation.
    pub(super) prep_started: bool,
    /// The live records that have an expiry.
    pub(super) expiring: Expiring,
    /// The ordered index of range scans, if they are on.
    pub(crate) ordered: Option<crate::sorted::Ordered>,
}

/// The segment to rotate into, prepared ahead of need.
#[derive(Default)]
pub(super) struct NextSlot {
    pub(super) seg: Option<Arc<Segment>>,
    pub(super) preparing: bool,
    /// An id whose segment could not be created and left no file behind:
    /// the next attempt uses it again, so an entry planted at its path
    /// keeps failing rotation (with an error naming it) instead of being
    /// skipped.
    pub(super) retry_id: Option<u32>,
    /// Preparations that failed in a row: a waiting writer has a failed
    /// one retried in the background once, then lets the rotation create
    /// the file itself (and report its own, current error).
    pub(super) failures: u32,
    /// Writers waiting for the prepared segment (see `LockForAppend`).
    pub(super) waiters: Vec<std::task::Waker>,
}

#[derive(Clone)]
pub(super) struct Poison {
    pub(super) os_error: Option<i32>,
    pub(super) kind: std::io::ErrorKind,
    pub(super) message: String,
}

pub(crate) struct Shard {
    pub(super) id: usize,
    /// One index per namespace.
    pub(super) indexes: Indexes,
    pub(super) segs: Atomic<SegTable>,
    pub(super) inner: Mutex<Inner>,
    /// Log position written to the kernel / made durable.
    pub(super) written_lpos: AtomicU64,
    pub(super) durable_lpos: AtomicU64,
    /// The log position after the last record a user wrote (markers and
    /// moved records excluded): what a flush waits for. Written under the
    /// shard lock, read without it.
    pub(super) user_end: AtomicU64,
    pub(super) poisoned: AtomicBool,
    pub(super) core: OnceLock<Thread>,
    pub(super) core_idle: AtomicBool,
    pub(super) device_flushes: AtomicU64,
    /// User records made durable (monotone).
    pub(super) durable_records: AtomicU64,
    /// `Inner::expiring`'s length, readable without the lock (so `len`
    /// pays nothing while no record has an expiry).
    pub(super) expiring_len: std::sync::atomic::AtomicUsize,
    /// The thread preparing the next segment, if one ran.
    pub(super) prep: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(super) next: Mutex<NextSlot>,
    pub(super) next_ready: Condvar,
    /// Weak self-reference, for the preparation thread.
    pub(super) this: OnceLock<std::sync::Weak<Shard>>,
    /// Serializes changes of the segment table.
    pub(super) table_lock: Mutex<()>,
    pub(super) ctx: Arc<Ctx>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader holds the table.
        unsafe {
            let t = self.segs.load(Ordering::Relaxed, epoch::unprotected());
            if !t.is_null() {
                drop(t.into_owned());
            }
        }
    }
}

impl Shard {
    /// A shard over its recovered (or freshly created) segments; appends go
    /// to the last one at `append_at`.
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        id: usize,
        segs: Vec<Arc<Segment>>,
        append_at: u32,
        indexes: Indexes,
        expiring: Expiring,
    ) -> Shard {
        let active = segs.last().cloned().expect("a shard always has a segment");
        let next_segment_id = active.id + 1;
        let expiring_len = expiring.len();

        Shard {
            id,
            indexes,
            segs: Atomic::new(SegTable::new(segs)),
            inner: Mutex::new(Inner {
                active,
                reserved: append_at,
                chunks: VecDeque::new(),
                to_seal: Vec::new(),
                lpos: 0,
                records: 0,
                space_waiters: Vec::new(),
                poison: None,
                shutdown: false,
                marker_due: None,
                next_segment_id,
                prep_started: false,
                expiring,
                ordered: None,
            }),
            written_lpos: AtomicU64::new(0),
            durable_lpos: AtomicU64::new(0),
            user_end: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            core: OnceLock::new(),
            core_idle: AtomicBool::new(false),
            device_flushes: AtomicU64::new(0),
            durable_records: AtomicU64::new(0),
            expiring_len: std::sync::atomic::AtomicUsize::new(expiring_len),
            prep: Mutex::new(None),
            next: Mutex::new(NextSlot::default()),
            next_ready: Condvar::new(),
            this: OnceLock::new(),
            table_lock: Mutex::new(()),
            ctx,
        }
    }

    pub(crate) fn set_core(&self, t: Thread) {
        let _ = self.core.set(t);
    }

    /// Must be called once the shard is in its `Arc`.
    pub(crate) fn set_self(self: &Arc<Self>) {
        let _ = self.this.set(Arc::downgrade(self));
    }

    #[inline]
    pub(crate) fn segments<'g>(&self, guard: &'g Guard) -> &'g SegTable {
        // SAFETY: never null; replaced tables are reclaimed through the epoch.
        unsafe { self.segs.load(Ordering::Acquire, guard).deref() }
    }

    /// Snapshot of the segment list (for iterators and checkpoints).
    pub(crate) fn segment_list(&self) -> Vec<Arc<Segment>> {
        let guard = epoch::pin();
        self.segments(&guard).all().to_vec()
    }

    fn publish_segment(&self, seg: Arc<Segment>) {
        self.change_table(&[seg], &[]);
    }

    /// Publishes a new segment table with `add` and without `drop`. Table
    /// changes (a new segment, a retired one) are serialized here.
    fn change_table(&self, add: &[Arc<Segment>], drop: &[u32]) {
        let _one = self.table_lock.lock();
        let guard = epoch::pin();
        let cur = self.segments(&guard);
        let new = cur.with_changes(add, drop);
        let old = self.segs.swap(Owned::new(new), Ordering::AcqRel, &guard);
        // SAFETY: unreachable for new readers; destroyed after current ones.
        unsafe { guard.defer_destroy(old) };
    }

    /// Seals the active segment if its dead fraction is at least
    /// `threshold`, so that compaction can take it too (an explicit
    /// `compact()` reclaims what was written last, the removes included).
    pub(crate) fn seal_active(&self, threshold: f64) -> Result<()> {
        let mut g = self.lock();
        self.check_poison(&g)?;
        if worth_compacting(&g.active, threshold) {
            self.rotate(&mut g)?;
        }
        Ok(())
    }

    /// Sealed segments whose dead fraction is at least `threshold`, in log
    /// order.
    pub(crate) fn compaction_victims(&self, threshold: f64) -> Vec<Arc<Segment>> {
        let active = self.lock().active.id;
        self.segment_list()
            .into_iter()
            .filter(|s| s.id < active && worth_compacting(s, threshold))
            .collect()
    }

    /// Whether no segment older than `id` is left in this shard.
    pub(crate) fn is_oldest(&self, id: u32) -> bool {
        let guard = epoch::pin();
        self.segments(&guard).all().iter().all(|s| s.id >= id)
    }

    /// Retires segment `v` after compaction moved what it held: the
    /// manifest stops listing it (durably), readers stop finding it, and its
    /// files go now, or when the last iterator, stream or `ValueRef` holding
    /// it lets go. The segment before it loses
    /// the seal marker `v` began with, so a marker at the tail claims its
    /// end again.
    pub(crate) fn retire_segment(&self, v: &Arc<Segment>) -> Result<()> {
        if let (Some(m), Some(dir)) = (&self.ctx.manifest, &self.ctx.config.dir) {
            let mut m = m.lock();
            let list = &mut m.shards[self.id].segments;
            let before = list.clone();
            list.retain(|id| *id != v.id);
            if let Err(e) = m.store(&self.ctx.config.files(), dir) {
                m.shards[self.id].segments = before;
                return Err(e.into());
            }
        }
        self.change_table(&[], &[v.id]);
        v.retire();
        // The old table holds `v` (its mapping, not its files) until the
        // epoch lets it go; push that along so the memory goes soon.
        for _ in 0..3 {
            epoch::pin().flush();
        }
        let pred = {
            let guard = epoch::pin();
            self.segments(&guard)
                .all()
                .iter()
                .filter(|s| s.id < v.id)
                .max_by_key(|s| s.id)
                .map(|s| pack_pos(s.id, s.data_end.load(Ordering::Acquire)))
        };
        if let Some(claim) = pred {
            let mut g = self.lock();
            if g.poison.is_none() {
                self.append_marker(&mut g, claim);
                self.after_append(&g);
            }
        }
        Ok(())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    pub(crate) fn wake_core(&self) {
        if let Some(t) = self.core.get() {
            t.unpark();
        }
    }

    /// Appends one frame. The caller holds the lock and has checked the
    /// poison flag. Returns the frame's location.
    pub(crate) fn append(&self, g: &mut Inner, spec: &FrameSpec<'_>, user: bool) -> Result<u64> {
        self.append_keyed(g, spec, user, None)
    }

    /// [`append`](Shard::append), given the key's MAC (index hash and key
    /// check) when the caller computed it already (encrypted databases).
    pub(crate) fn append_keyed(
        &self,
        g: &mut Inner,
        spec: &FrameSpec<'_>,
        user: bool,
        mac: Option<(u64, u64)>,
    ) -> Result<u64> {
        let len = self.ctx.spec_len(spec);
        match &self.ctx.crypto {
            Some(c) if crate::crypt::sealed_kind(spec.kind) => {
                self.append_with(g, len, user, |seg, off, out| {
                    c.seal_frame(seg.place(), off, spec, mac, out)
                })
            }
            _ => self.append_with(g, len, user, |_, _, out| frame::encode(spec, out)),
        }
    }

    /// Appends a frame copied as it is (compaction moves records so: same
    /// sequence number, flags and checksum). Not a user record: `flush()`
    /// does not wait for it; its mover does.
    pub(crate) fn append_raw(&self, g: &mut Inner, frame: &[u8]) -> Result<u64> {
        self.append_with(g, frame.len(), false, |_, _, out| {
            out.copy_from_slice(frame)
        })
    }

    /// Reserves `len` bytes at the tail (rotating or growing the file as
    /// needed), lets `fill` write the frame into the shadow there, and
    /// queues it for the core.
    fn append_with(
        &self,
        g: &mut Inner,
        len: usize,
        user: bool,
        fill: impl FnOnce(&Segment, u32, &mut [u8]),
    ) -> Result<u64> {
        self.ctx.writable()?;
        if g.reserved as usize + len > g.active.cap as usize {
            self.rotate(g)?;
        }
        let off = g.reserved;
        let end = off + len as u32;
        if end > g.active.allocated() {
            // Rare: the core extends the file ahead of the appends. A file
            // that cannot grow (a full disk) fails this append only.
            g.active
                .ensure_allocated(&self.ctx.config.files(), end)
                .map_err(Error::Io)?;
        }
        // SAFETY: [off, off + len) lies inside the active segment (checked
        // above; rotation leaves room for any frame within the limits) and
        // is reserved by us under the shard lock.
        let out = unsafe { g.active.shadow_mut(off, len) };
        fill(&g.active, off, out);
        g.reserved += len as u32;
        g.active.data_end.store(g.reserved, Ordering::Release);
        g.lpos += len as u64;
        if user {
            g.records += 1;
            self.user_end.store(g.lpos, Ordering::Release);
        }
        match g.chunks.back_mut() {
            Some(c) if Arc::ptr_eq(&c.seg, &g.active) && c.to == off => c.to += len as u32,
            _ => g.chunks.push_back(Chunk {
                seg: g.active.clone(),
                from: off,
                to: off + len as u32,
            }),
        }
        if !g.prep_started && g.reserved as u64 * 2 > g.active.cap as u64 {
            g.prep_started = true;
            self.start_prep(g);
        }
        Ok(pack_pos(g.active.id, off))
    }

    /// Starts preparing the next segment on a thread of its own, unless one
    /// is prepared or being prepared. Its id is reserved now, under the
    /// shard lock, so segments become active in id order.
    fn start_prep(&self, g: &mut Inner) {
        let mut slot = self.next.lock();
        if slot.preparing || slot.seg.is_some() || g.poison.is_some() {
            return;
        }
        let Some(me) = self.this.get().and_then(|w| w.upgrade()) else {
            return;
        };
        let id = slot.retry_id.take().unwrap_or_else(|| {
            g.next_segment_id += 1;
            g.next_segment_id - 1
        });
        slot.preparing = true;
        drop(slot);
        let spawned = std::thread::Builder::new()
            .name(format!("emdb-prep-{}", self.id))
            .spawn(move || {
                let made = me.create_segment(id);
                let mut slot = me.next.lock();
                slot.preparing = false;
                match made {
                    Ok(seg) => {
                        slot.seg = Some(seg);
                        slot.failures = 0;
                    }
                    // Retried; rotation reports its own error.
                    Err((_, reusable)) => {
                        slot.retry_id = reusable.then_some(id);
                        slot.failures += 1;
                    }
                }
                let waiters = std::mem::take(&mut slot.waiters);
                drop(slot);
                me.next_ready.notify_all();
                for w in waiters {
                    w.wake();
                }
            });
        match spawned {
            Ok(t) => {
                if let Some(old) = self.prep.lock().replace(t) {
                    // Finished already (a segment is only prepared after the
                    // previous one was taken).
                    let _ = old.join();
                }
            }
            Err(_) => {
                // No thread: the id stays unused and rotation creates one.
                self.next.lock().preparing = false;
            }
        }
    }

    /// Points namespace `ns`'s index at the put of `key` (hash `h`) just
    /// appended at `loc` (`len` bytes, expiring at `expires_at`), keeping
    /// the live-byte accounting and the expiry list. Under the lock; the
    /// caller ends the write with [`finish_write`](Shard::finish_write).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn index_put(
        &self,
        g: &mut Inner,
        guard: &Guard,
        (ns, h): (u32, u64),
        key: &[u8],
        loc: u64,
        len: usize,
        expires_at: Option<u64>,
    ) {
        let segs = self.segments(guard);
        let old = self.indexes.get_or_create(ns, guard).upsert(h, loc, |old| {
            frame_has_key(segs, old, ns, key, self.ctx.crypto())
        });
        if let Some(old) = old {
            g.expiring.forget(segs, old);
        }
        // The ordered index points at the record too: a new key enters it,
        // an overwritten one moves there.
        if let Some(o) = &mut g.ordered {
            o.insert(ns, key, loc);
        }
        if let Some(t) = expires_at {
            g.expiring.add(t, loc, ns, h);
        }
        account(segs, Some((loc, len as u32)), old);
    }

    /// Removes `key` (hash `h`) from namespace `ns`'s index, as
    /// [`index_put`](Shard::index_put) keeps things; its old location.
    pub(super) fn index_remove(
        &self,
        g: &mut Inner,
        guard: &Guard,
        (ns, h): (u32, u64),
        key: &[u8],
    ) -> Option<u64> {
        let segs = self.segments(guard);
        let gone = self.indexes.get(ns, guard).and_then(|ix| {
            ix.remove(h, |loc| {
                frame_has_key(segs, loc, ns, key, self.ctx.crypto())
            })
        });
        if let Some(old) = gone {
            g.expiring.forget(segs, old);
            if let Some(o) = &mut g.ordered {
                o.remove(ns, key);
            }
        }
        account(segs, None, gone);
        gone
    }

    /// Publishes the expiry list's length after a change (under the lock).
    pub(super) fn note_expiring(&self, g: &Inner) {
        self.expiring_len.store(g.expiring.len(), Ordering::Relaxed);
    }

    /// Whether namespace `ns`'s index points at `loc` for hash `h`.
    pub(crate) fn points_at(&self, ns: u32, h: u64, loc: u64) -> bool {
        let guard = epoch::pin();
        self.indexes
            .get(ns, &guard)
            .is_some_and(|ix| ix.points_at(h, loc))
    }

    /// Whether the next segment is prepared.
    pub(super) fn next_prepared(&self) -> bool {
        self.next.lock().seg.is_some()
    }

    /// Whether appending `bytes` more (in frames within the limits) rotates
    /// the active segment.
    pub(super) fn needs_rotation(g: &Inner, bytes: u64) -> bool {
        g.reserved as u64 + bytes > g.active.cap as u64
    }

    /// Ready once the next segment is prepared, so that a rotation under
    /// the lock never waits for a file to be created: starts preparing it
    /// if nobody is, and registers `cx` to be woken when it is ready.
    /// A failed preparation is retried once in the background; after a
    /// second failure in a row the rotation creates the file inline and
    /// reports its own error (failing this append only). Without a thread to prepare it,
    /// the rotation creates the file inline.
    pub(super) fn poll_next_segment(&self, g: &mut Inner, cx: &Context<'_>) -> Poll<Result<()>> {
        let mut slot = self.next.lock();
        if slot.seg.is_some() {
            return Poll::Ready(Ok(()));
        }
        if !slot.preparing {
            if slot.failures >= 2 {
                // Two failed in a row: the rotation creates the file inline
                // and reports what fails now (an error kept from a
                // preparation could be stale: say, an entry at the path
                // removed since). Rare: only while files cannot be made.
                slot.failures = 0;
                return Poll::Ready(Ok(()));
            }
            drop(slot);
            self.start_prep(g);
            slot = self.next.lock();
            if slot.seg.is_some() || !slot.preparing {
                return Poll::Ready(Ok(()));
            }
        }
        let w = cx.waker();
        if !w.will_wake(Waker::noop()) && !slot.waiters.iter().any(|x| x.will_wake(w)) {
            slot.waiters.push(w.clone());
        }
        Poll::Pending
    }

    /// Seals the active segment and continues in the next one. If the
    /// prepared segment is not ready the writer waits for it (rare: a burst
    /// faster than preparation); if none is being prepared it creates one.
    ///
    /// The next segment starts with a sync marker claiming the sealed
    /// segment's end: the core issues its writes to the next segment only
    /// after the sealing fdatasync completed, so once that marker is on disk
    /// the whole sealed segment is durable, and recovery reports a sealed
    /// segment found shorter than the claim as corrupt instead of reading
    /// the log past a gap.
    fn rotate(&self, g: &mut Inner) -> Result<()> {
        let next = loop {
            let mut slot = self.next.lock();
            if let Some(seg) = slot.seg.take() {
                slot.failures = 0;
                break seg;
            }
            if slot.preparing {
                self.next_ready.wait(&mut slot);
                continue;
            }
            let id = slot.retry_id.take().unwrap_or_else(|| {
                g.next_segment_id += 1;
                g.next_segment_id - 1
            });
            drop(slot);
            // A segment that cannot be created (a full disk, an entry
            // already at its path) fails this append only: nothing was
            // written or half-written, and the next append tries again.
            match self.create_segment(id) {
                Ok(seg) => break seg,
                Err((e, reusable)) => {
                    if reusable {
                        self.next.lock().retry_id = Some(id);
                    }
                    return Err(Error::Io(e));
                }
            }
        };
        let sealed_end = pack_pos(g.active.id, g.reserved);
        let old = std::mem::replace(&mut g.active, next);
        old.sealed.store(true, Ordering::Release);
        g.to_seal.push(old);
        g.reserved = SEGMENT_HEADER_LEN as u32;
        g.prep_started = false;
        self.append_marker(g, sealed_end);
        self.wake_core();
        Ok(())
    }

    /// Creates, registers and publishes a segment. On failure, whether the
    /// id may be used again (no file of it was left behind).
    fn create_segment(&self, id: u32) -> std::result::Result<Arc<Segment>, (std::io::Error, bool)> {
        let header = SegmentHeader {
            shard: self.id as u32,
            shard_count: self.ctx.shard_count as u32,
            segment: id,
            hash_seed: self.ctx.hash_seed,
        };
        let seg = Arc::new(
            Segment::create(self.ctx.config.dir.as_deref(), header, &self.ctx.config)
                .map_err(|e| (e, true))?,
        );
        // On failure the file stays: a manifest renamed into place before
        // the failure may list it. If none does, the next open removes it.
        self.ctx
            .register_segment(self.id, id)
            .map_err(|e| (e, false))?;
        self.publish_segment(seg.clone());
        Ok(seg)
    }

    pub(super) fn poison_with(&self, g: &mut Inner, e: &std::io::Error) -> Error {
        let p = Poison::new(e);
        let err = p.to_io_error();
        if g.poison.is_none() {
            g.poison = Some(p);
            self.poisoned.store(true, Ordering::Release);
        }
        for w in std::mem::take(&mut g.space_waiters) {
            w.wake();
        }
        // Its part of a running commit generation fails (never waits, never
        // takes a shard lock: safe under this one).
        self.ctx.commit.part_failed(self.id);
        err
    }

    /// For a flush: `Ok` unless the shard is poisoned (the poison's error,
    /// see `check_flushable`); the lock is taken only then.
    pub(crate) fn flushable(&self) -> Result<()> {
        if self.is_poisoned() {
            return self.check_flushable(&self.lock());
        }
        Ok(())
    }

    /// For a flush: the failure that poisoned the shard, as the `Error::Io`
    /// its waiters got (the durability of what that failure touched is
    /// unknown, so no flush may succeed).
    pub(crate) fn check_flushable(&self, g: &Inner) -> Result<()> {
        match &g.poison {
            Some(p) => Err(p.to_io_error()),
            None => Ok(()),
        }
    }

    pub(crate) fn check_poison(&self, g: &Inner) -> Result<()> {
        match &g.poison {
            Some(p) => Err(Error::Poisoned {
                shard: self.id,
                cause: p.message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// After an append: wake the core if it is idle or the backlog is large.
    pub(crate) fn after_append(&self, g: &Inner) {
        let backlog = g.lpos - self.written_lpos.load(Ordering::Acquire);
        if backlog >= WAKE_BYTES
            || (self.core_idle.load(Ordering::Relaxed)
                && self.core_idle.swap(false, Ordering::AcqRel))
        {
            self.wake_core();
        }
    }

    pub(crate) fn durable_lpos(&self) -> u64 {
        self.durable_lpos.load(Ordering::Acquire)
    }

    /// The user records written up to the end of the log (what a flush
    /// waits for).
    /// Ends a write made under the lock `g`: publishes the expiry list's
    /// length, wakes the core if it should write now, and returns the log
    /// position whose durability makes the write durable.
    pub(super) fn finish_write(&self, g: &Inner) -> u64 {
        self.note_expiring(g);
        self.after_append(g);
        self.user_end()
    }

    pub(crate) fn user_end(&self) -> u64 {
        self.user_end.load(Ordering::Acquire)
    }

    /// For a commit generation: its device flush, which started after this
    /// shard put `snap` (log position, marker position, records) on the
    /// device, has completed.
    pub(crate) fn mark_durable(&self, snap: (u64, u64, u64)) {
        let (lpos, pos, records) = snap;
        let mut g = self.lock();
        let before = self.durable_lpos.fetch_max(lpos, Ordering::AcqRel);
        self.durable_records.fetch_max(records, Ordering::Relaxed);
        if before < lpos && !g.shutdown {
            g.marker_due = Some(g.marker_due.map_or(pos, |p| p.max(pos)));
        }
        drop(g);
        // The marker rides along with the core's next round; a core that is
        // still lingering writes it before it parks for good, so only an
        // idle one needs waking (a round of its own for every generation
        // would cost a wake-up and a write per shard).
        if self.core_idle.load(Ordering::Acquire) {
            self.wake_core();
        }
    }

    /// A device flush failed: nothing it covered can be called durable.
    pub(crate) fn poison_from_flush(&self, e: &std::io::Error) {
        let mut g = self.lock();
        self.poison_with(&mut g, e);
    }

    /// A core thread died (a bug): fail every waiter and refuse writes
    /// rather than leave callers waiting forever.
    pub(crate) fn poison_dead_core(&self) {
        let mut g = self.lock();
        self.poison_with(
            &mut g,
            &std::io::Error::other("emdb shard core thread panicked"),
        );
    }

    /// Waits for the segment-preparation thread, if one runs.
    pub(crate) fn join_prep(&self) {
        if let Some(t) = self.prep.lock().take() {
            let _ = t.join();
        }
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Asks the core to finish: write and sync everything, write a final
    /// sync marker, and exit.
    pub(crate) fn request_shutdown(&self) {
        self.lock().shutdown = true;
        self.wake_core();
    }

    /// Appends a sync marker claiming durable position `pos`.
    pub(super) fn append_marker(&self, g: &mut Inner, pos: u64) {
        let value = pos.to_le_bytes();
        let spec = FrameSpec {
            kind: Kind::Sync,
            seq: 0,
            namespace: 0,
            batch_count: 0,
            expires_at: None,
            key: &[],
            value: &value,
        };
        // A failure here poisons the shard inside append; nothing to add.
        let _ = self.append(g, &spec, false);
    }
}

/// Whether at least `threshold` of a segment's frame bytes are dead.
fn worth_compacting(s: &Segment, threshold: f64) -> bool {
    let data =
        (s.data_end.load(Ordering::Acquire) as u64).saturating_sub(SEGMENT_HEADER_LEN as u64);
    data > 0 && s.dead_bytes() as f64 >= threshold * data as f64
}

impl Poison {
    fn new(e: &std::io::Error) -> Poison {
        Poison {
            os_error: e.raw_os_error(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The failure as an `Error::Io` again (io::Error is not Clone).
    pub(super) fn to_io_error(&self) -> Error {
        Error::Io(match self.os_error {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(self.kind, self.message.clone()),
        })
    }
}
