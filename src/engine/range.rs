//! Range scans: the rebuild of each shard's ordered indexes at open (one
//! [`SortedKeys`] per namespace, an [`Ordered`] kept under the shard lock
//! beside the hash index) and the reads that merge the shards' keys in
//! ascending order.
//!
//! **What a read sees.** A chunk of a range is read holding every shard's
//! lock: its keys are merged from the ordered indexes and each value is
//! read through the hash index, all at one point in time, so no write (and
//! no transaction, whose commit holds the locks of its shards) is seen in
//! part within a chunk. `range` and `range_prefix` read their whole result
//! as one chunk; the lazy iterators read chunks of [`CHUNK`] keys and go on
//! after the last key they examined, so across chunks they see each key as
//! it was when its chunk was read (see `EmdbRangeIter`).

use std::ops::Bound;
use std::sync::Arc;

use crossbeam_epoch as epoch;

use super::shard::Shard;
use super::State;
use crate::error::{Error, Result};
use crate::log::frame::{self, unpack_pos, Kind};
use crate::sorted::{Ordered, SortedKeys};

/// Keys a lazy range iterator examines per chunk (its lock hold).
pub(crate) const CHUNK: usize = 128;

/// Keys whose slots and frames are fetched into the cache together.
const BATCH: usize = 32;

/// `Error::InvalidConfig` unless range scans are on.
pub(crate) fn check_enabled(state: &State) -> Result<()> {
    if state.ctx.config.range_scans {
        Ok(())
    } else {
        Err(Error::InvalidConfig(
            "range scans are off: open the database with enable_range_scans(true)",
        ))
    }
}

/// The bounds of every key starting with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    // The first key after every key with the prefix: the prefix with its
    // last byte below 0xff incremented and the rest cut off.
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("not empty") += 1;
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
        end.pop();
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

fn below(key: &[u8], to: Bound<&[u8]>) -> bool {
    match to {
        Bound::Unbounded => true,
        Bound::Included(e) => key <= e,
        Bound::Excluded(e) => key < e,
    }
}

/// A chunk of a range: its records, and where the next chunk starts
/// (after `next`), or `None` once the range is done.
pub(crate) struct Chunk {
    pub items: Vec<(Vec<u8>, Vec<u8>)>,
    pub next: Option<Vec<u8>>,
}

