//! Pass 1 of recovery: the checkpoint's hint files, each shard's log walked
//! and verified frame by frame, the end of each log found, and the torn-tail
//! rule applied (see the parent module).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::frame::{self, pack_pos, DecodeError, Kind, SEGMENT_HEADER_LEN};
use crate::log::hint;
use crate::log::manifest::Manifest;
use crate::log::segment::{self, Segment};

/// One segment's hint file, checked against the segment.
pub(super) struct Hinted {
    /// The segment's index in the shard's list.
    pub(super) si: usize,
    /// `(hash, offset)` of each live record at the checkpoint.
    pub(super) entries: Vec<hint::Entry>,
    /// Bytes of the frames the entries name.
    pub(super) live: u64,
    /// Where the segment's frames ended at the checkpoint.
    pub(super) data_end: u32,
}

/// The hint files of a shard's segments up to the checkpoint's cut.
pub(super) type Hints = Vec<Hinted>;

/// Per shard result of pass 1.
pub(super) struct Scan {
    /// Index into the segment list and offset where replay starts.
    pub(super) start: (usize, u32),
    /// Valid end of each segment from `start.0` on (`ends[i - start.0]`).
    pub(super) ends: Vec<u32>,
    /// The log was cut at this (segment index, offset).
    pub(super) cut: Option<(usize, u32)>,
    /// Hint entries per segment index, when the checkpoint is usable.
    pub(super) hints: Option<Hints>,
}

type Pass1 = (Vec<Scan>, HashMap<u64, (u32, u32)>, u64);

