//! Opening an existing database: manifest -> segments -> frames -> index.
//!
//! Pass 1 walks every shard's log from its checkpoint (or its start),
//! verifying each frame's checksum, finding where the log ends, and counting
//! the frames of each batch across all shards. Pass 2 replays the verified
//! frames in log order into each shard's index, skipping batches that are
//! not whole. Within a shard, log order is sequence order (sequence numbers
//! are drawn under the shard lock), so "last in the log wins" is "highest
//! sequence number wins".
//!
//! The torn-tail rule: the log ends at the first frame that does not verify,
//! unless that damage lies inside data the shard had already made durable.
//! Shard cores record what was durable in sync markers (a frame written after
//! each fsync, and a final one at a clean close); if any marker after the
//! damage claims a durable position beyond it, the damage is real corruption
//! and opening fails with `Error::Corrupted` naming the file and offset.
//! Otherwise the damage is a write that was in flight at a crash; the tail
//! from there is cut (and zeroed on disk) so that it can never resurface.

mod scan;

use scan::{pass1, zero_tail, Scan};

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::ttl::Expiring;
use crate::error::{Error, Result};
use crate::index::{Entry, Index, Upserted};
use crate::log::frame::{
    self, pack_pos, Frame, HeaderError, Kind, SegmentHeader, SEGMENT_HEADER_LEN,
};
use crate::log::manifest::{self, Manifest};
use crate::log::segment::{self, Segment};
use crate::log::segtable::{account, frame_same_key, SegTable};
use crate::nsindex::Indexes;

/// The sequence number of the put at `loc`, if it holds `f`'s key.
fn seq_of_same_key(table: &SegTable, loc: u64, f: &Frame<'_>) -> Option<u64> {
    let (sid, off) = crate::log::frame::unpack_pos(loc);
    table.get(sid)?.with_frame(off, |b| {
        let o = frame::decode_unchecked(b).ok()?;
        (o.kind == Kind::Put && o.same_key(f)).then_some(o.seq)
    })?
}

/// Which batches recovery applies.
struct Batches {
    /// Frames expected (`batch_count`) and found, per batch sequence number.
    counts: HashMap<u64, (u32, u32)>,
    /// Batches below this were whole on disk when compaction raised it
    /// (compaction drops a batch's dead frames, so they cannot be counted).
    floor: u64,
    /// Batches known incomplete.
    aborted: std::collections::HashSet<u64>,
}

impl Batches {
    fn applies(&self, seq: u64) -> bool {
        if self.aborted.contains(&seq) {
            return false;
        }
        seq < self.floor || self.counts.get(&seq).is_some_and(|(want, got)| want == got)
    }
}

pub(crate) struct RecoveredShard {
    pub segs: Vec<Arc<Segment>>,
    pub append_at: u32,
    pub indexes: Indexes,
    pub expiring: Expiring,
}

/// The indexes of one shard while it is rebuilt: namespaces the manifest
/// does not list were dropped, and their records are skipped.
struct Building<'a> {
    default: Index,
    others: HashMap<u32, Index>,
    live: &'a HashSet<u32>,
    /// The live records that have an expiry.
    expiring: Expiring,
}

impl Building<'_> {
    /// The index of `ns`, or `None` for a dropped namespace.
    fn index(&mut self, ns: u32) -> Option<&Index> {
        if ns == crate::nsindex::DEFAULT_NS {
            return Some(&self.default);
        }
        if !self.live.contains(&ns) {
            return None;
        }
        Some(self.others.entry(ns).or_insert_with(Index::new))
    }

    fn finish(self) -> (Indexes, Expiring) {
        (
            Indexes::new(self.default, self.others.into_iter().collect()),
            self.expiring,
        )
    }
}

pub(crate) struct Recovered {
    pub shards: Vec<RecoveredShard>,
    pub max_seq: u64,
}

