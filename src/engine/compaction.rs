//! Compaction: the live records of sealed segments with enough dead bytes
//! are moved to the log tail, and the segments retired.
//!
//! A record moves under its shard's lock, one record at a time, and only if
//! the index still points at it: its bytes are copied as they are (same
//! sequence number, flags and checksum) to the tail, and the index entry is
//! switched from the old location to the new one with a compare-and-swap,
//! so a write that lands meanwhile always wins. Since a record moves only
//! while it is the newest of its key, every later record of that key is
//! newer, and "last in the log wins" (recovery's rule) still picks the
//! record with the highest sequence number.
//!
//! A tombstone is kept (moved like a record) while its key is absent and an
//! older segment of the shard survives, which may hold an older value of
//! the key; with no older segment left it is dropped. A namespace clear is
//! never moved (it would clear what was written after it): a segment holding
//! one is retired only once no older segment survives.
//!
//! Crash safety, in order:
//! 1. A batch floor is stored first: every batch with a lower sequence
//!    number is whole on disk (all shards flushed), so recovery applies such
//!    batches without counting their frames, which compaction drops or
//!    copies.
//! 2. A segment's moved records are made durable before the manifest that
//!    no longer lists the segment is stored; a crash in between leaves both
//!    copies, and the later one wins.
//! 3. The retired segment leaves the segment table after every index entry
//!    moved off it; its file is removed then, or when the last iterator,
//!    stream or `ValueRef` holding it lets go (an unlisted file left by a crash is an
//!    orphan the next open removes).
//! 4. A checkpoint at the end writes hint files for the segments that
//!    received the moved records, so the next open loads them.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::shard::{Inner, Shard};
use super::{block_on, State};
use crate::error::{Error, Result};
use crate::log::frame::{self, pack_pos, FrameSpec, Kind, SEGMENT_HEADER_LEN};
use crate::log::segment::Segment;
use crate::log::segtable::{account, frame_has_key};

/// What one compaction run did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Compacted {
    /// Segments retired.
    pub segments: u64,
    /// Bytes of segment files retired.
    pub bytes_reclaimed: u64,
    /// Bytes of records moved to the tail.
    pub bytes_moved: u64,
}