/// Pass 1 over every shard: hints for all shards or for none.
pub(super) fn pass1(dir: &Path, m: &Manifest, all_segs: &[Vec<Arc<Segment>>]) -> Result<Pass1> {
    // Checking hint entries against their frames touches every live record:
    // one thread per shard (each reads only its own files).
    let mut hints: Vec<Option<Hints>> = std::thread::scope(|sc| {
        let handles: Vec<_> = all_segs
            .iter()
            .enumerate()
            .map(|(s, segs)| sc.spawn(move || load_hints(dir, m, s, segs)))
            .collect();
        // A panicking check counts as unusable hints: replay instead.
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    if hints.iter().any(Option::is_none) {
        hints.iter_mut().for_each(|h| *h = None);
    }
    let mut batches: HashMap<u64, (u32, u32)> = HashMap::new();
    let mut max_seq = 0u64;
    let mut scans = Vec::with_capacity(all_segs.len());
    for ((s, segs), hints) in all_segs.iter().enumerate().zip(hints) {
        let start = match &hints {
            Some(_) => {
                let (cseg, coff) = frame::unpack_pos(m.shards[s].checkpoint_pos);
                let i = segs.iter().position(|g| g.id == cseg).unwrap_or(0);
                (i, coff.max(SEGMENT_HEADER_LEN as u32))
            }
            None => (0, SEGMENT_HEADER_LEN as u32),
        };
        // Everything before the last checkpoint's position was durable.
        let durable = if m.checkpoint_gen == 0 {
            0
        } else {
            m.shards[s].checkpoint_pos
        };
        let mut scan = scan_shard(segs, start, durable, &mut batches, &mut max_seq)?;
        scan.hints = hints;
        scans.push(scan);
    }
    Ok((scans, batches, max_seq))
}

/// The checkpoint's hint files of shard `s`, if every one of them is present
/// and intact; otherwise `None` and the shard is replayed in full.
fn load_hints(dir: &Path, m: &Manifest, s: usize, segs: &[Arc<Segment>]) -> Option<Hints> {
    if m.checkpoint_gen == 0 || m.shards[s].checkpoint_pos == 0 {
        return None;
    }
    let (cseg, coff) = frame::unpack_pos(m.shards[s].checkpoint_pos);
    let ci = segs.iter().position(|g| g.id == cseg)?;
    if coff as usize > segs[ci].file_bytes().len() {
        return None;
    }
    let mut out = Vec::with_capacity(ci + 1);
    for (i, seg) in segs.iter().enumerate().take(ci + 1) {
        let (entries, data_end) = hint::read(
            &dir.join(segment::hint_name(s as u32, seg.id)),
            s as u32,
            seg.id,
            m.checkpoint_gen,
            m.names.0.as_deref(),
        )?;
        // Every entry must name a put frame whose key has the entry's hash,
        // inside the part of the segment the checkpoint covered; anything
        // else (a damaged or truncated segment, a stale hint) means replay.
        let bytes = seg.file_bytes();
        let limit = if i == ci { coff as usize } else { bytes.len() };
        // The data end bounds every entry's frame, and lies in the file.
        if (data_end as usize) < SEGMENT_HEADER_LEN || data_end as usize > limit {
            return None;
        }
        let limit = data_end as usize;
        let mut live = 0u64;
        let valid = entries.iter().all(|e| {
            let (h, off) = (&e.hash, e.off as usize);
            off >= SEGMENT_HEADER_LEN
                && off < limit
                && frame::decode_unchecked(&bytes[off..]).is_ok_and(|f| {
                    live += f.len as u64;
                    f.kind == Kind::Put
                        && f.sealed.is_some() == m.names.0.is_some()
                        && f.namespace == e.ns
                        && off + f.len <= limit
                        && crate::index::frame_hash(m.hash_seed, &f) == *h
                        && crate::index::shard_for(*h, m.shard_count as usize) == s
                })
        });
        if !valid {
            return None;
        }
        out.push(Hinted {
            si: i,
            entries,
            live,
            data_end,
        });
    }
    Some(out)
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Whether bytes `off..` of a segment are all zero. Asks the filesystem
/// where data is (`SEEK_DATA`/`SEEK_HOLE`) and reads only those ranges:
/// preallocated, never written extents count as holes, so a mostly empty
/// 64 MiB tail costs a few system calls rather than a read of every page.
fn zero_from(seg: &Segment, off: usize) -> bool {
    let bytes = seg.file_bytes();
    let fd = match seg.storage.fd() {
        Some(fd) => fd,
        None => return all_zero(&bytes[off.min(bytes.len())..]),
    };
    let mut pos = off;
    while pos < bytes.len() {
        // SAFETY: lseek on a descriptor we own has no memory effects.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data after `pos`. Anything else: fall back to reading.
            return std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO)
                || all_zero(&bytes[pos..]);
        }
        let data = (data as usize).max(pos);
        if data >= bytes.len() {
            return true;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            bytes.len()
        } else {
            (hole as usize).min(bytes.len())
        };
        if !all_zero(&bytes[data..hole.max(data)]) {
            return false;
        }
        pos = hole.max(data + 1);
    }
    true
}

fn scan_shard(
    segs: &[Arc<Segment>],
    start: (usize, u32),
    durable: u64,
    batches: &mut HashMap<u64, (u32, u32)>,
    max_seq: &mut u64,
) -> Result<Scan> {
    let mut ends = Vec::new();
    // Durable positions claimed by sync markers.
    let mut claims: Vec<u64> = Vec::new();
    let short = |seg: &Segment, off: usize| {
        let (dseg, doff) = frame::unpack_pos(durable);
        (seg.id == dseg && (off as u64) < doff as u64).then(|| {
            Error::corrupted(
                seg.path.clone().unwrap_or_default(),
                off as u64,
                "the segment ends before data the last checkpoint made durable",
            )
        })
    };
    for si in start.0..segs.len() {
        let seg = &segs[si];
        let bytes = seg.file_bytes();
        let mut off = if si == start.0 {
            start.1 as usize
        } else {
            SEGMENT_HEADER_LEN
        };
        loop {
            if off >= bytes.len() {
                if let Some(e) = short(seg, off) {
                    return Err(e);
                }
                ends.push(off as u32);
                break;
            }
            let rest = &bytes[off..];
            let decoded = if rest.len() < frame::MIN_FRAME {
                // Fewer bytes left than the smallest frame: the end, if zero.
                if zero_from(seg, off) {
                    Err(DecodeError::Zero)
                } else {
                    Err(DecodeError::Invalid(
                        "frame cut off by the end of the segment",
                    ))
                }
            } else {
                frame::decode(rest)
            };
            match decoded {
                Ok(f) => {
                    if f.kind == Kind::Sync {
                        if let Ok(v) = <[u8; 8]>::try_from(f.value) {
                            // A marker claims a position at or before itself.
                            let c = u64::from_le_bytes(v);
                            if c <= pack_pos(seg.id, off as u32) {
                                claims.push(c);
                            }
                        }
                    }
                    *max_seq = (*max_seq).max(f.seq);
                    if f.batch_count > 0 {
                        let e = batches.entry(f.seq).or_insert((f.batch_count, 0));
                        e.1 = e.1.saturating_add(1);
                    }
                    off += f.len;
                }
                Err(DecodeError::Zero) if zero_from(seg, off) => {
                    ends.push(off as u32);
                    break;
                }
                Err(DecodeError::Zero) | Err(DecodeError::Invalid(_)) => {
                    let damage = pack_pos(seg.id, off as u32);
                    // A file that ends inside a frame (not zeros: those may
                    // be a torn tail's unwritten blocks) before the last
                    // checkpoint's position lost durable data.
                    let cut_short = match rest.get(..4) {
                        None => true,
                        Some(l) => {
                            let len = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                            len > rest.len() || (len != 0 && rest.len() < frame::MIN_FRAME)
                        }
                    };
                    let claim =
                        durable_claim_after(segs, si, off).max(cut_short.then_some(durable));
                    if let Some(claim) = claim {
                        if claim > damage {
                            let why = match frame::decode(rest) {
                                Err(DecodeError::Invalid(w)) => w,
                                _ => "unwritten hole inside durable data",
                            };
                            return Err(Error::corrupted(
                                seg.path.clone().unwrap_or_default(),
                                off as u64,
                                why,
                            ));
                        }
                    }
                    ends.push(off as u32);
                    return Ok(Scan {
                        start,
                        ends,
                        cut: Some((si, off as u32)),
                        hints: None,
                    });
                }
            }
        }
    }
    // Every durable claim must lie within the data found: a claim beyond a
    // segment's end means bytes that were durable are gone (for example a
    // sealed segment cut at a frame boundary, whose tail looks unused).
    for c in claims {
        let (sid, coff) = frame::unpack_pos(c);
        if let Some(i) = segs.iter().position(|s| s.id == sid) {
            if i >= start.0 && coff > ends[i - start.0] {
                return Err(Error::corrupted(
                    segs[i].path.clone().unwrap_or_default(),
                    ends[i - start.0] as u64,
                    "data made durable earlier is missing (segment truncated)",
                ));
            }
        }
    }
    Ok(Scan {
        start,
        ends,
        cut: None,
        hints: None,
    })
}

/// The largest durable position claimed by any sync marker after the damage
/// at `(si, off)`: in the rest of that segment (searched byte by byte, since
/// frame boundaries are lost) and in every later segment.
fn durable_claim_after(segs: &[Arc<Segment>], si: usize, off: usize) -> Option<u64> {
    let mut best: Option<u64> = None;
    for (j, seg) in segs.iter().enumerate().skip(si) {
        let bytes = seg.file_bytes();
        let mut p = if j == si { off + 1 } else { SEGMENT_HEADER_LEN };
        while p + frame::MIN_FRAME <= bytes.len() {
            if bytes[p..p + 4] == [0, 0, 0, 0] {
                // Skip zeros quickly.
                match bytes[p..].iter().position(|b| *b != 0) {
                    Some(n) => {
                        p += n.saturating_sub(3).max(1);
                        continue;
                    }
                    None => break,
                }
            }
            match frame::decode(&bytes[p..]) {
                Ok(f) => {
                    if f.kind == Kind::Sync && f.value.len() == 8 {
                        let mut v = [0u8; 8];
                        v.copy_from_slice(f.value);
                        let c = u64::from_le_bytes(v);
                        // A real marker claims a position at or before
                        // itself; bytes that merely look like one (inside a
                        // value) and claim more are ignored.
                        if c <= pack_pos(seg.id, p as u32) {
                            best = Some(best.map_or(c, |b| b.max(c)));
                        }
                    }
                    p += f.len;
                }
                Err(_) => p += 1,
            }
        }
    }
    best
}

/// Zeroes a segment's damaged tail from `off` so it can never be read as
/// frames again, and syncs it.
pub(super) fn zero_tail(files: &crate::io::Files, seg: &Segment, off: u32) -> Result<()> {
    let bytes = seg.file_bytes();
    let start = off as usize;
    if let Some(last) = bytes
        .get(start..)
        .and_then(|b| b.iter().rposition(|x| *x != 0))
    {
        if let crate::io::Storage::File(f) = &seg.storage {
            let zeros = vec![0u8; last + 1];
            files.write_at(f, &zeros, off as u64)?;
            files.sync_data(f)?;
        }
    }
    Ok(())
}
