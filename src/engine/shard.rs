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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::Ctx;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::io::{Io, Op};
use crate::log::frame::{self, pack_pos, FrameSpec, Kind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::log::segment::Segment;

/// How long the core keeps collecting appends after a round before it writes
/// again; it parks for good only after a quiet interval.
const LINGER: Duration = Duration::from_micros(500);
/// Unwritten bytes past which an appender wakes a lingering core early.
const WAKE_BYTES: u64 = 1 << 20;
/// Shadow bytes kept faulted in ahead of the append offset.
const PREFAULT_AHEAD: u32 = 1 << 20;
/// Longest a core waits for returning flushers before a sync round.
const MAX_GATHER: Duration = Duration::from_micros(200);
/// Most operations in one chain (the ring holds 64 entries).
const MAX_CHAIN: usize = 48;

/// A contiguous appended range of one segment not yet written.
struct Chunk {
    seg: Arc<Segment>,
    from: u32,
    to: u32,
}

/// Segments readers can reach, by id.
pub(crate) struct SegTable {
    pub first: u32,
    pub segs: Vec<Arc<Segment>>,
}

impl SegTable {
    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&Arc<Segment>> {
        let i = id.checked_sub(self.first)? as usize;
        match self.segs.get(i) {
            Some(s) if s.id == id => Some(s),
            // Ids have gaps once segments are dropped.
            _ => self
                .segs
                .binary_search_by_key(&id, |s| s.id)
                .ok()
                .map(|i| &self.segs[i]),
        }
    }
}

pub(crate) struct Inner {
    pub active: Arc<Segment>,
    /// Next append offset in `active`.
    pub reserved: u32,
    /// A pre-created segment to rotate into.
    chunks: VecDeque<Chunk>,
    /// Sealed segments whose sealing fsync the core has not issued yet.
    to_seal: Vec<Arc<Segment>>,
    /// Bytes appended in this process's lifetime (a log position).
    pub lpos: u64,
    /// `lpos` after the last record a user wrote (markers excluded).
    pub user_lpos: u64,
    /// User records appended in this process's lifetime.
    records: u64,
    /// Highest log position a waiter needs synced by this shard itself.
    sync_wanted: u64,
    /// Highest log position a waiter needs on the device, to be made durable
    /// by the database-wide device flush (multi-shard flushes).
    stable_wanted: u64,
    /// What is on the device but not yet flushed: (lpos, position, records).
    stable: (u64, u64, u64),
    flush_waiters: Vec<Waker>,
    space_waiters: Vec<Waker>,
    poison: Option<Poison>,
    shutdown: bool,
    /// A durable position to record in a sync marker.
    marker_due: Option<u64>,
    next_segment_id: u32,
    /// Preparation of the next segment was asked for since the last rotation.
    prep_started: bool,
}

/// The segment to rotate into, prepared ahead of need.
#[derive(Default)]
struct NextSlot {
    seg: Option<Arc<Segment>>,
    preparing: bool,
    /// An id whose segment could not be created and left no file behind:
    /// the next attempt uses it again, so an entry planted at its path
    /// keeps failing rotation (with an error naming it) instead of being
    /// skipped.
    retry_id: Option<u32>,
}

#[derive(Clone)]
struct Poison {
    os_error: Option<i32>,
    kind: std::io::ErrorKind,
    message: String,
}

pub(crate) struct Shard {
    pub id: usize,
    pub index: Index,
    segs: Atomic<SegTable>,
    inner: Mutex<Inner>,
    /// Log position written to the kernel / made durable.
    written_lpos: AtomicU64,
    durable_lpos: AtomicU64,
    poisoned: AtomicBool,
    core: OnceLock<Thread>,
    core_idle: AtomicBool,
    pub device_flushes: AtomicU64,
    /// User records made durable (monotone).
    pub durable_records: AtomicU64,
    /// The thread preparing the next segment, if one ran.
    prep: Mutex<Option<std::thread::JoinHandle<()>>>,
    next: Mutex<NextSlot>,
    next_ready: Condvar,
    /// Weak self-reference, for the preparation thread.
    this: OnceLock<std::sync::Weak<Shard>>,
    ctx: Arc<Ctx>,
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
        index: Index,
    ) -> Shard {
        let active = segs.last().cloned().expect("a shard always has a segment");
        let next_segment_id = active.id + 1;
        let first = segs.first().map_or(active.id, |s| s.id);
        Shard {
            id,
            index,
            segs: Atomic::new(SegTable { first, segs }),
            inner: Mutex::new(Inner {
                active,
                reserved: append_at,
                chunks: VecDeque::new(),
                to_seal: Vec::new(),
                lpos: 0,
                user_lpos: 0,
                records: 0,
                sync_wanted: 0,
                stable_wanted: 0,
                stable: (0, 0, 0),
                flush_waiters: Vec::new(),
                space_waiters: Vec::new(),
                poison: None,
                shutdown: false,
                marker_due: None,
                next_segment_id,
                prep_started: false,
            }),
            written_lpos: AtomicU64::new(0),
            durable_lpos: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            core: OnceLock::new(),
            core_idle: AtomicBool::new(false),
            device_flushes: AtomicU64::new(0),
            durable_records: AtomicU64::new(0),
            prep: Mutex::new(None),
            next: Mutex::new(NextSlot::default()),
            next_ready: Condvar::new(),
            this: OnceLock::new(),
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
        self.segments(&guard).segs.clone()
    }

    fn publish_segment(&self, seg: Arc<Segment>) {
        let guard = epoch::pin();
        let cur = self.segments(&guard);
        let mut segs = cur.segs.clone();
        segs.push(seg);
        let new = SegTable {
            first: cur.first,
            segs,
        };
        let old = self.segs.swap(Owned::new(new), Ordering::AcqRel, &guard);
        // SAFETY: unreachable for new readers; destroyed after current ones.
        unsafe { guard.defer_destroy(old) };
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
        let len = spec.encoded_len();
        if g.reserved as usize + len > g.active.cap as usize {
            self.rotate(g)?;
        }
        let off = g.reserved;
        // SAFETY: [off, off + len) lies inside the active segment (checked
        // above; rotation leaves room for any frame within the limits) and
        // is reserved by us under the shard lock.
        let out = unsafe { g.active.shadow_mut(off, len) };
        frame::encode(spec, out);
        g.reserved += len as u32;
        g.lpos += len as u64;
        if user {
            g.user_lpos = g.lpos;
            g.records += 1;
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
                    Ok(seg) => slot.seg = Some(seg),
                    // Rotation tries again and reports its own error.
                    Err((_, reusable)) => slot.retry_id = reusable.then_some(id),
                }
                drop(slot);
                me.next_ready.notify_all();
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
        append_marker(self, g, sealed_end);
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

    fn poison_with(&self, g: &mut Inner, e: &std::io::Error) -> Error {
        let p = Poison::new(e);
        let err = p.to_io_error();
        if g.poison.is_none() {
            g.poison = Some(p);
            self.poisoned.store(true, Ordering::Release);
        }
        let mut wake = std::mem::take(&mut g.flush_waiters);
        wake.append(&mut g.space_waiters);
        for w in wake {
            w.wake();
        }
        err
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

    /// Waits until the shard can take `need` more unwritten bytes, then
    /// returns its lock.
    pub(crate) fn lock_for_append(&self, need: usize) -> LockForAppend<'_> {
        LockForAppend {
            shard: self,
            need: need as u64,
        }
    }

    /// Completes once everything this shard appended up to `target` is
    /// durable. With `shared`, the shard only puts its data on the device
    /// and the database-wide device flush makes it durable, so that one
    /// device flush serves every shard of a multi-shard flush.
    pub(crate) fn durable(&self, target: u64, shared: bool) -> Durable<'_> {
        Durable {
            shard: self,
            target,
            shared,
        }
    }

    pub(crate) fn durable_lpos(&self) -> u64 {
        self.durable_lpos.load(Ordering::Acquire)
    }

    /// For the device flusher: whether this shard is still putting data on
    /// the device for a shared flush.
    pub(crate) fn shared_pending(&self) -> bool {
        let g = self.lock();
        g.stable_wanted > g.stable.0.max(self.durable_lpos.load(Ordering::Acquire))
    }

    /// For the device flusher: what this shard has on the device.
    pub(crate) fn stable_snapshot(&self) -> (u64, u64, u64) {
        self.lock().stable
    }

    /// For the device flusher: a device flush that started after `snap`
    /// was taken has completed.
    pub(crate) fn mark_durable(&self, snap: (u64, u64, u64)) {
        let (lpos, pos, records) = snap;
        let mut g = self.lock();
        let before = self.durable_lpos.fetch_max(lpos, Ordering::AcqRel);
        self.durable_records.fetch_max(records, Ordering::Relaxed);
        if before < lpos && !g.shutdown {
            g.marker_due = Some(g.marker_due.map_or(pos, |p| p.max(pos)));
        }
        let wake = std::mem::take(&mut g.flush_waiters);
        drop(g);
        for w in wake {
            w.wake();
        }
        self.wake_core();
    }

    /// For the device flusher: its flush failed, so nothing it covered can
    /// be called durable.
    pub(crate) fn poison_from_flusher(&self, e: &std::io::Error) {
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

    pub(crate) fn appended_bytes(&self) -> u64 {
        let g = self.lock();
        let segs = self.segment_list();
        let mut total = 0u64;
        for s in &segs {
            if s.id > g.active.id {
                total += SEGMENT_HEADER_LEN as u64; // prepared, unused
            } else if Arc::ptr_eq(s, &g.active) {
                total += g.reserved as u64;
            } else {
                total += s.written.load(Ordering::Acquire) as u64;
            }
        }
        total
    }
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
    fn to_io_error(&self) -> Error {
        Error::Io(match self.os_error {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(self.kind, self.message.clone()),
        })
    }
}

/// Future of [`Shard::lock_for_append`].
pub(crate) struct LockForAppend<'a> {
    shard: &'a Shard,
    need: u64,
}

impl<'a> Future for LockForAppend<'a> {
    type Output = Result<MutexGuard<'a, Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shard = self.shard;
        let mut g = shard.lock();
        if let Err(e) = shard.check_poison(&g) {
            return Poll::Ready(Err(e));
        }
        let backlog = g.lpos - shard.written_lpos.load(Ordering::Acquire);
        let limit = shard.ctx.config.tail_buffer_bytes as u64;
        // A small backlog admits one append whatever its size, so a batch
        // part larger than the buffer is not starved by steady writers; the
        // backlog then overshoots by at most that part plus limit / 8.
        if backlog + self.need <= limit || backlog <= limit / 8 {
            return Poll::Ready(Ok(g));
        }
        if register(&g.space_waiters, cx) {
            g.space_waiters.push(cx.waker().clone());
        }
        drop(g);
        shard.wake_core();
        Poll::Pending
    }
}

