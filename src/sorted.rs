//! The ordered index behind range scans: a sorted set of byte keys, each
//! with the location of its record, kept in blocks of up to [`BLOCK_MAX`]
//! keys stored back to back.
//!
//! One set per shard and namespace, changed and read under the shard lock
//! (see `engine::range`). Each key's location is the one its hash-index
//! slot holds: every write that points a slot somewhere (a new key, an
//! overwrite, a compaction move) points the key here too, under the same
//! lock, so a scan reads each record straight from its location, without
//! hashing the key or probing the hash index.
//!
//! A block is one buffer: each key's location (8 bytes) and, if the
//! block's keys differ in length, its end offset (4 bytes), then the keys'
//! bytes concatenated, so a 24-byte key costs 32 bytes among keys of its
//! length (36 among others) and a little slack (a buffer grows by a size
//! class, an eighth at a time). The buffers come from the set's own arena
//! ([`crate::arena`]), in 2 MiB pages once the set is larger than a few
//! MiB: a seek then costs no TLB miss for its block. Blocks are
//! found by their lower fence in a `BTreeMap`: the first block's fence is
//! the empty key, so every key has a block; a split gives the new right half its first key as
//! fence; a block that empties is removed (its range falls to the block
//! before it). `benches/ranges.rs` compares this with a `crossbeam-skiplist`
//! map of the same keys (the design's first choice): ARCHITECTURE.md, "Range
//! scans", has the figures.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;

use crate::arena::{Arena, Buf};

/// Keys per block before it splits in two.
const BLOCK_MAX: usize = 128;

/// A set is rebuilt in a fresh arena ([`SortedKeys::remove`]) once the
/// bytes on its free lists exceed half the bytes its blocks use plus this.
/// A rebuilt set's free lists are empty, so a rebuild is not followed by
/// another until removals free as much again.
const REPACK_SLACK: usize = 16 << 10;

/// The `klen` of a block whose keys differ in length: it keeps each key's
/// end offset.
const VARIED: u32 = u32::MAX;

/// Up to [`BLOCK_MAX`] keys (one more while it splits) in one arena
/// buffer ([`crate::arena`]): each key's location (8 bytes) for `capk`
/// keys, then, if the keys differ in length, each key's end offset in the
/// key bytes (4 bytes) for `capk` keys, then the keys' bytes back to back.
/// One buffer, not three allocations: a seek that lands in a block touches
/// one region of memory, in 2 MiB pages. Keys of one length (ids, hashes,
/// fixed-width encodings) need no offsets: key `i` starts at `i * klen`.
struct Block {
    buf: Buf,
    locs: *mut u64,
    /// Unused (and no room kept) while the keys are of one length.
    ends: *mut u32,
    bytes: *mut u8,
    /// Keys the buffer has room for.
    capk: u32,
    /// Key bytes the buffer has room for.
    capb: u32,
    /// Keys held.
    n: u32,
    /// Key bytes held.
    used: u32,
    /// Every key's length while all are alike (any length fits a block
    /// with no keys), or [`VARIED`].
    klen: u32,
}

// SAFETY: a block owns its buffer (its set's arena only recycles it once
// the block gives it back); shared access reads only.
unsafe impl Send for Block {}
// SAFETY: as above: `&Block` hands out shared slices only.
unsafe impl Sync for Block {}

impl Block {
    /// An empty block holding no buffer.
    fn empty() -> Block {
        Block::in_buf(Buf::EMPTY, 0, 0)
    }

    /// Bytes per key besides the key: the location, and the end offset
    /// when the keys differ in length.
    #[inline]
    fn slot(klen: u32) -> usize {
        if klen == VARIED {
            12
        } else {
            8
        }
    }

    #[inline]
    fn varied(&self) -> bool {
        self.klen == VARIED
    }

    /// A block of room for `keys` keys and `bytes` key bytes (keys of
    /// length `klen`, or [`VARIED`]; more room if the arena's size class
    /// leaves more).
    fn with_capacity(arena: &mut Arena, keys: usize, bytes: usize, klen: u32) -> Block {
        let bytes = if klen == VARIED {
            bytes
        } else {
            keys * klen as usize
        };
        if keys == 0 && bytes == 0 {
            return Block::in_buf(Buf::EMPTY, 0, klen);
        }
        Block::in_buf(arena.alloc(Block::slot(klen) * keys + bytes), keys, klen)
    }

