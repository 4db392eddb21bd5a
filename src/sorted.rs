//! The ordered index behind range scans: a sorted set of byte keys, kept in
//! blocks of up to [`BLOCK_MAX`] keys stored back to back.
//!
//! One set per shard and namespace, changed and read under the shard lock
//! (see `engine::range`). It holds keys only: a scan finds each key's record
//! through the hash index, as a point read does, so a write that overwrites
//! a key or a compaction that moves its record leaves the set untouched;
//! only a new key or a removed one changes it.
//!
//! A block is the keys' bytes concatenated plus each key's end offset
//! (4 bytes), so a 24-byte key costs about 28 bytes and a little slack
//! (vectors grow by an eighth at a time). Blocks are found by their lower
//! fence in a `BTreeMap`: the first block's fence is the empty key, so
//! every key has a block; a split gives the new right half its first key as
//! fence; a block that empties is removed (its range falls to the block
//! before it). `benches/ranges.rs` compares this with a `crossbeam-skiplist`
//! map of the same keys (the design's first choice): ARCHITECTURE.md, "Range
//! scans", has the figures.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// Keys per block before it splits in two.
const BLOCK_MAX: usize = 128;

#[derive(Default)]
struct Block {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

/// Grows `v` to hold `extra` more, by at least an eighth: little slack,
/// few reallocations.
fn reserve<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(v.len() / 8).max(4));
    }
}

impl Block {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i] as usize]
    }

    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn insert_at(&mut self, i: usize, key: &[u8]) {
        let at = self.start(i);
        reserve(&mut self.bytes, key.len());
        reserve(&mut self.ends, 1);
        self.bytes.splice(at..at, key.iter().copied());
        let n = key.len() as u32;
        for e in &mut self.ends[i..] {
            *e += n;
        }
        self.ends.insert(i, at as u32 + n);
    }

    fn remove_at(&mut self, i: usize) {
        let (s, e) = (self.start(i), self.ends[i] as usize);
        self.bytes.drain(s..e);
        self.ends.remove(i);
        let n = (e - s) as u32;
        for x in &mut self.ends[i..] {
            *x -= n;
        }
        // Give back what removals freed, keeping an eighth of slack.
        if self.bytes.capacity() > 2 * self.bytes.len() + 64 {
            self.bytes
                .shrink_to(self.bytes.len() + self.bytes.len() / 8);
            self.ends.shrink_to(self.ends.len() + self.ends.len() / 8);
        }
    }

    fn push(&mut self, key: &[u8]) {
        reserve(&mut self.bytes, key.len());
        reserve(&mut self.ends, 1);
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u32);
    }

    /// Moves the upper half into a new block.
    fn split_off(&mut self) -> Block {
        let mid = self.len() / 2;
        let cut = self.ends[mid - 1];
        let right = Block {
            bytes: self.bytes[cut as usize..].to_vec(),
            ends: self.ends[mid..].iter().map(|e| e - cut).collect(),
        };
        self.bytes.truncate(cut as usize);
        self.ends.truncate(mid);
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        right
    }

    fn memory_bytes(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity()
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

/// The first eight bytes of `key` as a number that orders like them
/// (zero-padded, big-endian): keys whose heads differ compare as their
/// heads do; equal heads leave it to the bytes (a shorter key that is a
/// prefix of a longer one ties with it here).
#[inline]
pub(crate) fn key_head(key: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(head)
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
    /// A set of `keys`, which must be sorted and distinct: blocks are
    /// filled to three quarters, leaving room for inserts.
    pub(crate) fn from_sorted<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> SortedKeys {
        let mut set = SortedKeys::default();
        let fill = BLOCK_MAX * 3 / 4;
        let mut cur = Block::default();
        let mut fence = Fence::new(&[]);
        for k in keys {
            if cur.len() == fill {
                set.blocks
                    .insert(std::mem::replace(&mut fence, Fence::new(k)), cur);
                cur = Block::default();
            }
            cur.push(k);
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
        self.blocks
            .range_mut(..=Fence::new(key))
            .next_back()
            .expect("the first block's fence is the empty key")
    }

    /// Adds `key`; false if it was there.
    pub(crate) fn insert(&mut self, key: &[u8]) -> bool {
        let (_, block) = self.block_mut(key);
        let Err(i) = block.search(key) else {
            return false;
        };
        block.insert_at(i, key);
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
            let before = self.blocks.range(..&fence).next_back().and_then(fits);
            let after = || {
                self.blocks
                    .range((Bound::Excluded(&fence), Bound::Unbounded))
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
                    into.push(from.key(j));
                }
            }
        }
        true
    }

    /// The keys from `from` on, ascending.
    pub(crate) fn iter_from(&self, from: Bound<&[u8]>) -> Keys<'_> {
        let (seek, skip_equal) = match from {
            Bound::Unbounded => (&[][..], false),
            Bound::Included(k) => (k, false),
            Bound::Excluded(k) => (k, true),
        };
        let mut blocks = self
            .blocks
            .range(..=Fence::new(seek))
            .next_back()
            .map(|(fence, _)| self.blocks.range(fence..))
            .expect("the first block's fence is the empty key");
        let first = blocks.next().map(|(_, b)| b);
        let pos = first.map_or(0, |b| match b.search(seek) {
            Ok(i) if skip_equal => i + 1,
            Ok(i) | Err(i) => i,
        });
        Keys {
            blocks,
            cur: first,
            pos,
        }
    }

    /// Heap bytes held (keys, offsets, block headers and fences).
    pub(crate) fn memory_bytes(&self) -> usize {
        // A B-tree entry: the fence and the block's two vectors, plus the
        // node's share (about a third again).
        let per_block = (std::mem::size_of::<Fence>() + std::mem::size_of::<Block>()) * 4 / 3;
        self.blocks
            .iter()
            .map(|(f, b)| per_block + f.key.len() + b.memory_bytes())
            .sum()
    }
}

