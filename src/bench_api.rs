//! Entry points for `benches/index.rs` (cargo feature `bench-internals`):
//! the per-shard hash index, driven directly with key hashes. Not a stable
//! API; hidden from the documentation.

/// The engine's per-shard index (`src/index.rs`), keyed by 64-bit key hash.
///
/// The engine checks each slot whose hash matches against the key in the
/// frame it points to; here there is no frame, so an entry of the same hash
/// counts as the same key (what the engine sees unless two keys collide in
/// 64 bits).
pub struct Index(crate::index::Index);

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl Index {
    /// An empty index (it grows as entries arrive).
    pub fn new() -> Index {
        Index(crate::index::Index::new())
    }

    /// The location of hash `h`, as a read does it: an epoch pin, then
    /// the probe.
    #[inline]
    pub fn get(&self, h: u64) -> Option<u64> {
        let guard = crossbeam_epoch::pin();
        self.0.find_map(h, &guard, Some)
    }

    /// Points hash `h` at `loc`; returns the previous location.
    #[inline]
    pub fn upsert(&self, h: u64, loc: u64) -> Option<u64> {
        self.0.upsert(h, loc, |_| true)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Bytes held by the table.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

/// The ordered index of range scans (`src/sorted/`): a sorted set of
/// byte keys with their record locations in blocks, as one shard keeps for
/// one namespace.
#[derive(Default)]
pub struct SortedKeys(crate::sorted::SortedKeys);

impl SortedKeys {
    /// Adds `key` at location `loc` (or moves it there); false if it was
    /// there.
    pub fn insert(&mut self, key: &[u8], loc: u64) -> bool {
        self.0.insert(key, loc)
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.0.remove(key)
    }

    /// Calls `f` on each key from `from` (inclusive) in ascending order
    /// until it returns false.
    pub fn scan_from(&self, from: &[u8], mut f: impl FnMut(&[u8]) -> bool) {
        for (k, _) in self.0.iter_from(std::ops::Bound::Included(from)) {
            if !f(k) {
                break;
            }
        }
    }

    /// Heap bytes held, as the engine counts them for `stats()`.
    pub fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }

    /// Bytes held in anonymous huge-page mappings of its own, which an
    /// allocator that counts does not see.
    pub fn mapped_bytes(&self) -> usize {
        self.0.mapped_bytes()
    }
}