    /// An empty block laid out in `buf` with room for `capk` keys (keys of
    /// one length: as many as the buffer holds); the rest of the buffer
    /// holds key bytes.
    fn in_buf(buf: Buf, capk: usize, klen: u32) -> Block {
        let capk = if klen == VARIED {
            capk
        } else {
            buf.cap / (8 + klen as usize)
        };
        let slot = Block::slot(klen);
        assert!(buf.cap >= slot * capk);
        let p = buf.ptr.as_ptr();
        Block {
            buf,
            locs: p.cast::<u64>(),
            // In bounds: at most the buffer's end (checked above).
            ends: p.wrapping_add(8 * capk).cast::<u32>(),
            bytes: p.wrapping_add(slot * capk),
            capk: capk as u32,
            capb: (buf.cap - slot * capk) as u32,
            n: 0,
            used: 0,
            klen,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.n as usize
    }

    #[inline]
    fn locs(&self) -> &[u64] {
        // SAFETY: `n` initialized locations at `locs`, 8-aligned (the
        // buffer's start), for as long as the block holds the buffer.
        unsafe { std::slice::from_raw_parts(self.locs, self.len()) }
    }

    /// The end offsets (none while the keys are of one length).
    #[inline]
    fn ends(&self) -> &[u32] {
        let n = if self.varied() { self.len() } else { 0 };
        // SAFETY: while varied, `n` initialized offsets at `ends`,
        // 4-aligned.
        unsafe { std::slice::from_raw_parts(self.ends, n) }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `used` initialized key bytes at `bytes`.
        unsafe { std::slice::from_raw_parts(self.bytes, self.used as usize) }
    }

    #[inline]
    fn loc(&self, i: usize) -> u64 {
        self.locs()[i]
    }

    fn set_loc(&mut self, i: usize, loc: u64) {
        assert!(i < self.len());
        // SAFETY: in bounds (checked); the block owns its buffer.
        unsafe { self.locs.add(i).write(loc) };
    }

    /// Where key `i` starts in the key bytes (`i <= len`).
    #[inline]
    fn start(&self, i: usize) -> usize {
        if !self.varied() {
            i * self.klen as usize
        } else if i == 0 {
            0
        } else {
            self.ends()[i - 1] as usize
        }
    }

    /// Where key `i` ends in the key bytes.
    #[inline]
    fn end(&self, i: usize) -> usize {
        if self.varied() {
            self.ends()[i] as usize
        } else {
            (i + 1) * self.klen as usize
        }
    }

    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes()[self.start(i)..self.end(i)]
    }

    /// Where `key` is or would go (see [`Block::prefetch`] first).
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let head = key_head(key);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = self.key(mid);
            // Most probes are settled by the first eight bytes.
            match cmp_headed(key_head(at), at, head, key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Asks every line of the offsets and keys into the cache at once: a
    /// binary search of a block not in the cache would otherwise wait for
    /// its lines one after another (a probe's line decides the next probe).
    #[inline]
    fn prefetch(&self) {
        for line in self.ends().chunks(16) {
            crate::index::prefetch(line.as_ptr());
        }
        for line in self.bytes().chunks(64) {
            crate::index::prefetch(line.as_ptr());
        }
    }

    /// Asks the first lines of the offsets, keys and locations into the
    /// cache (a walk about to reach this block reads them first).
    #[inline]
    fn prefetch_start(&self) {
        if self.varied() {
            crate::index::prefetch(self.ends);
        }
        crate::index::prefetch(self.bytes);
        crate::index::prefetch(self.bytes.wrapping_add(64));
        crate::index::prefetch(self.locs);
    }

    /// Makes room for `keys` more keys and `bytes` more key bytes: room
    /// for an eighth more keys than needed, and the key bytes needed
    /// rounded up by the arena's size class (up to an eighth more; keys of
    /// one length: the bytes of the keys there is room for); the old
    /// buffer is given back. (Key bytes grown by an extra eighth too left
    /// less in the free lists but more slack in the blocks, more in all:
    /// ARCHITECTURE.md, "Blocks in 2 MiB pages".)
    fn reserve(&mut self, arena: &mut Arena, keys: usize, bytes: usize) {
        let (k, b) = (self.len() + keys, self.used as usize + bytes);
        if k <= self.capk as usize && b <= self.capb as usize {
            return;
        }
        // Offsets are 4 bytes: the configuration keeps keys short enough
        // (`max_key_len` at most 16 MiB with range scans), this stops
        // anything else before it could write past a buffer.
        assert!(b <= u32::MAX as usize, "a block's keys take over 4 GiB");
        let capk = (k + (k / 8).max(4)).min(BLOCK_MAX + 1).max(k);
        self.relayout(arena, capk, b, self.klen);
    }

    /// Moves the block into a buffer of room for `capk` keys and `capb`
    /// key bytes (both at least what it holds), laid out for keys of
    /// length `klen` (its own, or [`VARIED`]).
    fn relayout(&mut self, arena: &mut Arena, capk: usize, capb: usize, klen: u32) {
        debug_assert!(capk >= self.len() && capb >= self.used as usize);
        debug_assert!(klen == self.klen || klen == VARIED);
        let mut new = Block::with_capacity(arena, capk, capb, klen);
        new.copy_from(self, 0, self.len());
        arena.free(std::mem::replace(self, new).buf);
    }

    /// Appends keys `from..to` of `src` (with their locations) to this
    /// block, which has room for them and keeps offsets unless `src`'s
    /// keys have its length.
    fn copy_from(&mut self, src: &Block, from: usize, to: usize) {
        if from == to {
            return;
        }
        let (n, used) = (self.len(), self.used as usize);
        let keys = to - from;
        let cut = src.start(from);
        let bytes = &src.bytes()[cut..src.end(to - 1)];
        assert!(self.varied() || src.klen == self.klen);
        assert!(n + keys <= self.capk as usize && used + bytes.len() <= self.capb as usize);
        // SAFETY: in bounds of this block's arrays (checked above); the
        // two blocks are different buffers.
        unsafe {
            std::ptr::copy_nonoverlapping(src.locs.add(from), self.locs.add(n), keys);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.bytes.add(used), bytes.len());
            if self.varied() {
                for j in 0..keys {
                    let end = src.end(from + j) - cut + used;
                    self.ends.add(n + j).write(end as u32);
                }
            }
        }
        self.n += keys as u32;
        self.used += bytes.len() as u32;
    }

