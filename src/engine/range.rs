//! Range scans: the rebuild of each shard's ordered indexes at open (one
//! [`SortedKeys`] per namespace, an [`Ordered`] kept under the shard lock
//! beside the hash index) and the reads that merge the shards' keys in
//! ascending order.
//!
//! **What a read sees.** A chunk of a range is read holding every shard's
//! lock: its keys are merged from the ordered indexes and each record is
//! read from the location the ordered index keeps for it (the location its
//! hash-index slot holds: both change only under the shard lock), all at
//! one point in time, so no write (and no transaction, whose commit holds
//! the locks of its shards) is seen in part within a chunk. `range` and
//! `range_prefix` read their whole result as one chunk; the lazy readers
//! read chunks of [`CHUNK`] keys and go on after the last key they
//! examined, so across chunks they see each key as it was when its chunk
//! was read (see `EmdbRangeIter`).

use std::ops::Bound;
use std::sync::Arc;

use crossbeam_epoch as epoch;
use smallvec::SmallVec;

use super::chunk::Sink;
use super::shard::Shard;
use super::State;
use crate::error::{Error, Result};
use crate::log::frame::{self, unpack_pos, Kind};
use crate::log::segment::Segment;
use crate::log::segtable::SegTable;
use crate::sorted::{cmp_headed, key_head, Keys, Ordered, SortedKeys};

/// Keys a lazy range iterator examines per chunk (its lock hold).
pub(crate) const CHUNK: usize = 128;

/// Shards whose per-read state a range read keeps on the stack.
const SHARDS_INLINE: usize = 8;

/// Frames the rebuild at open fetches into the cache together.
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