impl State {
    /// Compacts every sealed segment whose dead fraction is at least
    /// `threshold`. With `seal_active`, each shard's active segment is
    /// sealed first if it passes the threshold too.
    pub(crate) fn compact_with(&self, threshold: f64, seal_active: bool) -> Result<Compacted> {
        self.ctx.writable()?;
        // An explicit run does not wait for a background one to finish at
        // its slower pace: the background run yields after its current
        // record, and this one takes over.
        let _one_at_a_time = if seal_active {
            self.ctx.compaction_wanted.fetch_add(1, Ordering::AcqRel);
            let g = self.ctx.compaction.lock();
            self.ctx.compaction_wanted.fetch_sub(1, Ordering::AcqRel);
            g
        } else {
            self.ctx.compaction.lock()
        };
        // Expired records first become tombstoned (dead), so that the
        // segments holding them count as what they are: reclaimable.
        block_on(self.sweep_all_expired())?;
        if seal_active {
            for s in &self.shards {
                s.seal_active(threshold)?;
            }
        }
        let mut plan: Vec<(usize, Vec<Arc<Segment>>)> = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            let v = s.compaction_victims(threshold);
            if !v.is_empty() {
                plan.push((i, v));
            }
        }
        let mut done = Compacted::default();
        if plan.is_empty() {
            return Ok(done);
        }
        self.raise_batch_floor()?;
        let total: u64 = plan
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|v| v.data_end.load(Ordering::Acquire) as u64)
            .sum();
        let tracking = self
            .ctx
            .progress
            .begin(super::progress::MaintenanceTask::Compact, total);
        let tracking = &tracking;
        let shard_run = |i: usize, victims: Vec<Arc<Segment>>| -> Result<Compacted> {
            let mut d = Compacted::default();
            for v in victims {
                self.compact_segment(&self.shards[i], &v, seal_active, &mut d, tracking)?;
            }
            Ok(d)
        };
        // An explicit compaction runs the shards side by side (shards share
        // nothing); the background one takes them in turn, to stay light.
        let results: Vec<Result<Compacted>> = if seal_active && plan.len() > 1 {
            std::thread::scope(|sc| {
                let handles: Vec<_> = plan
                    .into_iter()
                    .map(|(i, v)| sc.spawn(move || shard_run(i, v)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Io(std::io::Error::other(
                                "compaction thread panicked",
                            )))
                        })
                    })
                    .collect()
            })
        } else {
            plan.into_iter().map(|(i, v)| shard_run(i, v)).collect()
        };
        let mut first_err = None;
        for r in results {
            match r {
                Ok(d) => {
                    done.segments += d.segments;
                    done.bytes_reclaimed += d.bytes_reclaimed;
                    done.bytes_moved += d.bytes_moved;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            if done.segments > 0 {
                self.ctx.compactions.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        if done.segments > 0 {
            self.ctx.compactions.fetch_add(1, Ordering::Relaxed);
            // Hint files for the segments the records moved to.
            block_on(self.checkpoint())?;
            // Retired segments' old tables wait in epoch garbage (also that
            // of the compaction threads, handed over when they exit): push
            // it through, so their mappings go soon.
            for _ in 0..4 {
                crossbeam_epoch::pin().flush();
            }
        }
        Ok(done)
    }

    /// Stores a batch floor: every batch with a lower sequence number has
    /// all its frames durable (the number is read under every shard lock,
    /// then every shard is flushed).
    fn raise_batch_floor(&self) -> Result<()> {
        let floor = {
            let _guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
            self.ctx.next_seq_peek()
        };
        block_on(self.flush())?;
        if let (Some(m), Some(dir)) = (&self.ctx.manifest, &self.ctx.config.dir) {
            let mut m = m.lock();
            if floor > m.batch_floor {
                let before = m.batch_floor;
                m.batch_floor = floor;
                if let Err(e) = m.store(&self.ctx.config.files(), dir) {
                    m.batch_floor = before;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Moves the live records (and needed tombstones) of `v` to the tail,
    /// makes them durable, and retires `v`.
    fn compact_segment(
        &self,
        shard: &Arc<Shard>,
        v: &Arc<Segment>,
        explicit: bool,
        done: &mut Compacted,
        tracking: &super::progress::Tracking<'_>,
    ) -> Result<()> {
        let seed = self.ctx.hash_seed;
        let data_end = v.data_end.load(Ordering::Acquire) as usize;
        if (v.written.load(Ordering::Acquire) as usize) < data_end {
            // Not all in the file yet (the flush before the moves writes
            // everything sealed so far, so this is a segment sealed since):
            // the next run takes it.
            return Ok(());
        }
        let bytes = v.file_bytes();
        let bytes = &bytes[..data_end.min(bytes.len())];
        let path = || v.path.clone().unwrap_or_default();
        let mut moved = 0u64;
        // The background compactor moves one record per hold of the shard
        // lock; an explicit compaction a few (a writer then waits at most
        // for a 4 KiB copy, or one larger record's).
        let mut batch = Batch {
            moves: Vec::new(),
            bytes: 0,
            max_records: if explicit { MOVE_RECORDS } else { 1 },
        };
        let mut off = SEGMENT_HEADER_LEN;
        let mut reported = 0;
        while off < bytes.len() {
            let yielding = !explicit && self.ctx.compaction_wanted.load(Ordering::Acquire) > 0;
            if yielding || self.ctx.closing.load(Ordering::Acquire) {
                // Closing, or an explicit compaction waits: what moved so
                // far is fine where it is; the segment stays (for the next
                // run).
                return Ok(());
            }
            // Sealed segments are immutable; a frame that does not verify
            // is damage, never moved.
            let f = frame::decode(&bytes[off..]).map_err(|_| {
                Error::corrupted(
                    path(),
                    off as u64,
                    "a record compaction was to move is damaged",
                )
            })?;
            let raw = &bytes[off..off + f.len];
            let loc = pack_pos(v.id, off as u32);
            let at = off as u32;
            off += f.len;
            let h = crate::index::frame_hash(seed, &f);
            match f.kind {
                Kind::Put => {
                    // Checked again under the lock; this skips the dead.
                    if !shard.points_at(f.namespace, h, loc) {
                        // Dead: dropped with the segment.
                    } else if super::ttl::is_expired(f.expires_at) {
                        // Expired: dropped, with a tombstone unless nothing
                        // older can be under it.
                        batch.push(Move::Expired {
                            h,
                            ns: f.namespace,
                            loc,
                            key: self.to_move(v, at, &f, raw)?.0,
                            tombstone: !shard.is_oldest(v.id),
                        });
                    } else {
                        let (key, copy) = self.to_move(v, at, &f, raw)?;
                        batch.push(Move::Record {
                            h,
                            ns: f.namespace,
                            loc,
                            expires_at: f.expires_at,
                            key,
                            copy,
                        });
                    }
                }
                Kind::Remove => {
                    // A dropped namespace's tombstones are dropped with it.
                    if !shard.is_oldest(v.id) && self.ctx.namespace_live(f.namespace) {
                        let (key, copy) = self.to_move(v, at, &f, raw)?;
                        batch.push(Move::Tombstone {
                            h,
                            ns: f.namespace,
                            key,
                            copy,
                        });
                    }
                }
                // A clear cannot move: the segment waits until it is the
                // oldest of its shard.
                Kind::Clear if !shard.is_oldest(v.id) && self.ctx.namespace_live(f.namespace) => {
                    return Ok(())
                }
                Kind::Clear | Kind::Sync => {}
            }
            if batch.full() || off >= bytes.len() {
                moved += batch.apply(shard)?;
                tracking.add((off - reported) as u64);
                reported = off;
            }
        }
        moved += batch.apply(shard)?;
        tracking.add(data_end.saturating_sub(reported) as u64);
        // Everything appended so far made durable, in every shard: the
        // moved records, and every write that made a record of `v` dead. A
        // record dropped with `v` may be the last durable copy of its key's
        // state until the write that replaced it is durable too, and, when
        // that write belongs to a batch, until the whole batch is (recovery
        // drops an incomplete one). The kill -9 test found both: an
        // acknowledged record lost with its segment while the overwrite that
        // had made it dead was still in the tail buffer, or was part of a
        // batch whose frames in the other shard were not yet durable.
        let targets: Vec<(usize, u64)> = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.lock().lpos))
            .collect();
        block_on(self.await_durable(&targets))?;
        let file = v.file_len();
        shard.retire_segment(v)?;
        done.segments += 1;
        done.bytes_reclaimed += file;
        done.bytes_moved += moved;
        self.ctx.bytes_reclaimed.fetch_add(file, Ordering::Relaxed);
        self.ctx.bytes_moved.fetch_add(moved, Ordering::Relaxed);
        Ok(())
    }
}

/// A record or tombstone to move to the tail.
enum Move<'a> {
    /// A put, moved if the index still points at `loc`.
    Record {
        h: u64,
        ns: u32,
        loc: u64,
        expires_at: Option<u64>,
        /// Its plaintext key (the ordered index of range scans follows the
        /// move by it).
        key: Cow<'a, [u8]>,
        copy: Copy<'a>,
    },
    /// An expired put, dropped (and its key's index entry with it) if the
    /// index still points at `loc`; a tombstone takes its place in the log
    /// when an older record of the key may lie in an older segment.
    Expired {
        h: u64,
        ns: u32,
        loc: u64,
        key: Cow<'a, [u8]>,
        tombstone: bool,
    },
    /// A tombstone, kept while its key has no live record.
    Tombstone {
        h: u64,
        ns: u32,
        key: Cow<'a, [u8]>,
        copy: Copy<'a>,
    },
}

/// How a frame reaches its new place: copied as it is (same sequence
/// number, flags and checksum), or, in an encrypted database, decrypted
/// and sealed again, since its data key and nonce belong to its place.
enum Copy<'a> {
    Raw(&'a [u8]),
    Reseal {
        kind: Kind,
        seq: u64,
        batch_count: u32,
        expires_at: Option<u64>,
        ns: u32,
        key: Vec<u8>,
        value: Vec<u8>,
        len: usize,
    },
}

impl Copy<'_> {
    fn len(&self) -> usize {
        match self {
            Copy::Raw(raw) => raw.len(),
            Copy::Reseal { len, .. } => *len,
        }
    }

    /// Appends the frame at the shard's tail; returns its location.
    fn append(&self, shard: &Shard, g: &mut Inner) -> Result<u64> {
        match self {
            Copy::Raw(raw) => shard.append_raw(g, raw),
            Copy::Reseal {
                kind,
                seq,
                batch_count,
                expires_at,
                ns,
                key,
                value,
                ..
            } => {
                let spec = FrameSpec {
                    kind: *kind,
                    seq: *seq,
                    namespace: *ns,
                    batch_count: *batch_count,
                    expires_at: *expires_at,
                    key,
                    value,
                };
                shard.append(g, &spec, false)
            }
        }
    }
}

impl State {
    /// The plaintext key of frame `f` (at `off` of `v`) and how to move it.
    fn to_move<'a>(
        &self,
        v: &Segment,
        off: u32,
        f: &frame::Frame<'a>,
        raw: &'a [u8],
    ) -> Result<(Cow<'a, [u8]>, Copy<'a>)> {
        let damaged = |why| Error::corrupted(v.path.clone().unwrap_or_default(), off as u64, why);
        if f.sealed.is_none() {
            if self.ctx.crypto.is_some() {
                return Err(damaged("a plaintext record in an encrypted database"));
            }
            return Ok((Cow::Borrowed(f.key), Copy::Raw(raw)));
        }
        let c = self
            .ctx
            .crypto
            .as_ref()
            .ok_or_else(|| damaged("an encrypted record in a database opened without a key"))?;
        let mut buf = Vec::new();
        let p = c.open_frame(v.place(), off, f, &mut buf).map_err(damaged)?;
        Ok((
            Cow::Owned(p.key.to_vec()),
            Copy::Reseal {
                kind: p.kind,
                seq: p.seq,
                batch_count: p.batch_count,
                expires_at: p.expires_at,
                ns: p.namespace,
                key: p.key.to_vec(),
                value: p.value.to_vec(),
                len: f.len,
            },
        ))
    }
}

/// Most bytes of records an explicit compaction moves under one hold of a
/// shard lock (more only for a single larger record).
const MOVE_BYTES: usize = 4 << 10;
/// Most records an explicit compaction moves under one hold of a shard lock.
const MOVE_RECORDS: usize = 32;

/// Moves gathered for one hold of the shard lock.
struct Batch<'a> {
    moves: Vec<Move<'a>>,
    bytes: usize,
    max_records: usize,
}

