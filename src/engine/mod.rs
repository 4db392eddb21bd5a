//! The engine: routes keys to shards, starts and stops the shard cores, and
//! implements every operation as a future of the core (reads are plain
//! functions, since they never cross threads).

mod block_on;
pub(crate) mod shard;

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crossbeam_epoch as epoch;
use parking_lot::Mutex;

pub(crate) use block_on::block_on;
use shard::{SegTable, Shard};

use crate::builder::{Config, FlushPolicy, IoBackend};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::lock::LockFile;
use crate::log::frame::{self, pack_pos, unpack_pos, FrameSpec, Kind, SegmentHeader};
use crate::log::hint;
use crate::log::manifest::{self, Manifest, ShardEntry};
use crate::log::segment::{self, Segment};
use crate::recovery;
use crate::stats::EmdbStats;
use crate::value::ValueRef;

/// Namespace id of the default namespace.
pub(crate) const DEFAULT_NS: u32 = 0;
/// Lookups that met a slot pointing at a segment no longer in the table
/// (retired after the slot moved on) look again this many times.
const MAX_LOOKUP_RETRIES: u32 = 16;

/// State shared by the engine and every shard.
pub(crate) struct Ctx {
    pub config: Config,
    pub shard_count: usize,
    pub hash_seed: u64,
    pub backend: IoBackend,
    seq: AtomicU64,
    checkpoint_gen: AtomicU64,
    /// Disk databases only.
    manifest: Option<Mutex<Manifest>>,
    /// The device flusher (disk databases only): requests, its thread, stop.
    flush_requested: AtomicU64,
    flusher: std::sync::OnceLock<std::thread::Thread>,
    flusher_stop: std::sync::atomic::AtomicBool,
    /// Device flushes issued by the flusher.
    flusher_flushes: AtomicU64,
    /// Flush calls waiting right now (a sign of concurrency).
    flushes_in_flight: std::sync::atomic::AtomicUsize,
}

/// The shard of a key hash among `shards` (see `Ctx::shard_of`).
#[inline]
pub(crate) fn shard_for(h: u64, shards: usize) -> usize {
    (((h >> 32) * shards as u64) >> 32) as usize
}

impl Ctx {
    /// Adds a new segment to the manifest, durably, before any write to it
    /// can be acknowledged. On failure the manifest in memory is as before.
    pub(crate) fn register_segment(&self, shard: usize, id: u32) -> io::Result<()> {
        let (Some(m), Some(dir)) = (&self.manifest, &self.config.dir) else {
            return Ok(());
        };
        crate::io::fault_point(&self.config, crate::io::FaultPoint::Metadata)?;
        let mut m = m.lock();
        let list = &mut m.shards[shard].segments;
        if list.contains(&id) {
            return m.store(&self.config.files(), dir);
        }
        list.push(id);
        list.sort_unstable();
        let stored = m.store(&self.config.files(), dir);
        if stored.is_err() {
            m.shards[shard].segments.retain(|&s| s != id);
        }
        stored
    }

    #[inline]
    pub(crate) fn hash(&self, ns: u32, key: &[u8]) -> u64 {
        crate::index::key_hash(self.hash_seed, ns, key)
    }

