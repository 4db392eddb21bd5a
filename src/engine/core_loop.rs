//! The shard core's loop: each round takes everything appended since the
//! last one and hands it to the I/O backend as one chain (the writes at the
//! log tail, a sealing fdatasync for each segment sealed meanwhile, and, when
//! this shard has a part in the running commit generation, either an
//! fdatasync or a `sync_file_range` that leaves the device flush to the last
//! part; see `commit.rs`). Every flush that arrives while a generation is in
//! flight is served by the next one: that is the group commit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::commit::{Arrival, PartPlan};
use super::shard::{Chunk, Shard, WAKE_BYTES};
use crate::config::SyncStrategy;
use crate::io::{Io, Op};
use crate::log::frame::pack_pos;
use crate::log::segment::{Segment, REGION};

/// How long the core keeps collecting appends after a round before it writes
/// again; it parks for good only after a quiet interval.
const LINGER: Duration = Duration::from_micros(500);
/// Shadow bytes kept faulted in ahead of the append offset.
const PREFAULT_AHEAD: u32 = 1 << 20;
/// Most operations in one chain (the ring holds 64 entries).
const MAX_CHAIN: usize = 48;

/// What one round of the core does, taken under the lock.
struct Round {
    chunks: Vec<Chunk>,
    seals: Vec<Arc<Segment>>,
    lpos: u64,
    records: u64,
    sync: SyncMode,
    /// This shard's part of the running commit generation.
    part: Option<PartPlan>,
    strategy: SyncStrategy,
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
    /// Put the dirty segment's pages on the device; the commit
    /// generation's device flush makes them durable.
    Shared,
}