impl<'a> Batch<'a> {
    fn push(&mut self, m: Move<'a>) {
        self.bytes += match &m {
            Move::Record { copy, .. } | Move::Tombstone { copy, .. } => copy.len(),
            Move::Expired { key, .. } => frame::encoded_len(key.len(), 0, false) + frame::SEAL_LEN,
        };
        self.moves.push(m);
    }

    fn full(&self) -> bool {
        self.bytes >= MOVE_BYTES || self.moves.len() >= self.max_records
    }

    /// Takes the shard lock once and appends each move that still applies:
    /// a record the index still points at (then the index entry follows it,
    /// by compare-and-swap), a tombstone whose key has no live record.
    /// Returns the bytes moved.
    fn apply(&mut self, shard: &Shard) -> Result<u64> {
        if self.moves.is_empty() {
            return Ok(0);
        }
        let mut g = block_on(shard.lock_for_append(self.bytes))?;
        let guard = crossbeam_epoch::pin();
        let mut moved = 0u64;
        for m in self.moves.drain(..) {
            match m {
                Move::Record {
                    h,
                    ns,
                    loc,
                    expires_at,
                    key,
                    copy,
                } => {
                    if !shard.points_at(ns, h, loc) {
                        continue;
                    }
                    let new = copy.append(shard, &mut g)?;
                    let moved_entry = shard
                        .indexes
                        .get(ns, &guard)
                        .is_some_and(|ix| ix.replace(h, loc, new));
                    if moved_entry {
                        account(
                            shard.segments(&guard),
                            Some((new, copy.len() as u32)),
                            Some(loc),
                        );
                        if let Some(t) = expires_at {
                            g.expiring.moved(t, loc, new);
                        }
                        if let Some(o) = &mut g.ordered {
                            o.relocate(ns, &key, new);
                        }
                    }
                    moved += copy.len() as u64;
                }
                Move::Expired {
                    h,
                    ns,
                    loc,
                    key,
                    tombstone,
                } => {
                    let Some(ix) = shard.indexes.get(ns, &guard) else {
                        continue;
                    };
                    if !ix.points_at(h, loc) {
                        continue;
                    }
                    if tombstone {
                        let spec = FrameSpec {
                            kind: Kind::Remove,
                            seq: shard.ctx.next_seq(),
                            namespace: ns,
                            batch_count: 0,
                            expires_at: None,
                            key: &key,
                            value: &[],
                        };
                        shard.append(&mut g, &spec, false)?;
                        moved += shard.ctx.frame_len(key.len(), 0, false) as u64;
                    }
                    let segs = shard.segments(&guard);
                    g.expiring.forget(segs, loc);
                    let gone = ix.remove(h, |l| l == loc);
                    if let (Some(o), Some(_)) = (&mut g.ordered, gone) {
                        o.remove(ns, &key);
                    }
                    account(segs, None, gone);
                }
                Move::Tombstone { h, ns, key, copy } => {
                    let live = shard.indexes.get(ns, &guard).is_some_and(|ix| {
                        ix.find_map(h, &guard, |loc| {
                            frame_has_key(shard.segments(&guard), loc, ns, &key, shard.ctx.crypto())
                                .then_some(())
                        })
                        .is_some()
                    });
                    if !live {
                        copy.append(shard, &mut g)?;
                        moved += copy.len() as u64;
                    }
                }
            }
        }
        self.bytes = 0;
        shard.note_expiring(&g);
        shard.after_append(&g);
        Ok(moved)
    }
}