    /// The shard of a key hash: the high 32 bits scaled onto the shard
    /// count (multiply-shift, no division; the index uses the low bits).
    /// Part of the on-disk contract: a key must always map to the same shard.
    #[inline]
    pub(crate) fn shard_of(&self, h: u64) -> usize {
        shard_for(h, self.shard_count)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn new(
        config: &Config,
        shard_count: usize,
        hash_seed: u64,
        backend: IoBackend,
        seq: u64,
        gen: u64,
        manifest: Option<Manifest>,
    ) -> Ctx {
        Ctx {
            config: config.clone(),
            shard_count,
            hash_seed,
            backend,
            seq: AtomicU64::new(seq),
            checkpoint_gen: AtomicU64::new(gen),
            manifest: manifest.map(Mutex::new),
            flush_requested: AtomicU64::new(0),
            flusher: std::sync::OnceLock::new(),
            flusher_stop: std::sync::atomic::AtomicBool::new(false),
            flusher_flushes: AtomicU64::new(0),
            flushes_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Asks the device flusher for one more device flush.
    pub(crate) fn request_device_flush(&self) {
        self.flush_requested.fetch_add(1, Ordering::AcqRel);
        if let Some(t) = self.flusher.get() {
            t.unpark();
        }
    }

    fn has_flusher(&self) -> bool {
        self.flusher.get().is_some()
    }
}

pub(crate) struct Engine {
    pub ctx: Arc<Ctx>,
    pub shards: Vec<Arc<Shard>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    path: PathBuf,
    _lock: Option<LockFile>,
}

/// Does the frame at `loc` (in `segs`) hold `key` of namespace `ns`?
#[inline]
pub(crate) fn frame_has_key(segs: &SegTable, loc: u64, ns: u32, key: &[u8]) -> bool {
    let (sid, off) = unpack_pos(loc);
    let Some(seg) = segs.get(sid) else {
        return false;
    };
    seg.with_frame(off, |b| {
        frame::decode_unchecked(b)
            .is_ok_and(|f| f.kind == Kind::Put && f.namespace == ns && f.key == key)
    })
    .unwrap_or(false)
}

impl Engine {
    pub(crate) fn open(config: Config) -> Result<Engine> {
        let backend = match config.backend {
            IoBackend::Memory => IoBackend::Memory,
            requested => crate::io::resolve(requested, config.sqpoll_idle_ms).map_err(|e| {
                if requested == IoBackend::Uring {
                    Error::Io(io::Error::new(
                        e.kind(),
                        format!("io_uring was requested but the kernel refused it: {e}"),
                    ))
                } else {
                    Error::Io(e)
                }
            })?,
        };
        let (lock, path) = match &config.dir {
            Some(dir) => (Some(prepare_dir(&config.files(), dir)?), dir.clone()),
            None => (None, PathBuf::new()),
        };
        let (ctx, parts) = match &config.dir {
            None => {
                let ctx = Arc::new(Ctx::new(
                    &config,
                    config.shards,
                    random_seed(),
                    backend,
                    1,
                    0,
                    None,
                ));
                let mut parts = Vec::new();
                for s in 0..ctx.shard_count {
                    let header = SegmentHeader {
                        shard: s as u32,
                        shard_count: ctx.shard_count as u32,
                        segment: 1,
                        hash_seed: ctx.hash_seed,
                    };
                    let seg = Arc::new(Segment::create(None, header, &ctx.config)?);
                    parts.push(recovery::RecoveredShard {
                        segs: vec![seg],
                        append_at: frame::SEGMENT_HEADER_LEN as u32,
                        index: Index::new(),
                    });
                }
                (ctx, parts)
            }
            Some(dir) => open_dir(dir, &config, backend)?,
        };
        let shards: Vec<Arc<Shard>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| Arc::new(Shard::new(ctx.clone(), i, p.segs, p.append_at, p.index)))
            .collect();
        for s in &shards {
            s.set_self();
        }
        let mut threads = start_cores(&shards, &config, backend)?;
        if let Some(dir) = config.dir.as_ref().filter(|d| overwrites_in_place(d)) {
            match start_flusher(&ctx, &shards, dir, backend) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    for s in &shards {
                        s.request_shutdown();
                    }
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Engine {
            ctx,
            shards,
            threads: Mutex::new(threads),
            path,
            _lock: lock,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidInput("keys must not be empty"));
        }
        if key.len() > self.ctx.config.max_key_len {
            return Err(Error::LimitExceeded {
                what: "key length",
                len: key.len(),
                max: self.ctx.config.max_key_len,
            });
        }
        Ok(())
    }

    fn check_kv(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        if value.len() > self.ctx.config.max_value_len {
            return Err(Error::LimitExceeded {
                what: "value length",
                len: value.len(),
                max: self.ctx.config.max_value_len,
            });
        }
        Ok(())
    }

    fn write_through(&self) -> bool {
        self.ctx.config.flush_policy == FlushPolicy::WriteThrough
    }

    /// Finds the live record of `key` and maps it with `f`, which may run
    /// twice (see `Segment::with_frame`). With `verify`, a frame that no
    /// one verified since open (it came from a hint file) has its CRC
    /// checked, and a mismatch is `Error::Corrupted`: a value is never
    /// returned from damaged bytes. Frames replayed at open or written by
    /// this process were verified already.
    #[inline]
    fn lookup<R>(
        &self,
        ns: u32,
        key: &[u8],
        verify: bool,
        f: impl Fn(&Arc<Segment>, u32, &frame::Frame<'_>) -> R,
    ) -> Result<Option<R>> {
        let h = self.ctx.hash(ns, key);
        let shard = &self.shards[self.ctx.shard_of(h)];
        let guard = epoch::pin();
        let mut tries = 0;
        loop {
            let mut missing = false;
            let found = shard.index.find_map(h, &guard, |loc| {
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
                    let fr = frame::decode_unchecked(b).ok()?;
                    if fr.kind != Kind::Put || fr.namespace != ns || fr.key != key {
                        return None;
                    }
                    if verify && off < seg.verify_below.load(Ordering::Relaxed) && !frame::crc_ok(b)
                    {
                        return Some(Err(Error::corrupted(
                            seg.path.clone().unwrap_or_default(),
                            off as u64,
                            "record checksum mismatch",
                        )));
                    }
                    Some(Ok(f(seg, off, &fr)))
                })
                .flatten()
            });
            if found.is_none() && missing && tries < MAX_LOOKUP_RETRIES {
                tries += 1;
                continue;
            }
            return found.transpose();
        }
    }

    pub(crate) fn get(&self, ns: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.lookup(ns, key, true, |_, _, fr| fr.value.to_vec())
    }

    pub(crate) fn get_ref(&self, ns: u32, key: &[u8]) -> Result<Option<ValueRef<'static>>> {
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

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.index.len()).sum()
    }

    pub(crate) async fn insert(&self, ns: u32, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_kv(key, value)?;
        let h = self.ctx.hash(ns, key);
        let shard = &self.shards[self.ctx.shard_of(h)];
        let len = frame::encoded_len(key.len(), value.len(), false);
        let target = {
            let mut g = shard.lock_for_append(len).await?;
            let spec = FrameSpec {
                kind: Kind::Put,
                seq: self.ctx.next_seq(),
                namespace: ns,
                batch_count: 0,
                expires_at: None,
                key,
                value,
            };
            let loc = shard.append(&mut g, &spec, true)?;
            let guard = epoch::pin();
            let segs = shard.segments(&guard);
            shard
                .index
                .upsert(h, loc, |old| frame_has_key(segs, old, ns, key));
            shard.after_append(&g);
            g.user_lpos
        };
        if self.write_through() {
            shard.durable(target, false).await?;
        }
        Ok(())
    }

    pub(crate) async fn remove(&self, ns: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        let h = self.ctx.hash(ns, key);
        let shard = &self.shards[self.ctx.shard_of(h)];
        let len = frame::encoded_len(key.len(), 0, false);
        let (old, target) = {
            let mut g = shard.lock_for_append(len).await?;
            // Under the lock no other writer can change this key.
            // A damaged prior value is reported, and the key left in place.
            let Some(old) = self.lookup(ns, key, true, |_, _, fr| fr.value.to_vec())? else {
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
            let guard = epoch::pin();
            let segs = shard.segments(&guard);
            shard
                .index
                .remove(h, |loc| frame_has_key(segs, loc, ns, key));
            shard.after_append(&g);
            (old, g.user_lpos)
        };
        if self.write_through() {
            shard.durable(target, false).await?;
        }
        Ok(Some(old))
    }

    /// One atomic batch: every frame carries the batch's single sequence
    /// number and its record count, and recovery applies it only whole.
    pub(crate) async fn insert_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        ns: u32,
        items: &[(K, V)],
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let cfg = &self.ctx.config;
        if items.len() > cfg.max_batch_records {
            return Err(Error::LimitExceeded {
                what: "batch record count",
                len: items.len(),
                max: cfg.max_batch_records,
            });
        }
        let n = self.shards.len();
        let mut per_shard = vec![0usize; n];
        let mut routed = Vec::with_capacity(items.len());
        let mut total = 0usize;
        for (k, v) in items {
            let (k, v) = (k.as_ref(), v.as_ref());
            self.check_kv(k, v)?;
            let h = self.ctx.hash(ns, k);
            let s = self.ctx.shard_of(h);
            let len = frame::encoded_len(k.len(), v.len(), false);
            per_shard[s] += len;
            total += len;
            routed.push((h, s));
        }
        if total > cfg.max_batch_bytes {
            return Err(Error::LimitExceeded {
                what: "batch size in bytes",
                len: total,
                max: cfg.max_batch_bytes,
            });
        }
        // Wait for room in every involved shard without holding any lock;
        // the backlog may then overshoot by at most one batch.
        for (s, bytes) in per_shard.iter().enumerate() {
            if *bytes > 0 {
                drop(self.shards[s].lock_for_append(*bytes).await?);
            }
        }
        let targets = {
            let mut guards: Vec<_> = (0..n)
                .map(|s| (per_shard[s] > 0).then(|| self.shards[s].lock()))
                .collect();
            for (s, g) in guards.iter().enumerate() {
                if let Some(g) = g {
                    self.shards[s].check_poison(g)?;
                }
            }
            let seq = self.ctx.next_seq();
            // Append every frame first; the index changes only once all are
            // appended, so a failure part-way (say, a segment that cannot be
            // created) leaves nothing visible, and the frames already
            // appended form an incomplete batch that recovery ignores.
            let mut locs = Vec::with_capacity(items.len());
            for ((k, v), (_, s)) in items.iter().zip(&routed) {
                let Some(g) = guards[*s].as_mut() else {
                    continue;
                };
                let spec = FrameSpec {
                    kind: Kind::Put,
                    seq,
                    namespace: ns,
                    batch_count: items.len() as u32,
                    expires_at: None,
                    key: k.as_ref(),
                    value: v.as_ref(),
                };
                locs.push(self.shards[*s].append(g, &spec, true)?);
            }
            let guard = epoch::pin();
            for (((k, _), (h, s)), loc) in items.iter().zip(&routed).zip(locs) {
                let k = k.as_ref();
                let shard = &self.shards[*s];
                let segs = shard.segments(&guard);
                shard
                    .index
                    .upsert(*h, loc, |old| frame_has_key(segs, old, ns, k));
            }
            let mut targets = Vec::new();
            for (s, g) in guards.iter().enumerate() {
                if let Some(g) = g {
                    self.shards[s].after_append(g);
                    targets.push((s, g.user_lpos));
                }
            }
            targets
        };
        if self.write_through() {
            self.await_durable(&targets).await?;
        }
        Ok(())
    }

    /// Removes every record of namespace `ns`: one clear frame per shard,
    /// written as one batch.
    pub(crate) async fn clear(&self, ns: u32) -> Result<()> {
        let targets = {
            let mut guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
            for (s, g) in guards.iter().enumerate() {
                self.shards[s].check_poison(g)?;
            }
            let seq = self.ctx.next_seq();
            let mut targets = Vec::new();
            for (s, g) in guards.iter_mut().enumerate() {
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
                self.shards[s].append(g, &spec, true)?;
            }
            for (s, g) in guards.iter().enumerate() {
                self.shards[s].index.clear();
                self.shards[s].after_append(g);
                targets.push((s, g.user_lpos));
            }
            targets
        };
        if self.write_through() {
            self.await_durable(&targets).await?;
        }
        Ok(())
    }

    /// Returns once every write this database accepted before the call is
    /// durable, in every shard.
    pub(crate) async fn flush(&self) -> Result<()> {
        let mut targets = Vec::with_capacity(self.shards.len());
        for (i, s) in self.shards.iter().enumerate() {
            let g = s.lock();
            // A failed write or sync leaves records whose durability is
            // unknown: no later flush may report success, even when the
            // shard has nothing newer to write.
            s.check_flushable(&g)?;
            targets.push((i, g.user_lpos));
        }
        self.await_durable(&targets).await
    }

    /// Waits until each listed shard is durable up to its target. When two
    /// or more shards need a sync, they only put their data on the device
    /// and one device flush serves them all.
    async fn await_durable(&self, targets: &[(usize, u64)]) -> Result<()> {
        let needing: Vec<(usize, u64)> = targets
            .iter()
            .copied()
            .filter(|(s, t)| self.shards[*s].durable_lpos() < *t)
            .collect();
        if needing.is_empty() {
            return Ok(());
        }
        // Concurrent flushers share the device flush even when they need a
        // single shard; a lone flush of one shard takes the direct path,
        // which has the lowest latency.
        let others = self.ctx.flushes_in_flight.fetch_add(1, Ordering::AcqRel);
        let shared =
            self.ctx.has_flusher() && self.shards.len() > 1 && (needing.len() >= 2 || others > 0);
        let futs = needing
            .iter()
            .map(|(s, t)| self.shards[*s].durable(*t, shared))
            .collect();
        let r = JoinAll {
            futs,
            done: Vec::new(),
        }
        .await;
        self.ctx.flushes_in_flight.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Writes hint files for every segment up to the current tail of each
    /// shard and records them in the manifest.
    pub(crate) async fn checkpoint(&self) -> Result<()> {
        let Some(dir) = self.ctx.config.dir.clone() else {
            return Ok(());
        };
        crate::io::fault_point(&self.ctx.config, crate::io::FaultPoint::Metadata)?;
        let files = self.ctx.config.files();
        let gen = self.ctx.checkpoint_gen.fetch_add(1, Ordering::AcqRel) + 1;
        // 1. A consistent cut of every shard: positions and index entries.
        let mut snaps = Vec::with_capacity(self.shards.len());
        let seq_floor;
        {
            let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
            for (s, g) in guards.iter().enumerate() {
                self.shards[s].check_poison(g)?;
                let mut entries = Vec::with_capacity(self.shards[s].index.len());
                self.shards[s]
                    .index
                    .for_each(|h, loc| entries.push((h, loc)));
                snaps.push((pack_pos(g.active.id, g.reserved), g.lpos, entries));
            }
            // Under every shard lock: all frames so far have a lower number.
            seq_floor = self.ctx.seq.load(Ordering::Acquire);
        }
        // 2. Everything up to the cut durable.
        let targets: Vec<(usize, u64)> = snaps
            .iter()
            .enumerate()
            .map(|(s, (_, lpos, _))| (s, *lpos))
            .collect();
        self.await_durable(&targets).await?;
        // 3. Hint files, synced, then the manifest that names them.
        let mut positions = Vec::with_capacity(snaps.len());
        for (s, (pos, _, entries)) in snaps.into_iter().enumerate() {
            let (cut_seg, _) = unpack_pos(pos);
            let mut by_seg: std::collections::BTreeMap<u32, Vec<(u64, u32)>> = Default::default();
            for seg in self.shards[s].segment_list() {
                if seg.id <= cut_seg {
                    by_seg.insert(seg.id, Vec::new());
                }
            }
            for (h, loc) in entries {
                let (sid, off) = unpack_pos(loc);
                if let Some(v) = by_seg.get_mut(&sid) {
                    v.push((h, off));
                }
            }
            for (sid, mut list) in by_seg {
                list.sort_unstable_by_key(|e| e.1);
                hint::write(
                    &files,
                    &dir.join(segment::hint_name(s as u32, sid)),
                    s as u32,
                    sid,
                    gen,
                    &list,
                )?;
            }
            positions.push(pos);
        }
        // The new hint files' entries, before the manifest that names them.
        files.sync_dir(&dir)?;
        if let Some(m) = &self.ctx.manifest {
            let mut m = m.lock();
            if gen > m.checkpoint_gen {
                m.checkpoint_gen = gen;
                m.seq_floor = m.seq_floor.max(seq_floor);
                for (s, pos) in positions.into_iter().enumerate() {
                    m.shards[s].checkpoint_pos = pos;
                }
                m.store(&files, &dir)?;
            }
        }
        Ok(())
    }

    /// A point-in-time snapshot of every live location, taken under all
    /// shard locks at once.
    pub(crate) fn snapshot(&self) -> Vec<(Vec<Arc<Segment>>, Vec<u64>)> {
        let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let out = self
            .shards
            .iter()
            .map(|s| {
                let mut locs = Vec::with_capacity(s.index.len());
                s.index.for_each(|_, loc| locs.push(loc));
                (s.segment_list(), locs)
            })
            .collect();
        drop(guards);
        out
    }

    pub(crate) fn stats(&self) -> EmdbStats {
        let mut st = EmdbStats::empty(self.ctx.backend, self.shards.len());
        st.live_records = self.len() as u64;
        st.namespace_count = 1;
        for s in &self.shards {
            st.logical_size_bytes += s.appended_bytes();
            if self.ctx.config.dir.is_some() {
                st.file_size_bytes += s.segment_list().iter().map(|g| g.file_len()).sum::<u64>();
            }
            st.device_flushes += s.device_flushes.load(Ordering::Relaxed);

            st.durable_records += s.durable_records.load(Ordering::Relaxed);
            st.index_bytes += s.index.memory_bytes() as u64;
        }
        st.device_flushes += self.ctx.flusher_flushes.load(Ordering::Relaxed);
        st.preallocated_bytes = st.file_size_bytes.saturating_sub(st.logical_size_bytes);
        st.records_per_flush = if st.device_flushes == 0 {
            0.0
        } else {
            st.durable_records as f64 / st.device_flushes as f64
        };
        st
    }

    fn shutdown(&self) {
        for s in &self.shards {
            s.request_shutdown();
        }
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        // Cores first (they finish with their own syncs), then segment
        // preparation, then the device flusher, which cores may still use.
        let (flusher, cores): (Vec<_>, Vec<_>) = threads
            .into_iter()
            .partition(|t| t.thread().name() == Some("emdb-flusher"));
        for t in cores {
            let _ = t.join();
        }
        for s in &self.shards {
            s.join_prep();
        }
        self.ctx.flusher_stop.store(true, Ordering::Release);
        if let Some(t) = self.ctx.flusher.get() {
            t.unpark();
        }
        for t in flusher {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.ctx.config.dir.is_some() && !self.shards.iter().any(|s| s.is_poisoned()) {
            // Best effort: a failed checkpoint only makes the next open slower.
            let _ = block_on(self.checkpoint());
        }
        self.shutdown();
    }
}

/// Polls every future each time; resolves to the first error or `Ok`.
struct JoinAll<F> {
    futs: Vec<F>,
    done: Vec<bool>,
}

impl<F: Future<Output = Result<()>> + Unpin> Future for JoinAll<F> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        if this.done.len() != this.futs.len() {
            this.done = vec![false; this.futs.len()];
        }
        let mut pending = false;
        for (f, done) in this.futs.iter_mut().zip(this.done.iter_mut()) {
            if *done {
                continue;
            }
            match Pin::new(f).poll(cx) {
                Poll::Ready(Ok(())) => *done = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Creates the directory if needed (mode 0700, each new entry made durable
/// in its parent) and takes the lock.
fn prepare_dir(files: &crate::io::Files, dir: &Path) -> Result<LockFile> {
    files.opening(dir);
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!(
                    "{} is a file; an emdb database is a directory",
                    dir.display()
                ),
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => files.create_dir_all(dir)?,
        Err(e) => return Err(e.into()),
    }
    LockFile::acquire(files, dir)
}

/// Opens an existing database directory or initialises a new one.
fn open_dir(
    dir: &Path,
    config: &Config,
    backend: IoBackend,
) -> Result<(Arc<Ctx>, Vec<recovery::RecoveredShard>)> {
    match Manifest::load(dir)? {
        Some(mut m) => {
            let ctx_seed = m.hash_seed;
            let shard_count = m.shard_count as usize;
            let parts = recovery::recover(dir, config, &mut m)?;
            let max_seq = parts.max_seq;
            let gen = m.checkpoint_gen;
            let ctx = Arc::new(Ctx::new(
                config,
                shard_count,
                ctx_seed,
                backend,
                max_seq + 1,
                gen,
                Some(m),
            ));
            Ok((ctx, parts.shards))
        }
        None => {
            let has_segments = fs::read_dir(dir)?.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| segment::parse_file_name(n).is_some())
            });
            if has_segments {
                return Err(Error::corrupted(
                    dir.join(manifest::FILE),
                    0,
                    "manifest is missing but segment files exist",
                ));
            }
            // The directory may have been created by an open that crashed
            // before making its entry durable: make it so before the
            // database it will hold is relied on.
            let files = config.files();
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                files.sync_dir(parent)?;
            }
            let seed = random_seed();
            let mut m = Manifest {
                shard_count: config.shards as u32,
                hash_seed: seed,
                checkpoint_gen: 0,
                seq_floor: 0,
                shards: vec![ShardEntry::default(); config.shards],
            };
            // The manifest comes first: a crash before the segments are
            // created and listed leaves a database that opens (recovery
            // creates a shard's missing first segment and removes unlisted
            // segment files), never segments without a manifest.
            m.store(&files, dir)?;
            let mut parts = Vec::with_capacity(config.shards);
            for s in 0..config.shards {
                let header = SegmentHeader {
                    shard: s as u32,
                    shard_count: config.shards as u32,
                    segment: 1,
                    hash_seed: seed,
                };
                let seg = Arc::new(Segment::create(Some(dir), header, config)?);
                m.shards[s].segments.push(1);
                parts.push(recovery::RecoveredShard {
                    segs: vec![seg],
                    append_at: frame::SEGMENT_HEADER_LEN as u32,
                    index: Index::new(),
                });
            }
            m.store(&files, dir)?;
            let ctx = Arc::new(Ctx::new(
                config,
                config.shards,
                seed,
                backend,
                1,
                0,
                Some(m),
            ));
            Ok((ctx, parts))
        }
    }
}

