//! A block of the ordered index: up to [`BLOCK_MAX`] keys with their
//! record locations in one arena buffer (see [`Block`]).

use super::{cmp_headed, key_head};
use crate::arena::{Arena, Buf};

/// Keys per block before it splits in two.
pub(super) const BLOCK_MAX: usize = 128;

/// The `klen` of a block whose keys differ in length: it keeps each key's
/// end offset.
pub(super) const VARIED: u32 = u32::MAX;

/// Up to [`BLOCK_MAX`] keys (one more while it splits) in one arena
/// buffer ([`crate::arena`]): each key's location (8 bytes) for `capk`
/// keys, then, if the keys differ in length, each key's end offset in the
/// key bytes (4 bytes) for `capk` keys, then the keys' bytes back to back.
/// One buffer, not three allocations: a seek that lands in a block touches
/// one region of memory, in 2 MiB pages. Keys of one length (ids, hashes,
/// fixed-width encodings) need no offsets: key `i` starts at `i * klen`.
pub(super) struct Block {
    /// The buffer; the locations start it.
    buf: Buf,
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
    pub(super) fn empty() -> Block {
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
    pub(super) fn varied(&self) -> bool {
        self.klen == VARIED
    }

    /// A block of room for `keys` keys and `bytes` key bytes (keys of
    /// length `klen`, or [`VARIED`]; more room if the arena's size class
    /// leaves more).
    pub(super) fn with_capacity(arena: &mut Arena, keys: usize, bytes: usize, klen: u32) -> Block {
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
    pub(super) fn len(&self) -> usize {
        self.n as usize
    }

    #[inline]
    fn locs_ptr(&self) -> *mut u64 {
        self.buf.ptr.as_ptr().cast::<u64>()
    }

    #[inline]
    pub(super) fn locs(&self) -> &[u64] {
        // SAFETY: `n` initialized locations at the buffer's start
        // (`locs_ptr`), 8-aligned (an arena buffer, or `Buf::EMPTY`'s
        // dangling `u64` pointer), for as long as the block holds it.
        unsafe { std::slice::from_raw_parts(self.locs_ptr(), self.len()) }
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
    pub(super) fn loc(&self, i: usize) -> u64 {
        self.locs()[i]
    }

    pub(super) fn set_loc(&mut self, i: usize, loc: u64) {
        assert!(i < self.len());
        // SAFETY: in bounds (checked); the block owns its buffer.
        unsafe { self.locs_ptr().add(i).write(loc) };
    }

    /// Where key `i` starts and ends in the key bytes (`i < len`), the
    /// layout asked once (a scan's walk reads the keys of a block whose
    /// keys vary in length through here; see [`Block::uniform`] for the
    /// others).
    #[inline]
    fn span(&self, i: usize) -> (usize, usize) {
        if self.varied() {
            let ends = self.ends();
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            (start, ends[i] as usize)
        } else {
            let klen = self.klen as usize;
            (i * klen, (i + 1) * klen)
        }
    }

    /// Where key `i` starts in the key bytes (`i <= len`: key `len`
    /// would start after the last).
    #[inline]
    fn start(&self, i: usize) -> usize {
        if i < self.len() {
            self.span(i).0
        } else {
            self.used as usize
        }
    }

    /// Where key `i` ends in the key bytes.
    #[inline]
    fn end(&self, i: usize) -> usize {
        self.span(i).1
    }

    #[inline]
    pub(super) fn key(&self, i: usize) -> &[u8] {
        let (start, end) = self.span(i);
        &self.bytes()[start..end]
    }

    /// Where `key` is or would go (see [`Block::prefetch`] first).
    pub(super) fn search(&self, key: &[u8]) -> Result<usize, usize> {
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
    pub(super) fn prefetch(&self) {
        for line in self.ends().chunks(16) {
            crate::index::prefetch(line.as_ptr());
        }
        for line in self.bytes().chunks(64) {
            crate::index::prefetch(line.as_ptr());
        }
    }

    /// Where a walk reads this block's keys without asking the layout
    /// for each: the key bytes, the key length and the locations, when
    /// the keys are of one length (key `i` at `i * klen`, its location at
    /// `i`; `len` of each); `None` when they vary.
    #[inline]
    pub(super) fn uniform(&self) -> Option<(*const u8, usize, *const u64)> {
        (!self.varied()).then(|| {
            (
                self.bytes.cast_const(),
                self.klen as usize,
                self.locs_ptr().cast_const(),
            )
        })
    }

    /// Asks the first lines of the offsets, keys and locations into the
    /// cache (a walk about to reach this block reads them first).
    #[inline]
    pub(super) fn prefetch_start(&self) {
        if self.varied() {
            crate::index::prefetch(self.ends);
        }
        crate::index::prefetch(self.bytes);
        crate::index::prefetch(self.bytes.wrapping_add(64));
        crate::index::prefetch(self.locs_ptr());
    }

    /// Room for `k` keys when a block grows to hold them: an eighth more
    /// (at least four), up to one more than [`BLOCK_MAX`] (a block splits
    /// past it).
    fn key_room(k: usize) -> usize {
        (k + (k / 8).max(4)).min(BLOCK_MAX + 1).max(k)
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
        let capk = Block::key_room(k);
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
            std::ptr::copy_nonoverlapping(src.locs_ptr().add(from), self.locs_ptr().add(n), keys);
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
            let capk = Block::key_room(k);
            self.relayout(arena, capk, b, VARIED);
        }
        self.reserve(arena, keys, bytes);
    }

    pub(super) fn insert_at(&mut self, arena: &mut Arena, i: usize, key: &[u8], loc: u64) {
        self.fit(arena, 1, key.len(), key.len() as u32);
        let (n, used, at, kl) = (self.len(), self.used as usize, self.start(i), key.len());
        assert!(i <= n);
        // SAFETY: `fit` made room for one more key and its bytes; the
        // moves stay inside the arrays (`at <= used`, `i <= n`).
        unsafe {
            std::ptr::copy(self.bytes.add(at), self.bytes.add(at + kl), used - at);
            std::ptr::copy_nonoverlapping(key.as_ptr(), self.bytes.add(at), kl);
            std::ptr::copy(self.locs_ptr().add(i), self.locs_ptr().add(i + 1), n - i);
            self.locs_ptr().add(i).write(loc);
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

    pub(super) fn remove_at(&mut self, arena: &mut Arena, i: usize) {
        let (n, used) = (self.len(), self.used as usize);
        let (s, e) = (self.start(i), self.end(i));
        let kl = e - s;
        // SAFETY: key `i` exists (its end was read above); the moves stay
        // inside the arrays.
        unsafe {
            std::ptr::copy(self.bytes.add(e), self.bytes.add(s), used - e);
            std::ptr::copy(
                self.locs_ptr().add(i + 1),
                self.locs_ptr().add(i),
                n - i - 1,
            );
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

    pub(super) fn push(&mut self, arena: &mut Arena, key: &[u8], loc: u64) {
        self.insert_at(arena, self.len(), key, loc);
    }

    /// Appends every key of `src` (which follows this block's).
    pub(super) fn absorb(&mut self, arena: &mut Arena, src: &Block) {
        self.fit(arena, src.len(), src.used as usize, src.klen);
        self.copy_from(src, 0, src.len());
    }

    /// Moves the upper half into a new block; both are left with little
    /// room to spare.
    pub(super) fn split_off(&mut self, arena: &mut Arena) -> Block {
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
    pub(super) fn release(&mut self, arena: &mut Arena) {
        let klen = self.klen;
        arena.free(std::mem::replace(self, Block::empty()).buf);
        self.klen = klen;
    }
}