/// How often the background compactor looks for segments to compact.
const COMPACTOR_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// The background compactor: a thread that compacts, with the configured
/// threshold, whenever some sealed segment has passed it.
pub(crate) struct Compactor {
    stop: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Compactor {
    pub(crate) fn start(state: Arc<State>) -> std::io::Result<Compactor> {
        let stop = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("emdb-compactor".into())
            .spawn(move || run_compactor(&state, &stop2))?;
        Ok(Compactor {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (after its current record, at most a segment's
    /// moves) and waits for it.
    pub(crate) fn stop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_compactor(state: &State, stop: &(parking_lot::Mutex<bool>, parking_lot::Condvar)) {
    let threshold = state.ctx.config.compaction_threshold;
    let mut backoff = COMPACTOR_PERIOD;
    loop {
        {
            let mut stopped = stop.0.lock();
            if !*stopped {
                stop.1.wait_for(&mut stopped, backoff);
            }
            if *stopped {
                return;
            }
        }
        if state.shards.iter().any(|s| s.is_poisoned()) {
            continue;
        }
        let due = state
            .shards
            .iter()
            .any(|s| !s.compaction_victims(threshold).is_empty());
        if !due {
            backoff = COMPACTOR_PERIOD;
            continue;
        }
        // A failure (a full disk, say) is retried later, less often; the
        // writes that need the space report it themselves.
        backoff = match state.compact_with(threshold, false) {
            Ok(_) => COMPACTOR_PERIOD,
            Err(_) => (backoff * 2).min(std::time::Duration::from_secs(5)),
        };
    }
}