/// The core thread's loop. Returns when shut down (after a final sync) or
/// when its backend is gone.
pub(crate) fn run_core(shard: Arc<Shard>, mut io: Box<dyn Io>) {
    // The last segment written without a sync after it.
    let mut dirty: Option<Arc<Segment>> = None;
    // 0: running; 1: shutting down, final marker appended.
    let mut final_phase = 0u8;
    let mut lingering = false;
    // The appends pending now were given a linger to gather more.
    let mut collected = false;
    loop {
        let commit = &shard.ctx.commit;
        let mut part = commit.part(shard.id);
        if let Some(p) = part {
            if shard.durable_lpos.load(Ordering::Acquire) >= p.target {
                // Covered already (a sealing or shutdown sync).
                arrive(&shard, io.as_mut(), &p, None);
                part = None;
            }
        }
        let round = {
            let mut g = shard.lock();
            let durable = shard.durable_lpos.load(Ordering::Acquire);
            if g.poison.is_some() {
                // The part, if any, failed with the poison.
                if g.shutdown {
                    drop(g);
                    leave(&shard, io.as_mut());
                    return;
                }
                drop(g);
                std::thread::park();
                continue;
            }
            let written = shard.written_lpos.load(Ordering::Acquire);
            let mut pending = !g.chunks.is_empty() || !g.to_seal.is_empty();
            let shared_ok = commit.shared_ok();
            let want_direct = part.is_some_and(|p| p.sole || !shared_ok)
                || (g.shutdown && (written > durable || pending));
            let want_shared = part.is_some() && !want_direct;
            let want_sync = want_direct || want_shared;
            // Appends alone (no flush waiting, a small backlog): collect for
            // a linger before writing them. A flush that starts meanwhile
            // unparks this thread, and its round then carries the appends
            // and the sync together instead of a write round and a sync
            // round one after the other (a lone writer's insert wakes an
            // idle core just before its flush joins a generation).
            let backlog = g.lpos - written;
            if pending
                && !want_sync
                && !collected
                && !g.shutdown
                && g.to_seal.is_empty()
                && g.space_waiters.is_empty()
                && backlog < WAKE_BYTES
            {
                collected = true;
                drop(g);
                std::thread::park_timeout(LINGER);
                continue;
            }
            // A marker rides along with the next write, or is written on its
            // own just before the core goes idle.
            if !g.shutdown && (pending || want_sync || !lingering) {
                if let Some(pos) = g.marker_due.take() {
                    shard.append_marker(&mut g, pos);
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
                    drop(g);
                    leave(&shard, io.as_mut());
                    return;
                }
                if lingering {
                    drop(g);
                    lingering = false;
                    std::thread::park_timeout(LINGER);
                } else {
                    shard.core_idle.store(true, Ordering::Release);
                    drop(g);
                    // A generation started after `part` was read has woken
                    // (unparked) this thread, so this returns at once.
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
                strategy: shard.ctx.config.sync_strategy,
                part,
                active: g.active.clone(),
                reserved: g.reserved,
            }
        };
        lingering = true;
        collected = false;
        // Fault in the shadow pages writers will use next, here rather than
        // in their critical sections.
        round
            .active
            .prefault_shadow(round.reserved.saturating_add(PREFAULT_AHEAD));
        // Grow the file ahead of the appends (a step at a time), here rather than in
        // a writer's critical section. A failure is left for the append that
        // needs the room, which reports it.
        if round.active.wants_growth(round.reserved) {
            let _ = round
                .active
                .ensure_allocated(&shard.ctx.config.files(), round.active.next_allocation());
        }
        let result = run_round(io.as_mut(), &round, &mut dirty);
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
                if let Some(pos) = synced.claim {
                    if !g.shutdown {
                        g.marker_due = Some(pos);
                    }
                }
                let wake = std::mem::take(&mut g.space_waiters);
                drop(g);
                for w in wake {
                    w.wake();
                }
                if let Some(p) = &round.part {
                    if synced.all {
                        arrive(&shard, io.as_mut(), p, None);
                    } else if let Some(pos) = synced.stable {
                        arrive(
                            &shard,
                            io.as_mut(),
                            p,
                            Some((round.lpos, pos, round.records)),
                        );
                    }
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
    /// A write that is durable when it completes (`RWF_DSYNC`).
    WriteSync(Arc<Segment>, u32, u32),
    Sync(Arc<Segment>, u32),
    SyncRange(Arc<Segment>),
    /// Write zeros over `[from, to)`, beyond any data (`fill_ahead`).
    Zero(Arc<Segment>, u32, u32),
}

/// The zeros written ahead of the log tail: one region.
static ZEROS: [u8; REGION as usize] = [0; REGION as usize];
/// A sync that leaves less than this between the data's end and
/// `zeroed_upto` must be an fdatasync (it moves `zeroed_upto` on).
const ZERO_LOW_WATER: u32 = 512 << 10;
/// How far ahead of the data's end the core fills: as far as a part that
/// stops at the device needs `zeroed_upto` ahead. So a part whose data
/// comes that close both fills and fdatasyncs, and leaves `zeroed_upto`
/// most of a region ahead for the next parts; and a part that fills is
/// never one that stops at the device (its data is then within
/// `ZERO_LOW_WATER` of `filled_upto`, so of `zeroed_upto`), so the zeros
/// never weigh on a `sync_file_range` part. (At 256 KiB, every part in
/// the 256 KiB before each fill had to fdatasync on its own: 12 % fewer
/// records per device flush at 32 and 64 durable writers.)
const FILL_AHEAD: u32 = ZERO_LOW_WATER;

/// The zero writes that go first in a round: for each segment the round
/// writes to (on disk, not being sealed), the file from `filled_upto` up
/// to [`FILL_AHEAD`] past the round's data (within the allocation) is
/// written with zeros before any data lands there, one aligned [`REGION`]
/// at a time, except a region one write of the round covers whole.
///
/// Two ends. Every block below `filled_upto` is written, so the next
/// fdatasync leaves `sync_file_range` that much room (see
/// `Segment::zeroed_upto`). And the page cache holds a region first
/// written whole as one 2 MiB folio, which the file view maps with one TLB
/// entry: scans and point reads that land all over a large log pay far
/// fewer page walks (ARCHITECTURE.md, "Zero-fill ahead"). Only a region
/// the allocation cuts is filled in part: a new file's first (its first
/// allocation is 1 MiB; the file then grows by whole regions), the end of
/// a segment size that is not a multiple of 2 MiB, and the rest of the
/// region a reopened segment's data ends in.
fn fill_ahead(round: &Round, steps: &mut Vec<Step>) {
    for (i, c) in round.chunks.iter().enumerate() {
        let seg = &c.seg;
        // Once per segment: at its last chunk.
        if round.chunks[i + 1..]
            .iter()
            .any(|n| Arc::ptr_eq(&n.seg, seg))
            || seg.storage.fd().is_none()
            || seg.sealed.load(Ordering::Acquire)
        {
            continue;
        }
        let mut filled = seg.filled_upto.load(Ordering::Acquire);
        let limit = seg.allocated().min(seg.cap);
        let want = c.to.saturating_add(FILL_AHEAD).min(limit);
        while filled < want {
            let to = (filled / REGION + 1).saturating_mul(REGION).min(limit);
            let covered = round
                .chunks
                .iter()
                .any(|x| Arc::ptr_eq(&x.seg, seg) && x.from <= filled && x.to >= to);
            if !covered {
                steps.push(Step::Zero(seg.clone(), filled, to));
            }
            filled = to;
        }
        seg.filled_upto.store(filled.max(c.to), Ordering::Release);
    }
}

/// Plans and runs one chain: the writes in log order, a sealing sync after
/// the last write of each sealed segment, and a final sync of the segment
/// left dirty when a waiter asked for durability.
fn run_round(
    io: &mut dyn Io,
    round: &Round,
    dirty: &mut Option<Arc<Segment>>,
) -> std::io::Result<Synced> {
    // Everything written before this round is durable already.
    let clean_before = dirty.is_none();
    let mut steps: Vec<Step> = Vec::with_capacity(round.chunks.len() + round.seals.len() + 1);
    let sealed = |s: &Arc<Segment>| round.seals.iter().any(|x| Arc::ptr_eq(x, s));
    let is_dirty =
        |d: &Option<Arc<Segment>>, s: &Arc<Segment>| d.as_ref().is_some_and(|d| Arc::ptr_eq(d, s));
    fill_ahead(round, &mut steps);
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
            let zeroed_ahead = end <= zeroed && (zeroed - end >= ZERO_LOW_WATER || zeroed >= d.cap);
            if shared && zeroed_ahead {
                // No metadata can change: pages to the device, and the commit
                // generation's one device flush makes them durable.
                stable = Some(pack_pos(d.id, end));
                steps.push(Step::SyncRange(d.clone()));
                // Not durable until the device flush: still dirty.
                *dirty = Some(d);
            } else {
                // An fdatasync: with this round's zeros ahead of the data
                // (`fill_ahead`), it leaves `zeroed_upto` up to a region
                // past the data, and the next parts take the path above.
                steps.push(Step::Sync(d, end));
            }
        }
    }
    // With `SyncStrategy::Dsync`, a lone flusher's round that is one write
    // followed by the sync of the same file, with nothing else in that file
    // waiting for a sync, is one `pwritev2(RWF_DSYNC)`: one system call, and
    // the kernel syncs only that range ("Sync strategies" in ARCHITECTURE.md
    // has the figures).
    if clean_before
        && round.strategy == SyncStrategy::Dsync
        && round.part.is_some_and(|p| p.waiters <= 1)
        && steps.len() == 2
    {
        if let [Step::Write(w, from, to), Step::Sync(s, _)] = &steps[..] {
            if Arc::ptr_eq(w, s) && w.storage.fd().is_some() {
                let one = Step::WriteSync(w.clone(), *from, *to);
                steps = vec![one];
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
            Step::WriteSync(seg, from, to) => Op::WriteDsync {
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
    // Only `RingLinked` puts chains on the ring; every other strategy runs
    // them as system calls ("Sync strategies" in ARCHITECTURE.md).
    let on_ring = round.strategy == SyncStrategy::RingLinked;
    let ran = ops.chunks(MAX_CHAIN).try_for_each(|part| {
        if on_ring {
            io.run(part)
        } else {
            io.run_latency_bound(part)
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
    for s in &steps {
        match s {
            Step::Sync(seg, end) => {
                synced.count += 1;
                synced.claim = Some(pack_pos(seg.id, *end));
                // An fdatasync of the whole file: every block below
                // `filled_upto` was written, data or zeros, by this chain
                // ahead of the sync or by an earlier one, and all of it is
                // durable now.
                let upto = seg.filled_upto.load(Ordering::Acquire).max(*end);
                seg.zeroed_upto.fetch_max(upto, Ordering::AcqRel);
            }
            Step::WriteSync(seg, _, end) => {
                synced.count += 1;
                synced.claim = Some(pack_pos(seg.id, *end));
                // `RWF_DSYNC` makes its own range durable, not the zeros
                // an earlier round wrote ahead of it without a sync.
                seg.zeroed_upto.fetch_max(*end, Ordering::AcqRel);
            }
            _ => {}
        }
    }
    Ok(synced)
}

/// Reports this shard's part of a commit generation; when it was the last
/// and other parts are only on the device, issues the generation's device
/// flush (an fdatasync of the active segment: its own data is on the device
/// already, so this is the device cache flush that covers every part).
fn arrive(shard: &Shard, io: &mut dyn Io, p: &PartPlan, stable: Option<(u64, u64, u64)>) {
    let commit = &shard.ctx.commit;
    if commit.arrive(p.gen, shard.id, stable) != Arrival::FlushDevice {
        return;
    }
    let active = shard.lock().active.clone();
    match io.run_latency_bound(&[Op::Sync {
        target: &active.storage,
    }]) {
        Ok(()) => {
            shard.device_flushes.fetch_add(1, Ordering::Relaxed);
            commit.flushed(p.gen, true);
        }
        Err(e) => {
            // Never retried: nothing this flush covered may be called
            // durable, in any shard.
            commit.poison_all(&e);
            commit.flushed(p.gen, false);
        }
    }
}

/// At exit: a part still pending is durable (the final sync covered it)
/// or failed.
fn leave(shard: &Shard, io: &mut dyn Io) {
    if let Some(p) = shard.ctx.commit.part(shard.id) {
        if shard.durable_lpos.load(Ordering::Acquire) >= p.target {
            arrive(shard, io, &p, None);
        } else {
            shard.ctx.commit.part_failed(shard.id);
        }
    }
}

/// Appends the marker queued in `marker_due` (the final one at shutdown).
fn final_phase_marker(shard: &Shard) {
    let mut g = shard.lock();
    if let Some(pos) = g.marker_due.take() {
        shard.append_marker(&mut g, pos);
    }
}