/// Starts the device flusher: it serves multi-shard flushes with one
/// fdatasync after every involved shard has put its data on the device
/// (`sync_file_range`), so one device flush covers all of them. It syncs the
/// lock file, which has no dirty data: the call only flushes the device.
fn start_flusher(
    ctx: &Arc<Ctx>,
    shards: &[Arc<Shard>],
    dir: &Path,
    backend: IoBackend,
) -> Result<JoinHandle<()>> {
    let config = ctx.config.clone();
    let anchor = crate::io::Storage::File(fs::File::open(dir.join("LOCK"))?);
    let ctx2 = ctx.clone();
    let shards: Vec<Arc<Shard>> = shards.to_vec();
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let t = std::thread::Builder::new()
        .name("emdb-flusher".into())
        .spawn(move || {
            let mut io = match crate::io::create(&config, backend) {
                Ok(io) => {
                    let _ = tx.send(Ok(()));
                    io
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            run_flusher(&ctx2, &shards, &anchor, io.as_mut());
        })?;
    match rx.recv() {
        Ok(Ok(())) => {
            let _ = ctx.flusher.set(t.thread().clone());
            Ok(t)
        }
        Ok(Err(e)) => Err(Error::Io(e)),
        Err(_) => Err(Error::Io(io::Error::other(
            "device flusher exited during start",
        ))),
    }
}

/// Whether the filesystem of `dir` overwrites written blocks in place, so that
/// a write into an already written and synced block changes no metadata and
/// is durable after `sync_file_range` plus any device flush. True for ext4
/// and XFS; copy-on-write filesystems (btrfs, ZFS) allocate on every write,
/// so there every shard syncs its own file.
fn overwrites_in_place(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `st` is a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    matches!(st.f_type as i64, EXT4 | XFS)
}

/// Longest the device flusher waits for shards still writing their part.
const MAX_FLUSH_GATHER: std::time::Duration = std::time::Duration::from_micros(200);

fn run_flusher(
    ctx: &Ctx,
    shards: &[Arc<Shard>],
    anchor: &crate::io::Storage,
    io: &mut dyn crate::io::Io,
) {
    let mut done = 0u64;
    let mut last_flush = std::time::Duration::ZERO;
    loop {
        let want = ctx.flush_requested.load(Ordering::Acquire);
        if want == done {
            if ctx.flusher_stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::park();
            continue;
        }
        // Let shards that are still putting their part of a shared flush on
        // the device finish, so that one device flush covers all of them.
        if ctx.flushes_in_flight.load(Ordering::Acquire) > 1 {
            let deadline = std::time::Instant::now() + (last_flush / 2).min(MAX_FLUSH_GATHER);
            while shards.iter().any(|s| s.shared_pending()) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
        let want = ctx.flush_requested.load(Ordering::Acquire);
        // What each shard has on the device now; the flush below covers it.
        let snaps: Vec<_> = shards.iter().map(|s| s.stable_snapshot()).collect();
        let started = std::time::Instant::now();
        let result = io.run(&[crate::io::Op::Sync { target: anchor }]);
        last_flush = started.elapsed();
        match result {
            Ok(()) => {
                ctx.flusher_flushes.fetch_add(1, Ordering::Relaxed);
                for (s, snap) in shards.iter().zip(snaps) {
                    s.mark_durable(snap);
                }
            }
            Err(e) => {
                // Never retried: poison every shard and stop, so that no
                // later flush can be called durable over what this one lost.
                for s in shards {
                    s.poison_from_flusher(&e);
                }
                return;
            }
        }
        done = want;
    }
}

/// Starts one core thread per shard; each creates its own backend (an
/// io_uring must be set up on the thread that submits to it).
fn start_cores(
    shards: &[Arc<Shard>],
    config: &Config,
    backend: IoBackend,
) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(shards.len());
    let mut failure = None;
    for shard in shards {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let s = shard.clone();
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("emdb-core-{}", shard.id))
            .spawn(move || match crate::io::create(&config, backend) {
                Ok(io) => {
                    debug_assert_eq!(io.kind(), backend);
                    let _ = tx.send(Ok(()));
                    let core = s.clone();
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                        shard::run_core(core, io)
                    }));
                    if ran.is_err() {
                        s.poison_dead_core();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            });
        match spawned {
            Ok(t) => {
                shard.set_core(t.thread().clone());
                threads.push(t);
                match rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failure = Some(Error::Io(e));
                        break;
                    }
                    Err(_) => {
                        failure = Some(Error::Io(io::Error::other(
                            "shard core thread exited during start",
                        )));
                        break;
                    }
                }
            }
            Err(e) => {
                failure = Some(Error::Io(e));
                break;
            }
        }
    }
    match failure {
        None => Ok(threads),
        Some(e) => {
            for s in shards {
                s.request_shutdown();
            }
            for t in threads {
                let _ = t.join();
            }
            Err(e)
        }
    }
}