/// Future of [`Shard::durable`].
pub(crate) struct Durable<'a> {
    shard: &'a Shard,
    target: u64,
    shared: bool,
}

impl Future for Durable<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shard = self.shard;
        if shard.durable_lpos.load(Ordering::Acquire) >= self.target {
            return Poll::Ready(Ok(()));
        }
        let mut g = shard.lock();
        if shard.durable_lpos.load(Ordering::Acquire) >= self.target {
            return Poll::Ready(Ok(()));
        }
        if let Some(p) = &g.poison {
            return Poll::Ready(Err(p.to_io_error()));
        }
        if self.shared {
            g.stable_wanted = g.stable_wanted.max(self.target);
            if g.stable.0 >= self.target {
                // Already on the device: only the device flush is missing.
                if register(&g.flush_waiters, cx) {
                    g.flush_waiters.push(cx.waker().clone());
                }
                drop(g);
                shard.ctx.request_device_flush();
                return Poll::Pending;
            }
        } else {
            g.sync_wanted = g.sync_wanted.max(self.target);
        }
        if register(&g.flush_waiters, cx) {
            g.flush_waiters.push(cx.waker().clone());
        }
        drop(g);
        shard.wake_core();
        Poll::Pending
    }
}

/// What one round of the core does, taken under the lock.
struct Round {
    chunks: Vec<Chunk>,
    seals: Vec<Arc<Segment>>,
    lpos: u64,
    records: u64,
    sync: SyncMode,
    /// At most one caller waits on this round: favour latency.
    latency_bound: bool,
    /// The active segment and its append offset when the round was taken.
    active: Arc<Segment>,
    reserved: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    /// Write only.
    None,
    /// fdatasync the dirty segment: durable when the chain completes.
    Direct,
    /// Put the dirty segment's pages on the device; the device flusher makes
    /// them durable.
    Shared,
}