/// A range's upper bound with its key's head ([`key_head`]) worked out
/// once: the merge checks every key against it.
#[derive(Clone, Copy)]
enum End<'a> {
    Unbounded,
    Included(u64, &'a [u8]),
    Excluded(u64, &'a [u8]),
}

impl<'a> End<'a> {
    fn new(to: Bound<&'a [u8]>) -> End<'a> {
        match to {
            Bound::Unbounded => End::Unbounded,
            Bound::Included(e) => End::Included(key_head(e), e),
            Bound::Excluded(e) => End::Excluded(key_head(e), e),
        }
    }

    /// Whether `key`, whose head is `head`, is below this bound.
    #[inline]
    fn admits(self, head: u64, key: &[u8]) -> bool {
        match self {
            End::Unbounded => true,
            End::Included(h, e) => cmp_headed(head, key, h, e).is_le(),
            End::Excluded(h, e) => cmp_headed(head, key, h, e).is_lt(),
        }
    }
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
        let mut items = Vec::new();
        self.range_chunk(ns, from, to, usize::MAX, &mut items)?;
        Ok(items)
    }

    /// Reads into `out` the live records of namespace `ns` with keys in
    /// `(from, to)`, in ascending key order, at one point in time (every
    /// shard's lock held): of the first `limit` keys of the range in the
    /// ordered index (records expired or damaged are skipped, as `iter`
    /// skips them). Returns the last key examined when the limit stopped
    /// the read with more of the range to come (the next chunk starts
    /// after it), `None` once the range is done.
    pub(crate) fn range_chunk(
        &self,
        ns: u32,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        limit: usize,
        out: &mut impl Sink,
    ) -> Result<Option<Vec<u8>>> {
        check_enabled(self)?;
        // Arrays of one entry per shard, on the stack for up to `SHARDS_INLINE`
        // shards: a short scan's allocations weighed on it.
        let guards: SmallVec<[_; SHARDS_INLINE]> = self.shards.iter().map(|s| s.lock()).collect();
        let guard = epoch::pin();
        // Each shard's keys from `from` on, with its segments: every
        // shard's first block is sought (and asked into the cache) before
        // any is searched.
        let seeks: SmallVec<[_; SHARDS_INLINE]> = guards
            .iter()
            .zip(self.shards.iter())
            .filter_map(|(g, shard)| {
                let seek = g.ordered.as_ref()?.get(ns)?.seek(from);
                Some((seek, shard.segments(&guard)))
            })
            .collect();
        let mut heads: SmallVec<[Head<'_>; SHARDS_INLINE]> = seeks
            .into_iter()
            .map(|(seek, segs)| Head::new(seek.keys(), segs))
            .collect();
        // A plain slice for the merge: a `SmallVec` checks where its items
        // are at every access.
        let heads = &mut heads[..];
        let mut reader = Pipeline::new(self, ns);
        let end = End::new(to);
        let mut examined = 0;
        let mut last: Option<&[u8]> = None;
        loop {
            // The head with the least key (two shards: one comparison,
            // its outcome applied with masks, not a branch).
            let best = least(heads);
            let in_range = best.filter(|&i| end.admits(heads[i].head, heads[i].key));
            match in_range.filter(|_| examined < limit) {
                Some(i) => {
                    let head = &mut heads[i];
                    let key = head.key;
                    reader.push(key, head.segs, head.loc, out);
                    head.advance();
                    examined += 1;
                    last = Some(key);
                }
                None => {
                    reader.finish(out);
                    // The range ended, or the limit was reached with more
                    // to come (then the next chunk starts after the last
                    // key).
                    let more = in_range.is_some();
                    return Ok(last.filter(|_| more).map(<[u8]>::to_vec));
                }
            }
        }
    }
}

/// The live head with the least key, `None` when none is live. The
/// winner changes from key to key at random (keys are spread over the
/// shards by hash), so the outcome of comparing the heads' first eight
/// bytes is applied with masks, not a branch on which head wins. Heads
/// that tie there take a branch and compare their bytes: rare when keys
/// differ early, a guess as hard as before when they share eight bytes.
#[inline]
fn least(heads: &[Head<'_>]) -> Option<usize> {
    let (first, rest) = heads.split_first()?;
    let mut b = 0;
    let (mut bh, mut blive) = (first.head, first.live);
    for (i, h) in rest.iter().enumerate() {
        let i = i + 1;
        let better = if h.live && blive && h.head == bh {
            h.key < heads[b].key
        } else {
            h.live & (!blive | (h.head < bh))
        };
        // All ones when `better`: masks, so no branch is left to guess.
        let m = (better as u64).wrapping_neg();
        b = (i & m as usize) | (b & !m as usize);
        bh = (h.head & m) | (bh & !m);
        blive |= h.live;
    }
    blive.then_some(b)
}

/// One shard's keys in a range read: the next one (if `live`) with its
/// location and head (`key_head`), and the shard's segment table. Kept
/// as plain fields, not an `Option` of a tuple: the merge reads them
/// right after `advance` writes them, and a tuple copied through the
/// stack in pieces stalled that read on every key.
struct Head<'a> {
    keys: Keys<'a>,
    live: bool,
    key: &'a [u8],
    loc: u64,
    head: u64,
    segs: &'a SegTable,
}

impl<'a> Head<'a> {
    fn new(keys: Keys<'a>, segs: &'a SegTable) -> Head<'a> {
        let mut h = Head {
            keys,
            live: false,
            key: &[],
            loc: 0,
            head: 0,
            segs,
        };
        h.advance();
        h
    }

    #[inline]
    fn advance(&mut self) {
        match self.keys.next() {
            Some((key, loc)) => {
                self.live = true;
                self.key = key;
                self.loc = loc;
                self.head = key_head(key);
            }
            None => self.live = false,
        }
    }
}

/// Records a range read has in flight: key `i`'s frame is prefetched when
/// the key comes out of the merge and read [`AHEAD`] keys later, so the
/// cache misses of that many frames overlap.
const AHEAD: usize = 8;

/// A key in a scan's pipeline: the key, the segment its location names
/// and the location.
type InFlight<'a> = (&'a [u8], Option<&'a Arc<Segment>>, u64);

/// The reads of one chunk, every shard's lock held (so each key's location
/// in the ordered index is the one its hash-index slot holds).
struct Pipeline<'a> {
    state: &'a State,
    ns: u32,
    /// Keys in flight, key `i` at `i % AHEAD`: the key, the segment its
    /// location names (looked up once, for the prefetch) and the location
    /// the ordered index gives.
    ring: [InFlight<'a>; AHEAD],
    /// Keys pushed so far.
    pushed: usize,
    /// The database is not encrypted: records are read in place.
    plain: bool,
    /// Bytes of each frame to prefetch: the length of the last frame read
    /// (records of a range are often alike in size), [`FRAME_GUESS`]
    /// before the first.
    span: usize,
}

impl<'a> Pipeline<'a> {
    fn new(state: &'a State, ns: u32) -> Pipeline<'a> {
        Pipeline {
            state,
            ns,
            ring: [(&[][..], None, 0); AHEAD],
            pushed: 0,
            plain: state.ctx.crypto.is_none(),
            span: FRAME_GUESS,
        }
    }

    #[inline]
    fn push(&mut self, key: &'a [u8], segs: &'a SegTable, loc: u64, out: &mut impl Sink) {
        let i = self.pushed;
        if i >= AHEAD {
            self.read(i - AHEAD, out);
        }
        let (sid, off) = unpack_pos(loc);
        let seg = segs.get(sid);
        if let Some(seg) = seg {
            seg.prefetch(off, self.span);
        }
        self.ring[i % AHEAD] = (key, seg, loc);
        self.pushed += 1;
    }

    /// Reads every key still in flight.
    fn finish(&mut self, out: &mut impl Sink) {
        let n = self.pushed;
        for i in n.saturating_sub(AHEAD)..n {
            self.read(i, out);
        }
    }

    /// Reads key `i`'s live record into `out` from its location, checked
    /// as a point read checks the frame its slot points to. A damaged
    /// record is skipped here, as iterators skip it (a point read of it
    /// reports the damage); so is one that expired.
    #[inline]
    fn read(&mut self, i: usize, out: &mut impl Sink) {
        let (key, seg, loc) = self.ring[i % AHEAD];
        let (state, ns) = (self.state, self.ns);
        #[cfg(debug_assertions)]
        self.check_location(key, loc);
        let (_, off) = unpack_pos(loc);
        // The common case, read in place: a plaintext record in the
        // file's bytes whose checksum was checked once already
        // (`Segment::needs_crc`).
        if let Some(seg) = seg.filter(|s| self.plain && !s.needs_crc(off)) {
            if let Some(b) = seg.written_frame(off) {
                if let Some((both, expires_at)) = frame::plain_record(b, ns, key) {
                    self.span = b.len().min(FRAME_SPAN_MAX);
                    if !super::ttl::is_expired(expires_at) {
                        out.take_record(both, key.len());
                    }
                    return;
                }
            }
        }
        // The read may run twice (a tail buffer's bytes reread from the
        // file): the second copy replaces the first.
        let n = out.count();
        let mut take = |_: &Arc<Segment>, _: u32, fr: &frame::Frame<'_>| {
            if out.count() != n {
                out.cut(n);
            }
            out.take(fr);
        };
        // An encrypted frame's key is checked by its MAC.
        let keyed = state.ctx.crypto.is_some().then(|| state.ctx.keyed(ns, key));
        let mac = keyed.and_then(|k| k.1);
        let mut len = self.span;
        let read = seg.and_then(|seg| {
            seg.with_frame(off, |b| {
                len = b.len();
                state
                    .read_frame(ns, key, mac, seg, off, b, true, true, &mut take)
                    .is_some()
            })
        });
        self.span = len.min(FRAME_SPAN_MAX);
        // Not this key's record there (which the locking rules out unless
        // the bytes were damaged): the point read's whole probe decides.
        if read != Some(true) {
            let keyed = keyed.unwrap_or_else(|| state.ctx.keyed(ns, key));
            let _ = state.find_keyed(ns, key, keyed, true, true, take);
        }
    }
}

#[cfg(debug_assertions)]
impl Pipeline<'_> {
    /// The invariant the reads rely on: a key's location in the ordered
    /// index is the one its hash-index slot holds (checked in debug builds,
    /// so every test that scans checks it).
    fn check_location(&self, key: &[u8], loc: u64) {
        let (h, _) = self.state.ctx.keyed(self.ns, key);
        let shard = &self.state.shards[self.state.ctx.shard_of(h)];
        let guard = epoch::pin();
        let slot = shard.indexes.get(self.ns, &guard).and_then(|ix| {
            ix.find_map(h, &guard, |l| {
                let (sid, off) = unpack_pos(l);
                let seg = shard.segments(&guard).get(sid)?;
                seg.with_frame(off, |b| {
                    let f = frame::decode_unchecked(b).ok()?;
                    (f.kind == Kind::Put && f.namespace == self.ns).then_some(())
                })?;
                Some(l)
            })
        });
        assert_eq!(slot, Some(loc), "a key's ordered location is its slot's");
    }
}

