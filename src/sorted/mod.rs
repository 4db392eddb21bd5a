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
//! MiB: a seek then costs no TLB miss for its block (`block.rs`).
//!
//! Blocks are found by their lower fence in a directory of runs of
//! blocks (`dir.rs`), searched by the fences' first eight bytes as
//! numbers: the first block's fence is the empty key, so every key has a
//! block; a split gives the new right half its first key as fence; a
//! block that empties is removed (its range falls to the block before
//! it). `benches/ranges.rs` compares this with a `crossbeam-skiplist`
//! map of the same keys (the design's first choice): ARCHITECTURE.md, "Range
//! scans", has the figures.

mod block;
mod dir;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;

use crate::arena::Arena;
use block::{Block, BLOCK_MAX, VARIED};
use dir::{At, Dir};

/// A set is rebuilt in a fresh arena ([`SortedKeys::remove`]) once the
/// bytes on its free lists exceed half the bytes its blocks use plus this.
/// A rebuilt set's free lists are empty, so a rebuild is not followed by
/// another until removals free as much again.
const REPACK_SLACK: usize = 16 << 10;

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
    dir: Dir,
    /// Where the blocks' buffers live.
    arena: Arena,
    len: usize,
    /// Rebuilds so far (tests check they do not repeat).
    #[cfg(test)]
    repacks: usize,
    /// No rebuilds (tests that watch blocks merge and runs join).
    #[cfg(test)]
    repack_off: bool,
}

impl Default for SortedKeys {
    fn default() -> Self {
        SortedKeys {
            dir: Dir::new(Block::empty()),
            arena: Arena::default(),
            len: 0,
            #[cfg(test)]
            repacks: 0,
            #[cfg(test)]
            repack_off: false,
        }
    }
}

impl Drop for SortedKeys {
    fn drop(&mut self) {
        for b in self.dir.blocks_mut() {
            b.release(&mut self.arena);
        }
    }
}

impl SortedKeys {
    /// A set of `keys` with their locations, which must be sorted and
    /// distinct: blocks are filled to three quarters, leaving room for
    /// inserts.
    pub(crate) fn from_sorted<'a>(keys: impl IntoIterator<Item = (&'a [u8], u64)>) -> SortedKeys {
        let mut arena = Arena::default();
        let mut dir: Option<Dir> = None;
        let mut len = 0;
        let fill = BLOCK_MAX * 3 / 4;
        let mut keys = keys.into_iter();
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
                Block::with_capacity(&mut arena, fill + fill / 8, bytes + bytes / 8, klen);
            for &(k, loc) in &batch {
                block.push(&mut arena, k, loc);
            }
            len += batch.len();
            match &mut dir {
                None => dir = Some(Dir::new(block)),
                Some(d) => d.push(batch[0].0.into(), block),
            }
        }
        SortedKeys {
            dir: dir.unwrap_or_else(|| Dir::new(Block::empty())),
            arena,
            len,
            #[cfg(test)]
            repacks: 0,
            #[cfg(test)]
            repack_off: false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The place of the block whose range holds `key`, its block asked
    /// into the cache.
    #[inline]
    fn find(&self, key: &[u8]) -> At {
        let at = self.dir.find(key);
        self.dir.block(at).prefetch();
        at
    }

    /// Adds `key` at `loc`, or points it at `loc` if it is there; true if
    /// it was not.
    pub(crate) fn insert(&mut self, key: &[u8], loc: u64) -> bool {
        let at = self.find(key);
        let block = self.dir.block_mut(at);
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
            let fence = right.key(0).into();
            self.dir.insert_after(at, fence, right);
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
        let at = self.find(key);
        let block = self.dir.block_mut(at);
        let Ok(i) = block.search(key) else {
            return false;
        };
        block.remove_at(&mut self.arena, i);
        let left = block.len();
        self.len -= 1;
        if left == 0 && at != At::FIRST {
            self.dir.remove(at).release(&mut self.arena);
        } else if left < BLOCK_MAX / 4 {
            let dir = &self.dir;
            let fits = |&b: &At| left + dir.block(b).len() <= BLOCK_MAX / 2;
            // (into, from): `from` follows `into`, so `into`'s fence stays.
            let pair = match dir.prev(at).filter(fits) {
                Some(before) => Some((before, at)),
                None => dir.next(at).filter(fits).map(|after| (at, after)),
            };
            if let Some((into, from)) = pair {
                // `from`'s keys move first: taking it out of the
                // directory may move `into`.
                let mut gone = std::mem::replace(self.dir.block_mut(from), Block::empty());
                self.dir.block_mut(into).absorb(&mut self.arena, &gone);
                gone.release(&mut self.arena);
                self.dir.remove(from);
            }
        }
        #[cfg(test)]
        if self.repack_off {
            return true;
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
        self.dir
            .blocks()
            .flat_map(|b| (0..b.len()).map(move |i| (b.key(i), b.loc(i))))
    }

    /// Points `key` at `loc` if the set has it (a compaction moved its
    /// record); false if it has not.
    pub(crate) fn relocate(&mut self, key: &[u8], loc: u64) -> bool {
        let at = self.find(key);
        let block = self.dir.block_mut(at);
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
        let at = self.find(key);
        Seek {
            dir: &self.dir,
            at,
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
    /// keeps free), and the directory of blocks.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.arena.held() + self.dir.memory_bytes()
    }
}

/// Where a read of a [`SortedKeys`] starts, from [`SortedKeys::seek`].
pub(crate) struct Seek<'a, 'k> {
    dir: &'a Dir,
    /// The block the keys start in.
    at: At,
    key: &'k [u8],
    /// The bound excludes `key`.
    skip_equal: bool,
}

impl<'a> Seek<'a, '_> {
    /// The keys from the seek's bound on, ascending, each with its
    /// location.
    pub(crate) fn keys(self) -> Keys<'a> {
        let first = self.dir.block(self.at);
        let pos = match first.search(self.key) {
            Ok(i) if self.skip_equal => i + 1,
            Ok(i) | Err(i) => i,
        };
        // The walk reads the locations from `pos` on: ask them in too.
        for line in first.locs().get(pos..).unwrap_or_default().chunks(8) {
            crate::index::prefetch(line.as_ptr());
        }
        Keys::new(self.dir, self.at, pos)
    }
}