pub(crate) fn recover(dir: &Path, config: &Config, m: &mut Manifest) -> Result<Recovered> {
    let shard_count = m.shard_count as usize;
    if m.shards.len() != shard_count {
        return Err(Error::corrupted(
            dir.join(manifest::FILE),
            16,
            "manifest shard list disagrees with its count",
        ));
    }
    let files = config.files();
    // A read-only open repairs nothing on disk: what recovery would cut or
    // remove is left as it is and ignored in memory.
    let read_only = config.read_only;
    // Unlisted segment files first: a new first segment below is created
    // exclusively and may have an orphan at its path.
    if !read_only {
        remove_orphans(&files, dir, m)?;
    }
    let mut all_segs = Vec::with_capacity(shard_count);
    let mut manifest_changed = false;
    for s in 0..shard_count {
        if m.shards[s].segments.is_empty() {
            // Created but never registered a segment: start one.
            let header = SegmentHeader {
                shard: s as u32,
                shard_count: m.shard_count,
                segment: 1,
                hash_seed: m.hash_seed,
            };
            if read_only {
                // An empty shard: a segment in memory stands for it.
                let seg = Arc::new(Segment::create(None, header, config)?);
                all_segs.push(vec![seg]);
                continue;
            }
            Segment::create(Some(dir), header, config)?;
            m.shards[s].segments.push(1);
            manifest_changed = true;
        }
        all_segs.push(open_segments(&files, dir, m, s, config)?);
    }

    // Pass 1. Hints are used only if every shard's are valid: the checkpoint
    // cut all shards at one consistent point, so then every batch lies wholly
    // before the cut (its effect is in the hints) or wholly after it (all its
    // frames are scanned and counted). If any shard must replay from its
    // start, all do, and every batch frame is counted: batch completeness is
    // never judged from a partial count, and an incomplete batch that an
    // earlier recovery dropped stays dropped.
    let (scans, counts, max_seq) = pass1(dir, m, &all_segs)?;
    // Batches found incomplete are recorded as aborted, so that a later
    // batch floor (raised by compaction) can never make their surviving
    // frames count.
    let mut found_torn = false;
    for (seq, (want, got)) in &counts {
        if want != got && *seq >= m.batch_floor && !m.aborted.contains(seq) {
            m.aborted.push(*seq);
            found_torn = true;
        }
    }
    if found_torn {
        m.aborted.sort_unstable();
        manifest_changed = true;
    }
    let batches = Batches {
        counts,
        floor: m.batch_floor,
        aborted: m.aborted.iter().copied().collect(),
    };

    // Pass 2 and the cleanup of cut tails.
    let mut shards = Vec::with_capacity(shard_count);
    let mut to_zero: Vec<(Arc<Segment>, u32)> = Vec::new();
    // Each shard's index is built on a thread of its own: hint entries and
    // replayed frames touch every live record, and shards share nothing.
    let live: HashSet<u32> = m.namespaces.iter().map(|(id, _)| *id).collect();
    let indexes: Vec<Result<(Indexes, Expiring)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = all_segs
            .iter()
            .zip(&scans)
            .enumerate()
            .map(|(s, (segs, scan))| {
                let batches = &batches;
                let (m, live) = (&*m, &live);
                sc.spawn(move || build_index(dir, m, live, s, segs, scan, batches))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::corrupted(dir, 0, "index rebuild panicked")))
            })
            .collect()
    });
    for (s, ((segs, scan), indexes)) in all_segs.into_iter().zip(scans).zip(indexes).enumerate() {
        let (indexes, expiring) = indexes?;
        let (segs, append_at) = match scan.cut {
            Some((si, off)) => {
                // Drop later segments from the manifest now; the damaged
                // tail is zeroed only after that manifest is stored, so a
                // crash in between cannot bring the dropped segments back.
                let dropped: Vec<u32> = segs[si + 1..].iter().map(|g| g.id).collect();
                m.shards[s].segments.retain(|id| !dropped.contains(id));
                to_zero.push((segs[si].clone(), off));
                manifest_changed = true;
                let mut kept = segs[..si].to_vec();
                if segs[si].has_shadow() || read_only {
                    kept.push(segs[si].clone());
                } else {
                    // Appends continue here now: reopen it with a tail buffer.
                    let path = segs[si].path.clone().unwrap_or_default();
                    let cap = segs[si].cap.max(config.segment_size as u32);
                    kept.push(Arc::new(Segment::open(
                        &files,
                        &path,
                        segs[si].id,
                        Some(cap),
                    )?));
                }
                (kept, off)
            }
            None => {
                let last = segs.len() - 1;
                let end = if last >= scan.start.0 {
                    scan.ends[last - scan.start.0]
                } else {
                    SEGMENT_HEADER_LEN as u32
                };
                (segs, end)
            }
        };
        // Appends continue in the last segment.
        let last = segs
            .last()
            .cloned()
            .ok_or_else(|| Error::corrupted(dir, 0, "shard has no segment"))?;
        if !last.has_shadow() && !read_only {
            return Err(Error::corrupted(
                last.path.clone().unwrap_or_default(),
                0,
                "last segment could not be opened for appends",
            ));
        }
        // Make everything scanned durable: after a kill -9 the page cache may
        // hold frames that never reached the disk, and the first flush after
        // this open must not rest on them. It also lets appends rely on the
        // blocks below the append point being allocated (Segment::zeroed_upto).
        for seg in segs.iter().skip(scan.start.0) {
            if let (crate::io::Storage::File(f), false) = (&seg.storage, read_only) {
                files.sync_data(f)?;
            }
        }
        last.set_append_point(append_at);
        shards.push(RecoveredShard {
            segs,
            append_at,
            indexes,
            expiring,
        });
    }
    if manifest_changed && !read_only {
        m.store(&files, dir)?;
        for (seg, off) in &to_zero {
            zero_tail(&files, seg, *off)?;
        }
        // Segments a cut dropped are orphans now.
        remove_orphans(&files, dir, m)?;
    }
    // Frames covered by hints were not scanned: the checkpoint recorded a
    // floor above their sequence numbers.
    let max_seq = max_seq.max(m.seq_floor.saturating_sub(1));
    Ok(Recovered { shards, max_seq })
}