    /// Makes this block able to take `keys` more keys of `bytes` bytes, of
    /// length `klen` ([`VARIED`]: of several lengths): an empty block takes
    /// that length on, one whose keys have another length starts keeping
    /// offsets.
    fn fit(&mut self, arena: &mut Arena, keys: usize, bytes: usize, klen: u32) {
        if self.varied() || klen == self.klen {
            // As it is.
        } else if self.len() == 0 {
            self.release(arena);
            self.klen = klen;
        } else {
            let (k, b) = (self.len() + keys, self.used as usize + bytes);
            let capk = (k + (k / 8).max(4)).min(BLOCK_MAX + 1).max(k);
            self.relayout(arena, capk, b, VARIED);
        }
        self.reserve(arena, keys, bytes);
    }

    fn insert_at(&mut self, arena: &mut Arena, i: usize, key: &[u8], loc: u64) {
        self.fit(arena, 1, key.len(), key.len() as u32);
        let (n, used, at, kl) = (self.len(), self.used as usize, self.start(i), key.len());
        assert!(i <= n);
        // SAFETY: `fit` made room for one more key and its bytes; the
        // moves stay inside the arrays (`at <= used`, `i <= n`).
        unsafe {
            std::ptr::copy(self.bytes.add(at), self.bytes.add(at + kl), used - at);
            std::ptr::copy_nonoverlapping(key.as_ptr(), self.bytes.add(at), kl);
            std::ptr::copy(self.locs.add(i), self.locs.add(i + 1), n - i);
            self.locs.add(i).write(loc);
            if self.varied() {
                std::ptr::copy(self.ends.add(i), self.ends.add(i + 1), n - i);
                self.ends.add(i).write((at + kl) as u32);
                for j in i + 1..=n {
                    *self.ends.add(j) += kl as u32;
                }
            }
        }
        self.n += 1;
        self.used += kl as u32;
    }

    fn remove_at(&mut self, arena: &mut Arena, i: usize) {
        let (n, used) = (self.len(), self.used as usize);
        let (s, e) = (self.start(i), self.end(i));
        let kl = e - s;
        // SAFETY: key `i` exists (its end was read above); the moves stay
        // inside the arrays.
        unsafe {
            std::ptr::copy(self.bytes.add(e), self.bytes.add(s), used - e);
            std::ptr::copy(self.locs.add(i + 1), self.locs.add(i), n - i - 1);
            if self.varied() {
                std::ptr::copy(self.ends.add(i + 1), self.ends.add(i), n - i - 1);
                for j in i..n - 1 {
                    *self.ends.add(j) -= kl as u32;
                }
            }
        }
        self.n -= 1;
        self.used -= kl as u32;
        // Give back what removals freed, keeping an eighth of slack.
        let need = Block::slot(self.klen) * self.len() + self.used as usize;
        if self.buf.cap > 2 * need + 64 {
            let (k, b) = (self.len(), self.used as usize);
            self.relayout(arena, k + k / 8, b + b / 8, self.klen);
        }
    }

    fn push(&mut self, arena: &mut Arena, key: &[u8], loc: u64) {
        self.insert_at(arena, self.len(), key, loc);
    }

    /// Appends every key of `src` (which follows this block's).
    fn absorb(&mut self, arena: &mut Arena, src: &Block) {
        self.fit(arena, src.len(), src.used as usize, src.klen);
        self.copy_from(src, 0, src.len());
    }