/// Keys of a [`SortedKeys`] in ascending order, from
/// [`SortedKeys::iter_from`].
pub(crate) struct Keys<'a> {
    blocks: std::collections::btree_map::Range<'a, Fence, Block>,
    cur: Option<&'a Block>,
    pos: usize,
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let b = self.cur?;
            if self.pos < b.len() {
                self.pos += 1;
                return Some(b.key(self.pos - 1));
            }
            self.cur = self.blocks.next().map(|(_, b)| b);
            self.pos = 0;
        }
    }
}

/// The ordered indexes of one shard, one [`SortedKeys`] per namespace id
/// that has keys in the shard (kept in the shard's locked state).
#[derive(Default)]
pub(crate) struct Ordered(HashMap<u32, SortedKeys>);

impl Ordered {
    pub(crate) fn get(&self, ns: u32) -> Option<&SortedKeys> {
        self.0.get(&ns)
    }

    /// Adds `key` to namespace `ns`.
    pub(crate) fn insert(&mut self, ns: u32, key: &[u8]) {
        self.0.entry(ns).or_default().insert(key);
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
    use std::collections::BTreeSet;

    fn check(set: &SortedKeys, model: &BTreeSet<Vec<u8>>) {
        assert_eq!(set.len(), model.len());
        let all: Vec<&[u8]> = set.iter_from(Bound::Unbounded).collect();
        let want: Vec<&[u8]> = model.iter().map(|k| &k[..]).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn matches_a_btreeset_under_random_inserts_removes_and_seeks() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut set = SortedKeys::default();
        let mut model = BTreeSet::new();
        for round in 0..20_000 {
            let len = rng.usize(0..6);
            let k: Vec<u8> = (0..len).map(|_| rng.u8(b'a'..b'e')).collect();
            if rng.u8(0..3) == 0 {
                assert_eq!(set.remove(&k), model.remove(&k), "remove {k:?}");
            } else {
                assert_eq!(set.insert(&k), model.insert(k.clone()), "insert {k:?}");
            }
            if round % 1000 == 0 {
                check(&set, &model);
            }
            let probe: Vec<u8> = (0..rng.usize(0..4)).map(|_| rng.u8(b'a'..b'f')).collect();
            let got: Vec<&[u8]> = set.iter_from(Bound::Excluded(&probe)).take(3).collect();
            let want: Vec<&[u8]> = model
                .range::<Vec<u8>, _>((Bound::Excluded(&probe), Bound::Unbounded))
                .take(3)
                .map(|k| &k[..])
                .collect();
            assert_eq!(got, want, "after {probe:?}");
            let got: Vec<&[u8]> = set.iter_from(Bound::Included(&probe)).take(3).collect();
            let want: Vec<&[u8]> = model
                .range::<Vec<u8>, _>((Bound::Included(&probe), Bound::Unbounded))
                .take(3)
                .map(|k| &k[..])
                .collect();
            assert_eq!(got, want, "from {probe:?}");
        }
        check(&set, &model);
        for k in model.clone() {
            assert!(set.remove(&k));
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter_from(Bound::Unbounded).count(), 0);
        assert_eq!(set.blocks.len(), 1, "emptied blocks are removed");
    }

    #[test]
    fn from_sorted_builds_the_same_set() {
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut set = SortedKeys::from_sorted(keys.iter().map(|k| &k[..]));
        let model: BTreeSet<Vec<u8>> = keys.iter().cloned().collect();
        check(&set, &model);
        assert!(!set.insert(&keys[500]));
        assert!(set.insert(b"\x00\x00\x01\xf4\x00"));
        assert!(set.remove(&keys[0]));
        let first: Vec<&[u8]> = set.iter_from(Bound::Unbounded).take(1).collect();
        assert_eq!(first, vec![&keys[1][..]]);
    }
}