/// Pass 2 for one shard: loads its hints (if used) and replays the frames
/// after them into a new index.
fn build_index(
    dir: &Path,
    m: &Manifest,
    live: &HashSet<u32>,
    s: usize,
    segs: &[Arc<Segment>],
    scan: &Scan,
    batches: &Batches,
) -> Result<(Indexes, Expiring)> {
    let shard_count = m.shard_count as usize;
    let hinted: usize = scan
        .hints
        .as_ref()
        .map_or(0, |h| h.iter().map(|x| x.entries.len()).sum());
    let mut index = Building {
        default: Index::with_capacity(hinted),
        others: HashMap::new(),
        live,
        expiring: Expiring::default(),
    };
    let table = shard_table(segs);
    if let Some(h) = &scan.hints {
        for x in h {
            let (si, entries) = (&x.si, &x.entries);
            let id = segs[*si].id;
            segs[*si]
                .live_bytes
                .fetch_add(x.live, std::sync::atomic::Ordering::Relaxed);
            if *si < scan.start.0 {
                // Not scanned: its data end is the hint's.
                segs[*si]
                    .data_end
                    .store(x.data_end, std::sync::atomic::Ordering::Relaxed);
            }
            // Not scanned at open: reads check these frames' CRC.
            let below = if *si == scan.start.0 {
                scan.start.1
            } else {
                segs[*si].cap
            };
            segs[*si]
                .verify_below
                .store(below, std::sync::atomic::Ordering::Relaxed);
            let bytes = segs[*si].file_bytes();
            for e in entries {
                let off = e.off;
                let same_key = |old: u64| {
                    frame::decode_unchecked(&bytes[off as usize..])
                        .is_ok_and(|f| frame_same_key(&table, old, &f))
                };
                // A dropped namespace's entries: its records are dead.
                let Some(ix) = index.index(e.ns) else {
                    continue;
                };
                let loc = pack_pos(id, off);
                if !ix.insert_unique(e.hash, loc, same_key) {
                    // Checkpoints list each live key once: these hint
                    // files were not written by emdb as they are.
                    return Err(Error::corrupted(
                        dir.join(segment::hint_name(s as u32, id)),
                        0,
                        "a key is listed twice in the hint files",
                    ));
                }
                if e.expires_at != 0 {
                    index.expiring.add(e.expires_at, loc, e.ns, e.hash);
                }
            }
        }
    }
    let mut plain = Vec::new();
    let crypto = m.names.0.as_deref();
    for (i, end) in scan.ends.iter().enumerate() {
        let si = scan.start.0 + i;
        segs[si]
            .data_end
            .store(*end, std::sync::atomic::Ordering::Relaxed);
        let bytes = segs[si].file_bytes();
        let mut off = if i == 0 {
            scan.start.1
        } else {
            SEGMENT_HEADER_LEN as u32
        };
        while off < *end {
            let Ok(f) = frame::decode_unchecked(&bytes[off as usize..]) else {
                break;
            };
            if f.sealed.is_some() || (crypto.is_some() && crate::crypt::sealed_kind(f.kind)) {
                // Authenticated as it is replayed: a changed byte anywhere
                // in an encrypted frame (its index hash included) is
                // reported here, with file and offset; so is a plaintext
                // record in an encrypted database (one written in by
                // someone without the key).
                let authentic = match crypto {
                    Some(c) => c
                        .open_frame(segs[si].place(), off, &f, &mut plain)
                        .map(|_| ()),
                    None => Err("an encrypted record in a database opened without a key"),
                };
                if let Err(why) = authentic {
                    return Err(Error::corrupted(
                        segs[si].path.clone().unwrap_or_default(),
                        off as u64,
                        why,
                    ));
                }
            }
            if !apply(
                &mut index,
                &table,
                batches,
                &f,
                pack_pos(segs[si].id, off),
                (m.hash_seed, s, shard_count),
            ) {
                return Err(Error::corrupted(
                    segs[si].path.clone().unwrap_or_default(),
                    off as u64,
                    "a record whose key belongs to another shard",
                ));
            }
            off += f.len as u32;
        }
    }
    Ok(index.finish())
}