    /// Moves the upper half into a new block; both are left with little
    /// room to spare.
    fn split_off(&mut self, arena: &mut Arena) -> Block {
        let (n, mid) = (self.len(), self.len() / 2);
        let cut = self.start(mid);
        let mut right = Block::with_capacity(arena, n - mid, self.used as usize - cut, self.klen);
        right.copy_from(self, mid, n);
        self.n = mid as u32;
        self.used = cut as u32;
        self.relayout(arena, mid, cut, self.klen);
        right
    }

    /// Gives the buffer back to `arena`; the block is empty after (its
    /// keys' length kept).
    fn release(&mut self, arena: &mut Arena) {
        let klen = self.klen;
        arena.free(std::mem::replace(self, Block::empty()).buf);
        self.klen = klen;
    }
}

/// A block's lower fence: its key, and the key's first eight bytes as a
/// number (zero-padded, big-endian). The derived order (number, then key)
/// is the keys' byte order, and it settles most comparisons of a search
/// without following the box.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Fence {
    head: u64,
    key: Box<[u8]>,
}

impl Fence {
    fn new(key: &[u8]) -> Fence {
        Fence {
            head: key_head(key),
            key: key.into(),
        }
    }
}

/// A fence as searches see it: a stored [`Fence`], or a [`Probe`] that
/// borrows the key looked for, so a search allocates nothing. Both order
/// as `Fence` derives it: head, then key.
trait FenceKey {
    fn head(&self) -> u64;
    fn key(&self) -> &[u8];
}

impl FenceKey for Fence {
    fn head(&self) -> u64 {
        self.head
    }
    fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The fence a search looks for.
struct Probe<'a> {
    head: u64,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(key: &'a [u8]) -> Probe<'a> {
        Probe {
            head: key_head(key),
            key,
        }
    }
}

impl FenceKey for Probe<'_> {
    fn head(&self) -> u64 {
        self.head
    }
    fn key(&self) -> &[u8] {
        self.key
    }
}

impl<'a> std::borrow::Borrow<dyn FenceKey + 'a> for Fence {
    fn borrow(&self) -> &(dyn FenceKey + 'a) {
        self
    }
}

impl Ord for dyn FenceKey + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        cmp_headed(self.head(), self.key(), other.head(), other.key())
    }
}

impl PartialOrd for dyn FenceKey + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn FenceKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for dyn FenceKey + '_ {}

/// The bound of every fence at or below `probe`.
fn up_to<'p>(probe: &'p Probe<'_>) -> (Bound<&'p dyn FenceKey>, Bound<&'p dyn FenceKey>) {
    (Bound::Unbounded, Bound::Included(probe as &dyn FenceKey))
}

/// The first eight bytes of `key` as a number that orders like them
/// (zero-padded, big-endian): keys whose heads differ compare as their
/// heads do; equal heads leave it to the bytes (a shorter key that is a
/// prefix of a longer one ties with it here).
#[inline]
pub(crate) fn key_head(key: &[u8]) -> u64 {
    if let Some(head) = key.first_chunk::<8>() {
        return u64::from_be_bytes(*head);
    }
    let mut head = [0u8; 8];
    head[..key.len()].copy_from_slice(key);
    u64::from_be_bytes(head)
}

/// The byte order of keys `a` and `b` given their heads ([`key_head`]):
/// the heads decide when they differ, as they nearly always do, and the
/// bytes only when they tie.
#[inline]
pub(crate) fn cmp_headed(ha: u64, a: &[u8], hb: u64, b: &[u8]) -> std::cmp::Ordering {
    ha.cmp(&hb).then_with(|| a.cmp(b))
}

/// A sorted set of byte keys (see the module doc).
pub(crate) struct SortedKeys {
    blocks: BTreeMap<Fence, Block>,
    /// Where the blocks' buffers live.
    arena: Arena,
    len: usize,
    /// Rebuilds so far (tests check they do not repeat).
    #[cfg(test)]
    repacks: usize,
}

impl Default for SortedKeys {
    fn default() -> Self {
        let mut blocks = BTreeMap::new();
        blocks.insert(Fence::new(&[]), Block::empty());
        SortedKeys {
            blocks,
            arena: Arena::default(),
            len: 0,
            #[cfg(test)]
            repacks: 0,
        }
    }
}

impl Drop for SortedKeys {
    fn drop(&mut self) {
        for b in self.blocks.values_mut() {
            b.release(&mut self.arena);
        }
    }
}

/// The block whose range holds `key`, asked into the cache.
fn block_mut<'b>(blocks: &'b mut BTreeMap<Fence, Block>, key: &[u8]) -> (&'b Fence, &'b mut Block) {
    let probe = Probe::new(key);
    blocks
        .range_mut::<dyn FenceKey, _>(up_to(&probe))
        .next_back()
        .map(|(f, b)| {
            b.prefetch();
            (f, b)
        })
        .expect("the first block's fence is the empty key")
}

