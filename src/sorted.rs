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
//! A block is the keys' bytes concatenated plus each key's end offset
//! (4 bytes) and location (8 bytes), so a 24-byte key costs about 36 bytes
//! and a little slack (vectors grow by an eighth at a time). Blocks are
//! found by their lower fence in a `BTreeMap`: the first block's fence is
//! the empty key, so every key has a block; a split gives the new right half its first key as
//! fence; a block that empties is removed (its range falls to the block
//! before it). `benches/ranges.rs` compares this with a `crossbeam-skiplist`
//! map of the same keys (the design's first choice): ARCHITECTURE.md, "Range
//! scans", has the figures.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;

/// Keys per block before it splits in two.
const BLOCK_MAX: usize = 128;

#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    /// Each key's record location (`log::frame::pack_pos`).
    locs: Vec<u64>,
}

/// Grows `v` to hold `extra` more, by at least an eighth: little slack,
/// few reallocations.
fn reserve<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(v.len() / 8).max(4));
    }
}

impl Block {
    #[inline]
    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i] as usize]
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
        for line in self.ends.chunks(16) {
            crate::index::prefetch(line.as_ptr());
        }
        for line in self.bytes.chunks(64) {
            crate::index::prefetch(line.as_ptr());
        }
    }

    /// Asks the first lines of the offsets, keys and locations into the
    /// cache (a walk about to reach this block reads them first).
    #[inline]
    fn prefetch_start(&self) {
        crate::index::prefetch(self.ends.as_ptr());
        crate::index::prefetch(self.bytes.as_ptr());
        crate::index::prefetch(self.bytes.as_ptr().wrapping_add(64));
        crate::index::prefetch(self.locs.as_ptr());
    }

    fn insert_at(&mut self, i: usize, key: &[u8], loc: u64) {
        let at = self.start(i);
        reserve(&mut self.bytes, key.len());
        reserve(&mut self.ends, 1);
        reserve(&mut self.locs, 1);
        self.bytes.splice(at..at, key.iter().copied());
        let n = key.len() as u32;
        for e in &mut self.ends[i..] {
            *e += n;
        }
        self.ends.insert(i, at as u32 + n);
        self.locs.insert(i, loc);
    }

    fn remove_at(&mut self, i: usize) {
        let (s, e) = (self.start(i), self.ends[i] as usize);
        self.bytes.drain(s..e);
        self.ends.remove(i);
        self.locs.remove(i);
        let n = (e - s) as u32;
        for x in &mut self.ends[i..] {
            *x -= n;
        }
        // Give back what removals freed, keeping an eighth of slack.
        if self.bytes.capacity() > 2 * self.bytes.len() + 64 {
            self.bytes
                .shrink_to(self.bytes.len() + self.bytes.len() / 8);
            self.ends.shrink_to(self.ends.len() + self.ends.len() / 8);
            self.locs.shrink_to(self.locs.len() + self.locs.len() / 8);
        }
    }

    fn push(&mut self, key: &[u8], loc: u64) {
        reserve(&mut self.bytes, key.len());
        reserve(&mut self.ends, 1);
        reserve(&mut self.locs, 1);
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u32);
        self.locs.push(loc);
    }

    /// Moves the upper half into a new block.
    fn split_off(&mut self) -> Block {
        let mid = self.len() / 2;
        let cut = self.ends[mid - 1];
        let right = Block {
            bytes: self.bytes[cut as usize..].to_vec(),
            ends: self.ends[mid..].iter().map(|e| e - cut).collect(),
            locs: self.locs[mid..].to_vec(),
        };
        self.bytes.truncate(cut as usize);
        self.ends.truncate(mid);
        self.locs.truncate(mid);
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.locs.shrink_to_fit();
        right
    }

    fn memory_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity() + 8 * self.locs.capacity()
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
    len: usize,
}

impl Default for SortedKeys {
    fn default() -> Self {
        let mut blocks = BTreeMap::new();
        blocks.insert(Fence::new(&[]), Block::default());
        SortedKeys { blocks, len: 0 }
    }
}

impl SortedKeys {
    /// A set of `keys` with their locations, which must be sorted and
    /// distinct: blocks are filled to three quarters, leaving room for
    /// inserts.
    pub(crate) fn from_sorted<'a>(keys: impl IntoIterator<Item = (&'a [u8], u64)>) -> SortedKeys {
        let mut set = SortedKeys::default();
        let fill = BLOCK_MAX * 3 / 4;
        let mut cur = Block::default();
        let mut fence = Fence::new(&[]);
        for (k, loc) in keys {
            if cur.len() == fill {
                set.blocks
                    .insert(std::mem::replace(&mut fence, Fence::new(k)), cur);
                cur = Block::default();
            }
            cur.push(k, loc);
            set.len += 1;
        }
        set.blocks.insert(fence, cur);
        set
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The block whose range holds `key`.
    fn block_mut(&mut self, key: &[u8]) -> (&Fence, &mut Block) {
        let probe = Probe::new(key);
        self.blocks
            .range_mut::<dyn FenceKey, _>(up_to(&probe))
            .next_back()
            .map(|(f, b)| {
                b.prefetch();
                (f, b)
            })
            .expect("the first block's fence is the empty key")
    }

    /// Adds `key` at `loc`, or points it at `loc` if it is there; true if
    /// it was not.
    pub(crate) fn insert(&mut self, key: &[u8], loc: u64) -> bool {
        let (_, block) = self.block_mut(key);
        let i = match block.search(key) {
            Ok(i) => {
                block.locs[i] = loc;
                return false;
            }
            Err(i) => i,
        };
        block.insert_at(i, key, loc);
        if block.len() > BLOCK_MAX {
            let right = block.split_off();
            let fence = Fence::new(right.key(0));
            self.blocks.insert(fence, right);
        }
        self.len += 1;
        true
    }

    /// Removes `key`; false if it was not there. A block left with
    /// under a quarter of [`BLOCK_MAX`] keys is merged with its neighbour
    /// (the one before, else the one after) if both fit in half a block;
    /// an empty block goes.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        let (fence, block) = self.block_mut(key);
        let Ok(i) = block.search(key) else {
            return false;
        };
        block.remove_at(i);
        let (fence, left) = (fence.clone(), block.len());
        self.len -= 1;
        if left == 0 && !fence.key.is_empty() {
            self.blocks.remove(&fence);
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
                let from = self.blocks.remove(&from).expect("listed");
                let into = self.blocks.get_mut(&into).expect("listed");
                for j in 0..from.len() {
                    into.push(from.key(j), from.locs[j]);
                }
            }
        }
        true
    }

    /// Points `key` at `loc` if the set has it (a compaction moved its
    /// record); false if it has not.
    pub(crate) fn relocate(&mut self, key: &[u8], loc: u64) -> bool {
        let (_, block) = self.block_mut(key);
        match block.search(key) {
            Ok(i) => {
                block.locs[i] = loc;
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

    /// Heap bytes held (keys, offsets, block headers and fences).
    pub(crate) fn memory_bytes(&self) -> usize {
        // A B-tree entry: the fence and the block's three vectors, plus the
        // node's share (about a third again).
        let per_block = (std::mem::size_of::<Fence>() + std::mem::size_of::<Block>()) * 4 / 3;
        self.blocks
            .iter()
            .map(|(f, b)| per_block + f.key.len() + b.memory_bytes())
            .sum()
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
        for line in first.locs.get(pos..).unwrap_or_default().chunks(8) {
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
                return Some((b.key(i), b.locs[i]));
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
                return Some((b.key(self.pos - 1), b.locs[self.pos - 1]));
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
}