fn shard_table(segs: &[Arc<Segment>]) -> SegTable {
    SegTable::new(segs.to_vec())
}

/// Replays one frame of shard `shard` into its index. False if the frame's
/// key belongs to another shard (a file that emdb did not write so).
fn apply(
    indexes: &mut Building<'_>,
    table: &SegTable,
    batches: &Batches,
    f: &Frame<'_>,
    loc: u64,
    (seed, shard, shards): (u64, usize, usize),
) -> bool {
    let hash = crate::index::frame_hash(seed, f);
    if matches!(f.kind, Kind::Put | Kind::Remove) && crate::index::shard_for(hash, shards) != shard
    {
        return false;
    }
    if f.batch_count > 0 && !batches.applies(f.seq) {
        return true;
    }
    if indexes.index(f.namespace).is_none() {
        // A dropped namespace: nothing of it is live.
        return true;
    }
    let Building {
        default,
        others,
        expiring,
        ..
    } = indexes;
    let index = if f.namespace == crate::nsindex::DEFAULT_NS {
        &*default
    } else {
        match others.get(&f.namespace) {
            Some(ix) => ix,
            None => return true,
        }
    };
    match f.kind {
        // The newest record of a key by sequence number wins. In a log this
        // engine wrote that is also the last one (compaction moves a record
        // only while it is its key's newest), so this only guards the rule.
        Kind::Put => {
            let decide = |old: u64| match seq_of_same_key(table, old, f) {
                None => Entry::Other,
                Some(s) if s > f.seq => Entry::Keep,
                Some(_) => Entry::Replace,
            };
            match index.upsert_with(hash, loc, decide) {
                Upserted::Replaced(old) => {
                    expiring.forget(table, old);
                    account(table, Some((loc, f.len as u32)), Some(old));
                }
                Upserted::Inserted => account(table, Some((loc, f.len as u32)), None),
                Upserted::Kept => return true,
            }
            if let Some(t) = f.expires_at {
                expiring.add(t, loc, f.namespace, hash);
            }
        }
        Kind::Remove => {
            let gone = index.remove(hash, |old| {
                seq_of_same_key(table, old, f).is_some_and(|s| s <= f.seq)
            });
            if let Some(old) = gone {
                expiring.forget(table, old);
            }
            account(table, None, gone);
        }
        Kind::Clear => {
            index.for_each(|_, old| account(table, None, Some(old)));
            index.clear();
            expiring.forget_namespace(f.namespace);
        }
        Kind::Sync => {}
    }
    true
}