impl SortedKeys {
    /// A set of `keys` with their locations, which must be sorted and
    /// distinct: blocks are filled to three quarters, leaving room for
    /// inserts.
    pub(crate) fn from_sorted<'a>(keys: impl IntoIterator<Item = (&'a [u8], u64)>) -> SortedKeys {
        let mut set = SortedKeys::default();
        let fill = BLOCK_MAX * 3 / 4;
        let mut keys = keys.into_iter().peekable();
        let mut fence = Fence::new(&[]);
        let mut batch: Vec<(&[u8], u64)> = Vec::with_capacity(fill);
        loop {
            batch.clear();
            batch.extend(keys.by_ref().take(fill));
            if batch.is_empty() {
                break;
            }
            // Each block's buffer sized for its keys and an eighth more
            // (no buffer outgrown and freed on the way: a rebuilt set's
            // free lists are empty).
            let first = batch[0].0.len();
            let klen = if batch.iter().all(|(k, _)| k.len() == first) {
                first as u32
            } else {
                VARIED
            };
            let bytes: usize = batch.iter().map(|(k, _)| k.len()).sum();
            let mut block =
                Block::with_capacity(&mut set.arena, fill + fill / 8, bytes + bytes / 8, klen);
            for &(k, loc) in &batch {
                block.push(&mut set.arena, k, loc);
            }
            set.len += batch.len();
            let next = keys.peek().map(|&(k, _)| Fence::new(k));
            set.put_block(fence, block);
            match next {
                Some(f) => fence = f,
                None => break,
            }
        }
        set
    }

    /// Adds a block under `fence`, giving back the buffer of any block it
    /// replaces.
    fn put_block(&mut self, fence: Fence, block: Block) {
        if let Some(mut old) = self.blocks.insert(fence, block) {
            old.release(&mut self.arena);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Adds `key` at `loc`, or points it at `loc` if it is there; true if
    /// it was not.
    pub(crate) fn insert(&mut self, key: &[u8], loc: u64) -> bool {
        let (_, block) = block_mut(&mut self.blocks, key);
        let i = match block.search(key) {
            Ok(i) => {
                block.set_loc(i, loc);
                return false;
            }
            Err(i) => i,
        };
        block.insert_at(&mut self.arena, i, key, loc);
        if block.len() > BLOCK_MAX {
            let right = block.split_off(&mut self.arena);
            let fence = Fence::new(right.key(0));
            self.put_block(fence, right);
        }
        self.len += 1;
        true
    }

    /// Removes `key`; false if it was not there. A block left with
    /// under a quarter of [`BLOCK_MAX`] keys is merged with its neighbour
    /// (the one before, else the one after) if both fit in half a block;
    /// an empty block goes. A set whose free lists hold more than half
    /// what its blocks use, and [`REPACK_SLACK`] more (after many
    /// removals), is rebuilt in a fresh arena, which gives the memory back.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        let (fence, block) = block_mut(&mut self.blocks, key);
        let Ok(i) = block.search(key) else {
            return false;
        };
        block.remove_at(&mut self.arena, i);
        let (fence, left) = (fence.clone(), block.len());
        self.len -= 1;
        if left == 0 && !fence.key.is_empty() {
            if let Some(mut gone) = self.blocks.remove(&fence) {
                gone.release(&mut self.arena);
            }
        } else if left < BLOCK_MAX / 4 {
            let fits =
                |(f, b): (&Fence, &Block)| (left + b.len() <= BLOCK_MAX / 2).then(|| f.clone());
            let before = self
                .blocks
                .range::<Fence, _>(..&fence)
                .next_back()
                .and_then(fits);
            let after = || {
                self.blocks
                    .range::<Fence, _>((Bound::Excluded(&fence), Bound::Unbounded))
                    .next()
                    .and_then(fits)
            };
            // (into, from): `from` follows `into`, so `into`'s fence stays.
            let pair = match before {
                Some(b) => Some((b, fence)),
                None => after().map(|a| (fence, a)),
            };
            if let Some((into, from)) = pair {
                let mut from = self.blocks.remove(&from).expect("listed");
                let into = self.blocks.get_mut(&into).expect("listed");
                into.absorb(&mut self.arena, &from);
                from.release(&mut self.arena);
            }
        }
        if self.arena.free_bytes() > self.arena.in_use() / 2 + REPACK_SLACK {
            self.repack();
        }
        true
    }

    /// Rebuilds the set in a new arena, its blocks three-quarters full,
    /// giving the old arena's memory back.
    fn repack(&mut self) {
        let packed = SortedKeys::from_sorted(self.iter_all());
        #[cfg(test)]
        let repacks = self.repacks + 1;
        *self = packed;
        #[cfg(test)]
        {
            self.repacks = repacks;
        }
    }

    /// Every key with its location, ascending.
    fn iter_all(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.blocks
            .values()
            .flat_map(|b| (0..b.len()).map(move |i| (b.key(i), b.loc(i))))
    }

    /// Points `key` at `loc` if the set has it (a compaction moved its
    /// record); false if it has not.
    pub(crate) fn relocate(&mut self, key: &[u8], loc: u64) -> bool {
        let (_, block) = block_mut(&mut self.blocks, key);
        match block.search(key) {
            Ok(i) => {
                block.set_loc(i, loc);
                true
            }
            Err(_) => false,
        }
    }

    /// The keys from `from` on, ascending, each with its location.
    #[cfg(any(test, feature = "bench-internals"))]
    pub(crate) fn iter_from(&self, from: Bound<&[u8]>) -> Keys<'_> {
        self.seek(from).keys()
    }

    /// The block where the keys from `from` on start, asked into the
    /// cache: [`Seek::keys`] then searches it. A read of several sets
    /// seeks in all of them first, so that their blocks' cache misses
    /// overlap.
    pub(crate) fn seek<'k>(&self, from: Bound<&'k [u8]>) -> Seek<'_, 'k> {
        let (key, skip_equal) = match from {
            Bound::Unbounded => (&[][..], false),
            Bound::Included(k) => (k, false),
            Bound::Excluded(k) => (k, true),
        };
        let probe = Probe::new(key);
        let (fence, block) = self
            .blocks
            .range::<dyn FenceKey, _>(up_to(&probe))
            .next_back()
            .expect("the first block's fence is the empty key");
        block.prefetch();
        Seek {
            set: self,
            fence,
            block,
            key,
            skip_equal,
        }
    }

    /// Bytes of the arena's huge-page mappings (not from the general
    /// allocator).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.arena.mapped()
    }

    /// Heap bytes held: the arena's memory (blocks' buffers and what it
    /// keeps free), and the B-tree of fences.
    pub(crate) fn memory_bytes(&self) -> usize {
        // A B-tree entry: the fence and the block's header, plus the
        // node's share (about a third again).
        let per_block = (std::mem::size_of::<Fence>() + std::mem::size_of::<Block>()) * 4 / 3;
        self.arena.held()
            + self
                .blocks
                .keys()
                .map(|f| per_block + f.key.len())
                .sum::<usize>()
    }
}

