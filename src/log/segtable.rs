//! The segments readers can reach, by id, and the frame lookup every index
//! user shares: does the frame at a location hold a given key.

use std::sync::Arc;

use super::frame::{self, unpack_pos, Kind};
use super::segment::Segment;
use crate::crypt::Crypto;

/// Segments readers can reach, sorted by id (not log order: a compaction
/// output has a higher id than segments after it in the log).
pub(crate) struct SegTable {
    first: u32,
    segs: Vec<Arc<Segment>>,
}

impl SegTable {
    /// A table of `segs`, in any order.
    pub(crate) fn new(mut segs: Vec<Arc<Segment>>) -> SegTable {
        segs.sort_unstable_by_key(|s| s.id);
        SegTable {
            first: segs.first().map_or(0, |s| s.id),
            segs,
        }
    }

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

    /// Every segment, by id.
    pub(crate) fn all(&self) -> &[Arc<Segment>] {
        &self.segs
    }

    /// This table with `add` added and the segments of ids in `drop` gone.
    pub(crate) fn with_changes(&self, add: &[Arc<Segment>], drop: &[u32]) -> SegTable {
        let mut segs: Vec<Arc<Segment>> = self
            .segs
            .iter()
            .filter(|s| !drop.contains(&s.id))
            .cloned()
            .collect();
        segs.extend(add.iter().cloned());
        SegTable::new(segs)
    }
}

/// Does the frame at `loc` (in `segs`) hold `key` of namespace `ns`?
#[inline]
pub(crate) fn frame_has_key(
    segs: &SegTable,
    loc: u64,
    ns: u32,
    key: &[u8],
    crypto: Option<&Crypto>,
) -> bool {
    let (sid, off) = unpack_pos(loc);
    let Some(seg) = segs.get(sid) else {
        return false;
    };
    seg.with_frame(off, |b| {
        frame::decode_unchecked(b).is_ok_and(|f| {
            f.kind == Kind::Put && f.namespace == ns && crate::crypt::key_matches(&f, key, crypto)
        })
    })
    .unwrap_or(false)
}

/// Does the frame at `loc` (in `segs`) hold a put of the same key as `f`?
#[inline]
pub(crate) fn frame_same_key(segs: &SegTable, loc: u64, f: &frame::Frame<'_>) -> bool {
    let (sid, off) = unpack_pos(loc);
    let Some(seg) = segs.get(sid) else {
        return false;
    };
    seg.with_frame(off, |b| {
        frame::decode_unchecked(b).is_ok_and(|o| o.kind == Kind::Put && o.same_key(f))
    })
    .unwrap_or(false)
}

/// Live-byte accounting of an index change: the record of `len` bytes at
/// `new` became live (if any), the one at `old` dead (if any).
#[inline]
pub(crate) fn account(segs: &SegTable, new: Option<(u64, u32)>, old: Option<u64>) {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some((loc, len)) = new {
        if let Some(seg) = segs.get(unpack_pos(loc).0) {
            seg.live_bytes.fetch_add(len as u64, Relaxed);
        }
    }
    if let Some(loc) = old {
        let (sid, off) = unpack_pos(loc);
        if let Some(seg) = segs.get(sid) {
            if let Some(n) = seg.with_frame(off, |b| b.len() as u64) {
                seg.live_bytes.fetch_sub(n, Relaxed);
            }
        }
    }
}