fn open_segments(
    files: &crate::io::Files,
    dir: &Path,
    m: &Manifest,
    s: usize,
    config: &Config,
) -> Result<Vec<Arc<Segment>>> {
    let ids = &m.shards[s].segments;
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let path = dir.join(segment::file_name(s as u32, id));
        let last = i + 1 == ids.len();
        let extend = (last && !config.read_only).then_some(config.segment_size as u32);
        let seg = match Segment::open(files, &path, id, extend) {
            Ok(seg) => seg,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corrupted(
                    path,
                    0,
                    "a segment listed in the manifest is missing",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        let bytes = seg.file_bytes();
        if bytes.len() < SEGMENT_HEADER_LEN || bytes[..SEGMENT_HEADER_LEN].iter().all(|b| *b == 0) {
            return Err(Error::corrupted(
                path,
                0,
                "segment header is missing (file truncated?)",
            ));
        }
        match SegmentHeader::decode(bytes) {
            Ok(h) => {
                if h.shard != s as u32
                    || h.segment != id
                    || h.hash_seed != m.hash_seed
                    || h.shard_count != m.shard_count
                {
                    return Err(Error::corrupted(
                        path,
                        16,
                        "segment header does not match the manifest",
                    ));
                }
            }
            Err(HeaderError::Version(v)) => {
                return Err(Error::VersionMismatch {
                    found: v,
                    expected: frame::FORMAT_VERSION,
                })
            }
            Err(HeaderError::Magic) => {
                return Err(Error::corrupted(
                    path,
                    0,
                    "segment header has bad magic bytes",
                ))
            }
            Err(HeaderError::Corrupt(why)) => return Err(Error::corrupted(path, 0, why)),
        }
        out.push(Arc::new(seg));
    }
    Ok(out)
}

/// Segment files not named by the manifest were created but never
/// registered (a crash in between), dropped by a cut, or retired by a
/// compaction whose removal a crash cut short; nothing in them is needed.
/// Their hint files go too, and hint files a crash left half written.
/// Removed, and the removals made durable, so that a later segment created
/// at the same path is the only one a restart finds.
fn remove_orphans(files: &crate::io::Files, dir: &Path, m: &Manifest) -> Result<()> {
    let mut removed = false;
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        // A segment file, or a hint file of a segment, that the manifest
        // does not list; or a temporary file a crash left behind.
        let seg_name = name
            .strip_suffix(".hint")
            .map(|stem| format!("{stem}.seg"))
            .unwrap_or_else(|| name.to_string());
        let stale = match segment::parse_file_name(&seg_name) {
            Some((s, id)) => !m
                .shards
                .get(s as usize)
                .is_some_and(|sh| sh.segments.contains(&id)),
            None => name.ends_with(".hint.tmp"),
        };
        // Best effort: one that cannot be removed (a read-only directory)
        // is met again, and refused, if its id is reused.
        if stale && files.remove(&e.path()).is_ok() {
            removed = true;
        }
    }
    if removed {
        files.sync_dir(dir)?;
    }
    Ok(())
}