/// Where a read of a [`SortedKeys`] starts, from [`SortedKeys::seek`].
pub(crate) struct Seek<'a, 'k> {
    set: &'a SortedKeys,
    fence: &'a Fence,
    block: &'a Block,
    key: &'k [u8],
    /// The bound excludes `key`.
    skip_equal: bool,
}

impl<'a> Seek<'a, '_> {
    /// The keys from the seek's bound on, ascending, each with its
    /// location.
    pub(crate) fn keys(self) -> Keys<'a> {
        let first = self.block;
        let pos = match first.search(self.key) {
            Ok(i) if self.skip_equal => i + 1,
            Ok(i) | Err(i) => i,
        };
        // The walk reads the locations from `pos` on: ask them in too.
        for line in first.locs().get(pos..).unwrap_or_default().chunks(8) {
            crate::index::prefetch(line.as_ptr());
        }
        Keys {
            set: self.set,
            fence: self.fence,
            rest: None,
            cur: Some(first),
            pos,
        }
    }
}

/// Keys of a [`SortedKeys`] in ascending order, each with its location,
/// from [`Seek::keys`].
pub(crate) struct Keys<'a> {
    set: &'a SortedKeys,
    /// The first block's fence.
    fence: &'a Fence,
    /// The blocks after the first, looked up only once the first is used
    /// up (a short range often ends inside it).
    rest: Option<std::collections::btree_map::Range<'a, Fence, Block>>,
    cur: Option<&'a Block>,
    pos: usize,
}

impl<'a> Iterator for Keys<'a> {
    type Item = (&'a [u8], u64);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], u64)> {
        // The common case, inlined into the scan's merge: the block has
        // another key.
        if let Some(b) = self.cur {
            let i = self.pos;
            if i < b.len() {
                self.pos = i + 1;
                return Some((b.key(i), b.loc(i)));
            }
        }
        self.next_block()
    }
}

impl<'a> Keys<'a> {
    /// The first key of the next block that has one.
    #[inline(never)]
    fn next_block(&mut self) -> Option<(&'a [u8], u64)> {
        loop {
            let b = self.cur?;
            if self.pos < b.len() {
                self.pos += 1;
                return Some((b.key(self.pos - 1), b.loc(self.pos - 1)));
            }
            let (set, fence) = (self.set, self.fence);
            let rest = self.rest.get_or_insert_with(|| {
                set.blocks
                    .range::<Fence, _>((Bound::Excluded(fence), Bound::Unbounded))
            });
            self.cur = rest.next().map(|(_, b)| b);
            self.pos = 0;
            // A walk that reaches this block often goes on to the next:
            // ask for the start of its three arrays while this one is read.
            if let Some((_, after)) = rest.clone().next() {
                after.prefetch_start();
            }
        }
    }
}