impl State {
    /// Every live record of namespace `ns` in `bounds`, at one point in
    /// time (see [`range_chunk`](State::range_chunk)).
    pub(crate) fn range_all(
        &self,
        ns: u32,
        (from, to): (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (from, to) = (
            from.as_ref().map(Vec::as_slice),
            to.as_ref().map(Vec::as_slice),
        );
        Ok(self.range_chunk(ns, from, to, usize::MAX)?.items)
    }

    /// The live records of namespace `ns` with keys in `(from, to)`, in
    /// ascending key order, at one point in time (every shard's lock held):
    /// of the first `limit` keys of the range in the ordered index (records
    /// expired or damaged are skipped, as `iter` skips them).
    pub(crate) fn range_chunk(
        &self,
        ns: u32,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Chunk> {
        check_enabled(self)?;
        let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let mut heads: Vec<_> = guards
            .iter()
            .filter_map(|g| g.ordered.as_ref()?.get(ns))
            .map(|set| set.iter_from(from).peekable())
            .collect();
        let mut items = Vec::new();
        let mut examined = 0;
        let mut batch: Vec<&[u8]> = Vec::with_capacity(BATCH);
        let mut last: Option<&[u8]> = None;
        loop {
            let mut best: Option<(usize, &[u8])> = None;
            for (i, h) in heads.iter_mut().enumerate() {
                if let Some(&k) = h.peek() {
                    if best.is_none_or(|(_, b)| k < b) {
                        best = Some((i, k));
                    }
                }
            }
            let key = best.filter(|(_, k)| below(k, to) && examined < limit);
            if let Some((i, key)) = key {
                heads[i].next();
                examined += 1;
                last = Some(key);
                batch.push(key);
                if batch.len() < BATCH {
                    continue;
                }
            }
            self.read_batch(ns, &batch, &mut items);
            batch.clear();
            if key.is_none() {
                // The range ended, or the limit was reached with more to
                // come (then the next chunk starts after the last key).
                let more = best.is_some_and(|(_, k)| below(k, to));
                let next = last.filter(|_| more).map(<[u8]>::to_vec);
                return Ok(Chunk { items, next });
            }
        }
    }

    /// Reads the live records of `keys` into `out`, in order: first the
    /// index slots of all of them are asked into the cache, then their
    /// frames, then each is read as a point read does, so the cache misses
    /// of a batch overlap instead of coming one after another. A damaged
    /// record is skipped here, as iterators skip it (a point read of it
    /// reports the damage); so is one that expired.
    fn read_batch(&self, ns: u32, keys: &[&[u8]], out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let guard = epoch::pin();
        let hashes: Vec<(u64, &Shard)> = keys
            .iter()
            .map(|k| {
                let h = self.ctx.hash(ns, k);
                (h, &*self.shards[self.ctx.shard_of(h)])
            })
            .collect();
        for &(h, shard) in &hashes {
            if let Some(ix) = shard.indexes.get(ns, &guard) {
                ix.prefetch(h, &guard);
            }
        }
        for &(h, shard) in &hashes {
            let Some(loc) = shard
                .indexes
                .get(ns, &guard)
                .and_then(|ix| ix.find_map(h, &guard, Some))
            else {
                continue;
            };
            let (sid, off) = unpack_pos(loc);
            if let Some(seg) = shard.segments(&guard).get(sid) {
                seg.prefetch(off, 3);
            }
        }
        for k in keys {
            if let Ok(Some(v)) = self.lookup(ns, k, true, |_, _, fr| fr.value.to_vec()) {
                out.push((k.to_vec(), v));
            }
        }
    }
}

impl Shard {
    /// Builds this shard's ordered indexes from its hash indexes (at open,
    /// when range scans are on): each key is read from its record (frames
    /// prefetched a batch at a time), the keys of a namespace are packed
    /// into one buffer and sorted there, by their first eight bytes first.
    pub(super) fn rebuild_ordered(self: &Arc<Shard>) {
        let guard = epoch::pin();
        let segs = self.segments(&guard);
        let mut ordered = Ordered::default();
        self.indexes.for_each(&guard, |ns, ix| {
            let mut bytes: Vec<u8> = Vec::new();
            let mut spans: Vec<Span> = Vec::with_capacity(ix.len());
            let mut locs = Vec::with_capacity(ix.len());
            let mut plain = Vec::new();
            ix.for_each(|_, loc| locs.push(loc));
            for batch in locs.chunks(BATCH) {
                for &loc in batch {
                    let (sid, off) = unpack_pos(loc);
                    if let Some(seg) = segs.get(sid) {
                        seg.prefetch(off, 1);
                    }
                }
                for &loc in batch {
                    let (sid, off) = unpack_pos(loc);
                    let Some(seg) = segs.get(sid) else { continue };
                    // `with_frame` may run this twice: the sort's dedup
                    // drops the second copy.
                    seg.with_frame(off, |b| {
                        let Ok(f) = frame::decode_unchecked(b) else {
                            return;
                        };
                        if f.kind != Kind::Put || f.namespace != ns {
                            return;
                        }
                        // An encrypted key is decrypted; one that fails
                        // authentication is left out (a read of it reports
                        // the damage).
                        let f = match f.sealed {
                            None => f,
                            Some(_) => match self.ctx.open(seg, off, &f, &mut plain) {
                                Ok(p) => p,
                                Err(_) => return,
                            },
                        };
                        spans.push(Span::new(bytes.len(), f.key));
                        bytes.extend_from_slice(f.key);
                    });
                }
            }
            let key = |s: &Span| &bytes[s.off..s.off + s.len];
            spans.sort_unstable_by(|a, b| a.head.cmp(&b.head).then_with(|| key(a).cmp(key(b))));
            spans.dedup_by(|a, b| key(a) == key(b));
            if !spans.is_empty() {
                ordered.set(ns, SortedKeys::from_sorted(spans.iter().map(key)));
            }
        });
        self.lock().ordered = Some(ordered);
    }
}

/// A key in the rebuild's buffer, with its head (`sorted::key_head`).
struct Span {
    head: u64,
    off: usize,
    len: usize,
}

impl Span {
    fn new(off: usize, key: &[u8]) -> Span {
        Span {
            head: crate::sorted::key_head(key),
            off,
            len: key.len(),
        }
    }
}