/// Whether a pending future should add its waker to `list`: not when it
/// is there already, and never the no-op waker of `block_on`'s first poll
/// (waking it does nothing, and counted as a waiter it would make the core
/// see two flushers where there is one: no latency-bound path for a lone
/// flusher, and a gathering pause for a second one that never comes).
fn register(list: &[Waker], cx: &Context<'_>) -> bool {
    !cx.waker().will_wake(Waker::noop()) && !list.iter().any(|w| w.will_wake(cx.waker()))
}

/// The core thread's loop. Returns when shut down (after a final sync) or
/// when its backend is gone.
pub(crate) fn run_core(shard: Arc<Shard>, mut io: Box<dyn Io>) {
    // The last segment written without a sync after it.
    let mut dirty: Option<Arc<Segment>> = None;
    // 0: running; 1: shutting down, final marker appended.
    let mut final_phase = 0u8;
    let mut lingering = false;
    // Group-commit gathering: how many waiters the last synced round served
    // and how long its sync took.
    let mut last_waiters = 0usize;
    let mut last_sync = Duration::ZERO;
    loop {
        let round = {
            let mut g = shard.lock();
            let sync_asked =
                g.sync_wanted.max(g.stable_wanted) > shard.durable_lpos.load(Ordering::Acquire);
            if last_waiters >= 2
                && !g.shutdown
                && g.flush_waiters.len() < last_waiters
                && sync_asked
            {
                // Concurrent flushers were just woken by the last round and
                // are coming back: give them a fraction of a sync's time to
                // join this one rather than the one after.
                let deadline = std::time::Instant::now() + (last_sync / 2).min(MAX_GATHER);
                while g.flush_waiters.len() < last_waiters {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    drop(g);
                    std::thread::park_timeout(deadline - now);
                    g = shard.lock();
                }
            }
            let durable = shard.durable_lpos.load(Ordering::Acquire);
            if g.poison.is_some() {
                if g.shutdown {
                    return;
                }
                drop(g);
                std::thread::park();
                continue;
            }
            let written = shard.written_lpos.load(Ordering::Acquire);
            let mut pending = !g.chunks.is_empty() || !g.to_seal.is_empty();
            let want_direct =
                g.sync_wanted > durable || (g.shutdown && (written > durable || pending));
            let want_shared = g.stable_wanted > g.stable.0.max(durable);
            let want_sync = want_direct || want_shared;
            // A marker rides along with the next write, or is written on its
            // own just before the core goes idle.
            if !g.shutdown && (pending || want_sync || !lingering) {
                if let Some(pos) = g.marker_due.take() {
                    append_marker(&shard, &mut g, pos);
                    pending = true;
                }
            }
            if !pending && !want_sync {
                if g.shutdown {
                    if final_phase == 0 {
                        // Everything is durable: one more round writes and
                        // syncs a marker that records it.
                        g.marker_due = Some(pack_pos(g.active.id, g.reserved));
                        drop(g);
                        final_phase_marker(&shard);
                        final_phase = 1;
                        continue;
                    }
                    return;
                }
                if lingering {
                    drop(g);
                    lingering = false;
                    std::thread::park_timeout(LINGER);
                } else {
                    shard.core_idle.store(true, Ordering::Release);
                    drop(g);
                    std::thread::park();
                    shard.core_idle.store(false, Ordering::Release);
                }
                continue;
            }
            let chunks: Vec<Chunk> = g.chunks.drain(..).collect();
            let seals = std::mem::take(&mut g.to_seal);
            let sync = if want_direct {
                SyncMode::Direct
            } else if want_shared {
                SyncMode::Shared
            } else {
                SyncMode::None
            };
            Round {
                chunks,
                seals,
                lpos: g.lpos,
                records: g.records,
                sync,
                latency_bound: g.flush_waiters.len() <= 1,
                active: g.active.clone(),
                reserved: g.reserved,
            }
        };
        lingering = true;
        // Fault in the shadow pages writers will use next, here rather than
        // in their critical sections.
        round
            .active
            .prefault_shadow(round.reserved.saturating_add(PREFAULT_AHEAD));
        let started = std::time::Instant::now();
        let result = run_round(io.as_mut(), &round, &mut dirty);
        if round.sync != SyncMode::None {
            last_sync = started.elapsed();
        }
        match result {
            Ok(synced) => {
                for c in &round.chunks {
                    c.seg.written.fetch_max(c.to, Ordering::AcqRel);
                }
                shard.written_lpos.store(round.lpos, Ordering::Release);
                let mut g = shard.lock();
                shard
                    .device_flushes
                    .fetch_add(synced.count, Ordering::Relaxed);
                if synced.all {
                    shard.durable_lpos.fetch_max(round.lpos, Ordering::AcqRel);
                    shard
                        .durable_records
                        .fetch_max(round.records, Ordering::Relaxed);
                }
                if let Some(pos) = synced.stable {
                    g.stable = (round.lpos, pos, round.records);
                }
                if let Some(pos) = synced.claim {
                    if !g.shutdown {
                        g.marker_due = Some(pos);
                    }
                }
                let mut wake = if synced.stable.is_some() {
                    // The device flusher wakes this round's waiters.
                    last_waiters = g.flush_waiters.len();
                    Vec::new()
                } else {
                    std::mem::take(&mut g.flush_waiters)
                };
                if round.sync == SyncMode::Direct {
                    last_waiters = wake.len();
                }
                wake.append(&mut g.space_waiters);
                drop(g);
                if synced.stable.is_some() {
                    shard.ctx.request_device_flush();
                }
                for w in wake {
                    w.wake();
                }
                for c in &round.chunks {
                    if c.seg.sealed.load(Ordering::Acquire)
                        && c.seg.written.load(Ordering::Acquire) >= c.to
                    {
                        c.seg.release_shadow(c.to);
                    } else {
                        c.seg.release_shadow(c.to.saturating_sub(64 << 10));
                    }
                }
            }
            Err(e) => {
                let mut g = shard.lock();
                shard.poison_with(&mut g, &e);
            }
        }
    }
}