/// The ordered indexes of one shard, one [`SortedKeys`] per namespace id
/// that has keys in the shard (kept in the shard's locked state).
#[derive(Default)]
pub(crate) struct Ordered(HashMap<u32, SortedKeys, BuildHasherDefault<NsHasher>>);

/// Hashes a namespace id with one multiplication: the ids are small
/// numbers the engine hands out (no one chooses them to collide), and
/// every range read and every write of a key looks one up (the standard
/// hasher took more instructions than the rest of a one-key seek's
/// lookup).
#[derive(Default)]
pub(crate) struct NsHasher(u64);

impl Hasher for NsHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Ordered {
    pub(crate) fn get(&self, ns: u32) -> Option<&SortedKeys> {
        self.0.get(&ns)
    }

    /// Adds `key` at `loc` to namespace `ns`, or points it at `loc`.
    pub(crate) fn insert(&mut self, ns: u32, key: &[u8], loc: u64) {
        self.0.entry(ns).or_default().insert(key, loc);
    }

    /// Points `key` of namespace `ns` at `loc`, if it is there.
    pub(crate) fn relocate(&mut self, ns: u32, key: &[u8], loc: u64) -> bool {
        self.0.get_mut(&ns).is_some_and(|s| s.relocate(key, loc))
    }

    pub(crate) fn remove(&mut self, ns: u32, key: &[u8]) {
        if let Some(s) = self.0.get_mut(&ns) {
            s.remove(key);
        }
    }

    /// Namespace `ns` becomes `keys` (the rebuild at open).
    pub(crate) fn set(&mut self, ns: u32, keys: SortedKeys) {
        self.0.insert(ns, keys);
    }