/// Bytes of a frame a scan prefetches before it has read one: a 24-byte
/// key with a 150-byte value takes 210 bytes.
const FRAME_GUESS: usize = 256;

/// The most bytes of a frame a scan prefetches: a larger value's first
/// lines are asked in, and the copy streams the rest.
const FRAME_SPAN_MAX: usize = 512;

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
                        spans.push(Span::new(bytes.len(), f.key, loc));
                        bytes.extend_from_slice(f.key);
                    });
                }
            }
            let key = |s: &Span| &bytes[s.off..s.off + s.len];
            spans.sort_unstable_by(|a, b| cmp_headed(a.head, key(a), b.head, key(b)));
            spans.dedup_by(|a, b| key(a) == key(b));
            if !spans.is_empty() {
                ordered.set(
                    ns,
                    SortedKeys::from_sorted(spans.iter().map(|s| (key(s), s.loc))),
                );
            }
        });
        self.lock().ordered = Some(ordered);
    }
}

/// A key in the rebuild's buffer, with its head (`sorted::key_head`) and
/// its record's location.
struct Span {
    head: u64,
    off: usize,
    len: usize,
    loc: u64,
}

impl Span {
    fn new(off: usize, key: &[u8], loc: u64) -> Span {
        Span {
            head: key_head(key),
            off,
            len: key.len(),
            loc,
        }
    }
}