#[derive(Default)]
struct Synced {
    /// fdatasyncs issued.
    count: u64,
    /// Everything written is now durable.
    all: bool,
    /// The durable log prefix's end, to record in a marker.
    claim: Option<u64>,
    /// Everything written is on the device up to this position, waiting
    /// for the device flush.
    stable: Option<u64>,
}

enum Step {
    Write(Arc<Segment>, u32, u32),
    Sync(Arc<Segment>, u32),
    SyncRange(Arc<Segment>),
    /// Write zeros over `[from, to)`, beyond any data.
    Zero(Arc<Segment>, u32, u32),
}

/// Zero-fill step ahead of the log tail (see `Segment::zeroed_upto`).
static ZEROS: [u8; 2 << 20] = [0; 2 << 20];
/// Zero-fill again when less than this is left below `zeroed_upto`.
const ZERO_LOW_WATER: u32 = 512 << 10;

/// Plans and runs one chain: the writes in log order, a sealing sync after
/// the last write of each sealed segment, and a final sync of the segment
/// left dirty when a waiter asked for durability.
fn run_round(
    io: &mut dyn Io,
    round: &Round,
    dirty: &mut Option<Arc<Segment>>,
) -> std::io::Result<Synced> {
    let mut steps: Vec<Step> = Vec::with_capacity(round.chunks.len() + round.seals.len() + 1);
    let sealed = |s: &Arc<Segment>| round.seals.iter().any(|x| Arc::ptr_eq(x, s));
    let is_dirty =
        |d: &Option<Arc<Segment>>, s: &Arc<Segment>| d.as_ref().is_some_and(|d| Arc::ptr_eq(d, s));
    for s in &round.seals {
        if !round.chunks.iter().any(|c| Arc::ptr_eq(&c.seg, s)) {
            steps.push(Step::Sync(s.clone(), s.written.load(Ordering::Acquire)));
            if is_dirty(dirty, s) {
                *dirty = None;
            }
        }
    }
    for (i, c) in round.chunks.iter().enumerate() {
        steps.push(Step::Write(c.seg.clone(), c.from, c.to));
        let last_of_seg = round.chunks[i + 1..]
            .iter()
            .all(|n| !Arc::ptr_eq(&n.seg, &c.seg));
        if last_of_seg && sealed(&c.seg) {
            steps.push(Step::Sync(c.seg.clone(), c.to));
            if is_dirty(dirty, &c.seg) {
                *dirty = None;
            }
        } else {
            *dirty = Some(c.seg.clone());
        }
    }
    let mut stable = None;
    if round.sync != SyncMode::None {
        if let Some(d) = dirty.take() {
            let end = round
                .chunks
                .iter()
                .rev()
                .find(|c| Arc::ptr_eq(&c.seg, &d))
                .map_or_else(|| d.written.load(Ordering::Acquire), |c| c.to);
            let zeroed = d.zeroed_upto.load(Ordering::Acquire);
            let on_disk = d.storage.fd().is_some();
            let shared = round.sync == SyncMode::Shared && on_disk;
            if shared && end <= zeroed && (zeroed - end >= ZERO_LOW_WATER || zeroed >= d.cap) {
                // No metadata can change: pages to the device, and the device
                // flusher's one fdatasync makes them durable.
                stable = Some(pack_pos(d.id, end));
                steps.push(Step::SyncRange(d.clone()));
                // Not durable until the device flush: still dirty.
                *dirty = Some(d);
            } else {
                if shared {
                    // Zero-fill ahead of the tail, synced with this round's
                    // data, so that the next shared rounds take the path above.
                    let from = zeroed.max(end);
                    let to = (from as u64 + ZEROS.len() as u64).min(d.cap as u64) as u32;
                    if from < to {
                        steps.push(Step::Zero(d.clone(), from, to));
                    }
                }
                steps.push(Step::Sync(d, end));
            }
        }
    }
    let ops: Vec<Op<'_>> = steps
        .iter()
        .map(|s| match s {
            Step::Write(seg, from, to) => Op::Write {
                target: &seg.storage,
                offset: *from as u64,
                buf: seg.shadow_range(*from, *to),
            },
            Step::Sync(seg, _) => Op::Sync {
                target: &seg.storage,
            },
            Step::SyncRange(seg) => Op::SyncRange {
                target: &seg.storage,
            },
            Step::Zero(seg, from, to) => Op::Write {
                target: &seg.storage,
                offset: *from as u64,
                buf: &ZEROS[..(*to - *from) as usize],
            },
        })
        .collect();
    let ran = ops.chunks(MAX_CHAIN).try_for_each(|part| {
        if round.latency_bound {
            io.run_latency_bound(part)
        } else {
            io.run(part)
        }
    });
    if let Err(e) = ran {
        if io.buffers_in_flight() {
            // The kernel may still read these segments' shadows (and use
            // their descriptors): keep them mapped and open for good. The
            // shard is poisoned by this error, so this happens once.
            drop(ops);
            std::mem::forget(steps);
        }
        return Err(e);
    }
    let mut synced = Synced {
        all: dirty.is_none(),
        stable,
        ..Synced::default()
    };
    let mut zeroed_to: Option<(&Arc<Segment>, u32)> = None;
    for s in &steps {
        match s {
            Step::Zero(seg, _, to) => zeroed_to = Some((seg, *to)),
            Step::Sync(seg, end) => {
                synced.count += 1;
                synced.claim = Some(pack_pos(seg.id, *end));
                // Every block the data and zeros touched is now durable.
                let upto = match zeroed_to {
                    Some((z, to)) if Arc::ptr_eq(z, seg) => to,
                    _ => *end,
                };
                seg.zeroed_upto.fetch_max(upto, Ordering::AcqRel);
            }
            _ => {}
        }
    }
    Ok(synced)
}

/// Appends the marker queued in `marker_due` (the final one at shutdown).
fn final_phase_marker(shard: &Shard) {
    let mut g = shard.lock();
    if let Some(pos) = g.marker_due.take() {
        append_marker(shard, &mut g, pos);
    }
}

fn append_marker(shard: &Shard, g: &mut Inner, pos: u64) {
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
    let _ = shard.append(g, &spec, false);
}