    /// Namespace `ns` is emptied (cleared or dropped).
    pub(crate) fn clear(&mut self, ns: u32) {
        self.0.remove(&ns);
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.0.values().map(SortedKeys::memory_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn check(set: &SortedKeys, model: &BTreeMap<Vec<u8>, u64>) {
        assert_eq!(set.len(), model.len());
        let all: Vec<(&[u8], u64)> = set.iter_from(Bound::Unbounded).collect();
        let want: Vec<(&[u8], u64)> = model.iter().map(|(k, l)| (&k[..], *l)).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn matches_a_btreemap_under_random_inserts_moves_removes_and_seeks() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut set = SortedKeys::default();
        let mut model = BTreeMap::new();
        for round in 0..20_000u64 {
            let len = rng.usize(0..6);
            let k: Vec<u8> = (0..len).map(|_| rng.u8(b'a'..b'e')).collect();
            match rng.u8(0..4) {
                0 => assert_eq!(set.remove(&k), model.remove(&k).is_some(), "remove {k:?}"),
                1 => {
                    let had = model.get_mut(&k).map(|l| *l = round).is_some();
                    assert_eq!(set.relocate(&k, round), had, "relocate {k:?}");
                }
                _ => assert_eq!(
                    set.insert(&k, round),
                    model.insert(k.clone(), round).is_none(),
                    "insert {k:?}"
                ),
            }
            if round % 1000 == 0 {
                check(&set, &model);
            }
            let probe: Vec<u8> = (0..rng.usize(0..4)).map(|_| rng.u8(b'a'..b'f')).collect();
            let got: Vec<(&[u8], u64)> = set.iter_from(Bound::Excluded(&probe)).take(3).collect();
            let want: Vec<(&[u8], u64)> = model
                .range::<Vec<u8>, _>((Bound::Excluded(&probe), Bound::Unbounded))
                .take(3)
                .map(|(k, l)| (&k[..], *l))
                .collect();
            assert_eq!(got, want, "after {probe:?}");
            let got: Vec<(&[u8], u64)> = set.iter_from(Bound::Included(&probe)).take(3).collect();
            let want: Vec<(&[u8], u64)> = model
                .range::<Vec<u8>, _>((Bound::Included(&probe), Bound::Unbounded))
                .take(3)
                .map(|(k, l)| (&k[..], *l))
                .collect();
            assert_eq!(got, want, "from {probe:?}");
        }
        check(&set, &model);
        for k in model.keys() {
            assert!(set.remove(k));
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter_from(Bound::Unbounded).count(), 0);
        assert_eq!(set.blocks.len(), 1, "emptied blocks are removed");
    }

    #[test]
    fn from_sorted_builds_the_same_set() {
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut set = SortedKeys::from_sorted(keys.iter().zip(0..).map(|(k, l)| (&k[..], l)));
        let mut model: BTreeMap<Vec<u8>, u64> = keys.iter().cloned().zip(0..).collect();
        check(&set, &model);
        assert!(!set.insert(&keys[500], 7), "an overwrite moves the key");
        model.insert(keys[500].clone(), 7);
        assert!(set.insert(b"\x00\x00\x01\xf4\x00", 8));
        model.insert(b"\x00\x00\x01\xf4\x00".to_vec(), 8);
        assert!(set.remove(&keys[0]));
        model.remove(&keys[0]);
        check(&set, &model);
        let first: Vec<(&[u8], u64)> = set.iter_from(Bound::Unbounded).take(1).collect();
        assert_eq!(first, vec![(&keys[1][..], 1)]);
    }

    /// Keys long enough that a block outgrows the arena's classes (its
    /// buffer then comes from the general allocator), and removals that
    /// leave the arena mostly free: the set stays right, and gives the
    /// memory back.
    #[test]
    fn long_keys_and_mass_removals_keep_the_set_right_and_small() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut set = SortedKeys::default();
        let mut model = BTreeMap::new();
        for i in 0..4_000u64 {
            let len = if i % 3 == 0 {
                rng.usize(600..1200)
            } else {
                rng.usize(0..40)
            };
            let k: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert_eq!(set.insert(&k, i), model.insert(k, i).is_none());
        }
        check(&set, &model);
        let full = set.memory_bytes();
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for (j, k) in keys.iter().enumerate() {
            if j % 20 != 0 {
                assert!(set.remove(k));
                model.remove(k);
            }
        }
        check(&set, &model);
        let left = set.memory_bytes();
        assert!(
            left < full / 4,
            "{left} of {full} bytes after removing 95 %"
        );
        for (i, k) in keys.iter().enumerate() {
            set.insert(k, i as u64);
            model.insert(k.clone(), i as u64);
        }
        check(&set, &model);
    }

    /// Keys of one length keep no end offsets; a key of another length
    /// makes its block keep them, and the set stays right either way.
    #[test]
    fn keys_of_one_length_keep_no_offsets_until_another_length_comes() {
        let mut rng = fastrand::Rng::with_seed(13);
        let mut set = SortedKeys::default();
        let mut model = BTreeMap::new();
        for i in 0..5_000u64 {
            let mut k = [0u8; 24];
            rng.fill(&mut k);
            set.insert(&k, i);
            model.insert(k.to_vec(), i);
        }
        check(&set, &model);
        assert!(set.blocks.values().all(|b| !b.varied()));
        // A 23-byte key in a block of 24-byte ones.
        let odd = model.keys().nth(2_500).expect("5,000 keys")[..23].to_vec();
        assert!(set.insert(&odd, 99));
        model.insert(odd.clone(), 99);
        check(&set, &model);
        assert_eq!(set.blocks.values().filter(|b| b.varied()).count(), 1);
        // Every other key removed, then the odd one: merges mix the two
        // kinds of block.
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for k in keys.iter().step_by(2).chain([&odd]) {
            set.remove(k);
            model.remove(k);
        }
        check(&set, &model);
        for (i, k) in keys.iter().enumerate() {
            set.insert(k, i as u64);
            model.insert(k.clone(), i as u64);
        }
        check(&set, &model);
    }

    /// A set rebuilt after removals is not rebuilt again at once: keys
    /// removed and put back near a size where the arena's chunks hold
    /// twice what the blocks use (55,800 keys of 24 bytes, built whole)
    /// leave it as it is.
    #[test]
    fn a_rebuilt_set_is_not_rebuilt_again_by_the_next_removals() {
        let keys: Vec<[u8; 24]> = (0..55_800u64)
            .map(|i| {
                let mut k = [0u8; 24];
                k[..8].copy_from_slice(&i.to_be_bytes());
                k
            })
            .collect();
        let mut set = SortedKeys::from_sorted(keys.iter().map(|k| (&k[..], 1)));
        assert_eq!(set.arena.free_bytes(), 0, "a set built whole frees nothing");
        for k in keys.iter().step_by(7).take(1_000) {
            assert!(set.remove(k));
            assert!(set.insert(k, 2));
        }
        assert_eq!(set.repacks, 0, "no removal here frees much");
        for k in &keys[..50_000] {
            assert!(set.remove(k));
        }
        let after = set.repacks;
        assert!(after >= 1, "removing most keys rebuilds the set");
        for k in &keys[50_000..51_000] {
            assert!(set.remove(k));
            assert!(set.insert(k, 3));
        }
        assert_eq!(
            set.repacks, after,
            "no rebuild after a rebuild without new removals"
        );
        let model: BTreeMap<Vec<u8>, u64> = keys[50_000..]
            .iter()
            .enumerate()
            .map(|(i, k)| (k.to_vec(), if i < 1_000 { 3 } else { 1 }))
            .collect();
        check(&set, &model);
    }
}