/// Keys of a [`SortedKeys`] in ascending order, each with its location,
/// from [`Seek::keys`].
pub(crate) struct Keys<'a> {
    dir: &'a Dir,
    /// The place of the block being read.
    at: At,
    cur: Option<&'a Block>,
    pos: usize,
    /// The fast path's view of `cur` ([`Block::uniform`]): its key bytes,
    /// key length and locations, and how many of its keys the fast path
    /// reads (all when they are of one length, none when they vary: the
    /// slow path reads those through the block).
    bytes: *const u8,
    klen: usize,
    locs: *const u64,
    fast_len: usize,
}

impl<'a> Keys<'a> {
    fn new(dir: &'a Dir, at: At, pos: usize) -> Keys<'a> {
        let mut keys = Keys {
            dir,
            at,
            cur: Some(dir.block(at)),
            pos,
            bytes: std::ptr::null(),
            klen: 0,
            locs: std::ptr::null(),
            fast_len: 0,
        };
        keys.view();
        keys
    }

    /// Sets the fast path's view of the block being read.
    #[inline]
    fn view(&mut self) {
        match self.cur.and_then(|b| Some((b.uniform()?, b.len()))) {
            Some(((bytes, klen, locs), n)) => {
                (self.bytes, self.klen, self.locs, self.fast_len) = (bytes, klen, locs, n);
            }
            None => self.fast_len = 0,
        }
    }
}

impl<'a> Iterator for Keys<'a> {
    type Item = (&'a [u8], u64);

    #[inline]
    fn next(&mut self) -> Option<(&'a [u8], u64)> {
        // The common cases, inlined into the scan's merge: the block has
        // another key, of the block's one length or read through its
        // offsets.
        let i = self.pos;
        if i < self.fast_len {
            self.pos = i + 1;
            // SAFETY: `fast_len` is the block's key count (`view`), and the
            // block holds that many keys of `klen` bytes at `bytes` and
            // locations at `locs`; it is borrowed for `'a` (the walk holds
            // the set shared), so neither moves or changes meanwhile.
            return Some(unsafe {
                (
                    std::slice::from_raw_parts(self.bytes.add(i * self.klen), self.klen),
                    *self.locs.add(i),
                )
            });
        }
        // Keys that vary in length, read through the block's offsets.
        if let Some(b) = self.cur.filter(|b| i < b.len()) {
            self.pos = i + 1;
            return Some((b.key(i), b.loc(i)));
        }
        self.next_block()
    }
}

impl<'a> Keys<'a> {
    /// The first key of the next block that has one (`next` has read
    /// every key of the block it was in).
    #[inline(never)]
    fn next_block(&mut self) -> Option<(&'a [u8], u64)> {
        let dir = self.dir;
        loop {
            self.cur?; // The walk had ended.
            self.cur = dir.next(self.at).map(|at| {
                self.at = at;
                dir.block(at)
            });
            self.pos = 0;
            self.view();
            let b = self.cur?;
            // A walk that reaches this block often goes on to the next:
            // ask for the start of its arrays while this one is read.
            if let Some(after) = dir.next(self.at) {
                dir.block(after).prefetch_start();
            }
            if b.len() > 0 {
                self.pos = 1;
                return Some((b.key(0), b.loc(0)));
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
        check_structure(set);
        assert_eq!(set.len(), model.len());
        let all: Vec<(&[u8], u64)> = set.iter_from(Bound::Unbounded).collect();
        let want: Vec<(&[u8], u64)> = model.iter().map(|(k, l)| (&k[..], *l)).collect();
        assert_eq!(all, want);
    }

    /// Inserts every key of `keys` (key `i` at location `i`) into the set
    /// and the model, and checks them.
    fn put_back(set: &mut SortedKeys, model: &mut BTreeMap<Vec<u8>, u64>, keys: &[Vec<u8>]) {
        for (i, k) in keys.iter().enumerate() {
            set.insert(k, i as u64);
            model.insert(k.clone(), i as u64);
        }
        check(set, model);
    }

    /// Each block's keys lie between its fence and the next block's, and
    /// the directory's own rules hold ([`Dir::check`]).
    fn check_structure(set: &SortedKeys) {
        set.dir.check();
        let mut at = Some(At::FIRST);
        while let Some(a) = at {
            let next = set.dir.next(a);
            let b = set.dir.block(a);
            for i in 0..b.len() {
                assert!(b.key(i) >= set.dir.fence(a), "a key below its fence");
                if let Some(n) = next {
                    assert!(b.key(i) < set.dir.fence(n), "a key at the next fence");
                }
            }
            assert_eq!(next.and_then(|n| set.dir.prev(n)), next.map(|_| a));
            at = next;
        }
    }

    /// Enough keys for the directory's runs to split, then removals for
    /// them to join; many keys share their first eight bytes, so fence
    /// heads tie and searches compare fence keys.
    #[test]
    fn runs_split_and_join_and_searches_stay_right() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut set = SortedKeys::default();
        let mut model = BTreeMap::new();
        let key = |rng: &mut fastrand::Rng| -> Vec<u8> {
            if rng.bool() {
                let mut k = vec![0u8; 8 + rng.usize(0..6)];
                k[..8].copy_from_slice(&rng.u64(0..64).to_be_bytes());
                rng.fill(&mut k[8..]);
                k
            } else {
                (0..rng.usize(1..14)).map(|_| rng.u8(..)).collect()
            }
        };
        let seeks = |set: &SortedKeys, model: &BTreeMap<Vec<u8>, u64>, rng: &mut fastrand::Rng| {
            for _ in 0..500 {
                let probe = key(rng);
                let got: Vec<(&[u8], u64)> =
                    set.iter_from(Bound::Included(&probe)).take(2).collect();
                let want: Vec<(&[u8], u64)> = model
                    .range::<Vec<u8>, _>(&probe..)
                    .take(2)
                    .map(|(k, l)| (&k[..], *l))
                    .collect();
                assert_eq!(got, want, "from {probe:?}");
            }
        };
        for i in 0..150_000u64 {
            let k = key(&mut rng);
            assert_eq!(set.insert(&k, i), model.insert(k, i).is_none());
        }
        check(&set, &model);
        seeks(&set, &model, &mut rng);
        let (runs, blocks) = (set.dir.runs(), set.dir.len());
        assert!(runs > 10, "{runs} runs for {blocks} blocks");
        // Without rebuilds (which would build the runs anew): blocks
        // merge, and the runs they leave join.
        set.repack_off = true;
        let mut keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        rng.shuffle(&mut keys);
        for (j, k) in keys.iter().enumerate() {
            if j % 20 != 0 {
                assert!(set.remove(k));
                model.remove(k);
            }
            if j % 40_000 == 0 {
                check(&set, &model);
            }
        }
        check(&set, &model);
        seeks(&set, &model, &mut rng);
        assert_eq!(set.repacks, 0);
        assert!(
            set.dir.len() < blocks / 4,
            "blocks merge: {} of {blocks}",
            set.dir.len()
        );
        assert!(
            set.dir.runs() < runs / 4,
            "runs join: {} of {runs}",
            set.dir.runs()
        );
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
        assert_eq!(set.dir.len(), 1, "emptied blocks are removed");
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
        put_back(&mut set, &mut model, &keys);
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
        assert!(set.dir.blocks().all(|b| !b.varied()));
        // A 23-byte key in a block of 24-byte ones.
        let odd = model.keys().nth(2_500).expect("5,000 keys")[..23].to_vec();
        assert!(set.insert(&odd, 99));
        model.insert(odd.clone(), 99);
        check(&set, &model);
        assert_eq!(set.dir.blocks().filter(|b| b.varied()).count(), 1);
        // Every other key removed, then the odd one: merges mix the two
        // kinds of block.
        let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
        for k in keys.iter().step_by(2).chain([&odd]) {
            set.remove(k);
            model.remove(k);
        }
        check(&set, &model);
        put_back(&mut set, &mut model, &keys);
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
