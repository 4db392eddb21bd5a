//! The per-shard hash index: key hash -> log location, 16 bytes a slot.
//!
//! Keys are not stored in memory; a lookup verifies the key against the frame
//! the slot points to, which also resolves hash collisions (several slots may
//! carry the same hash). One writer per shard (the holder of the shard lock)
//! mutates the table; readers never lock:
//! - a slot is two atomics; a new entry stores `loc` before `hash`
//!   (release), an update stores only `loc`, a removal turns `hash` into a
//!   tombstone. Whatever mix a reader sees, it only returns a location whose
//!   frame holds its key, so a torn slot read can only look like a miss at a
//!   moment the key was being changed, which is a valid linearization.
//! - growth builds a new table, publishes it with one pointer swap, and frees
//!   the old one through epoch-based reclamation once no reader can hold it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use crate::arena::{HugeMap, HUGE_PAGE};

const EMPTY: u64 = 0;
const TOMBSTONE: u64 = 1;
const MIN_CAPACITY: usize = 16;

/// A hint to load the cache line at `p`: no effect on what the program
/// computes, and no fault for any address.
#[inline]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Maps a key hash onto the slot-hash space (0 and 1 are reserved).
#[inline]
pub(crate) fn slot_hash(h: u64) -> u64 {
    if h < 2 {
        h | 2
    } else {
        h
    }
}

/// The hash of a key in namespace `ns` under the database's seed. Stable
/// across runs (hint files store it), seeded per database against
/// collision flooding.
#[inline]
pub(crate) fn key_hash(seed: u64, ns: u32, key: &[u8]) -> u64 {
    let seed = seed ^ (ns as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    slot_hash(xxhash_rust::xxh3::xxh3_64_with_seed(key, seed))
}

/// The index hash of the key in frame `f`: the keyed MAC an encrypted
/// frame carries, else [`key_hash`] of its key.
#[inline]
pub(crate) fn frame_hash(seed: u64, f: &crate::log::frame::Frame<'_>) -> u64 {
    match f.sealed {
        Some(s) => s.hash,
        None => key_hash(seed, f.namespace, f.key),
    }
}

/// The shard of a key hash among `shards`: the high 32 bits scaled onto the
/// shard count (multiply-shift, no division; the index uses the low bits).
/// Part of the on-disk contract: a key must always map to the same shard.
#[inline]
pub(crate) fn shard_for(h: u64, shards: usize) -> usize {
    (((h >> 32) * shards as u64) >> 32) as usize
}

/// How `Index::upsert_with` treats an entry of the same hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Another key's.
    Other,
    /// The key's: point it at the new location.
    Replace,
    /// The key's, newer than the new location: leave it.
    Keep,
}

/// What `Index::upsert_with` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upserted {
    Inserted,
    Replaced(u64),
    Kept,
}

struct Slot {
    hash: AtomicU64,
    loc: AtomicU64,
}

struct Table {
    /// `len` slots, all zero (empty) when made.
    ptr: std::ptr::NonNull<Slot>,
    len: usize,
    mask: usize,
    /// Where the slots live: a heap allocation, or this mapping (at
    /// `ptr`).
    map: Option<HugeMap>,
}

// SAFETY: a Table owns its slots (atomics), like a Box<[Slot]> would.
unsafe impl Send for Table {}
// SAFETY: as above; shared access goes through the atomics.
unsafe impl Sync for Table {}

impl Table {
    /// A table of `cap` empty slots. A large one (every table once the
    /// index holds more than about 65,000 keys) is an anonymous mapping
    /// aligned to 2 MiB with `MADV_HUGEPAGE`: a random lookup then costs
    /// one cache miss instead of a cache miss plus a TLB miss, whose page
    /// walk is itself a miss or several under virtualization. The mapping
    /// is zero-filled by the kernel as it is touched (empty slots are
    /// zeros), so a new table costs no writes up front.
    fn new(cap: usize) -> Table {
        debug_assert!(cap.is_power_of_two());
        let bytes = cap * std::mem::size_of::<Slot>();
        // Tables of at least a huge page get their own mapping, aligned
        // to and advised for transparent huge pages.
        if bytes >= HUGE_PAGE {
            if let Some(t) = Table::mapped(cap, bytes) {
                return t;
            }
        }
        let layout = std::alloc::Layout::array::<Slot>(cap).expect("index table size");
        // SAFETY: the layout is non-zero (cap >= MIN_CAPACITY); all-zero
        // bytes are valid atomics, and zero is EMPTY.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Slot>();
        let Some(ptr) = std::ptr::NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Table {
            ptr,
            len: cap,
            mask: cap - 1,
            map: None,
        }
    }

    /// `bytes` of slots in their own mapping, aligned to a huge page.
    fn mapped(cap: usize, bytes: usize) -> Option<Table> {
        let map = HugeMap::new(bytes)?;
        Some(Table {
            ptr: std::ptr::NonNull::new(map.as_ptr().cast::<Slot>())?,
            len: cap,
            mask: cap - 1,
            map: Some(map),
        })
    }

    #[inline]
    fn slots(&self) -> &[Slot] {
        // SAFETY: `ptr` holds `len` initialized (zero or stored) slots for
        // as long as the table lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // A mapping unmaps itself.
        if self.map.is_none() {
            let layout = std::alloc::Layout::array::<Slot>(self.len).expect("index table size");
            // SAFETY: allocated in `new` with exactly this layout; no
            // reference to the slots outlives the table (epoch reclamation).
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
        }
    }
}

pub(crate) struct Index {
    table: Atomic<Table>,
    live: AtomicUsize,
    tombstones: AtomicUsize,
    /// Slots of the current table (writer-maintained, saves a pin).
    cap: AtomicUsize,
}

impl Drop for Index {
    fn drop(&mut self) {
        // SAFETY: we have &mut self, so no reader holds a reference.
        unsafe {
            let t = self.table.load(Ordering::Relaxed, epoch::unprotected());
            if !t.is_null() {
                drop(t.into_owned());
            }
        }
    }
}

impl Index {
    pub(crate) fn new() -> Index {
        Index {
            table: Atomic::new(Table::new(MIN_CAPACITY)),
            live: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            cap: AtomicUsize::new(MIN_CAPACITY),
        }
    }

    /// An index sized for `n` entries without growing.
    pub(crate) fn with_capacity(n: usize) -> Index {
        let idx = Index::new();
        if n > MIN_CAPACITY / 2 {
            idx.publish(Table::new((n * 2).next_power_of_two()));
        }
        idx
    }

    pub(crate) fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes of memory held by the table.
    pub(crate) fn memory_bytes(&self) -> usize {
        let guard = epoch::pin();
        std::mem::size_of_val(self.table(&guard).slots())
    }

    fn table<'g>(&self, guard: &'g Guard) -> &'g Table {
        // SAFETY: the pointer is never null (set in new, replaced only by
        // non-null tables) and the old table is reclaimed only after every
        // guard pinned before the swap is gone.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
    }

    /// Returns the first `f(loc)` that is `Some` among the slots carrying
    /// hash `h`. `f` checks that the frame at `loc` holds the key.
    #[inline]
    pub(crate) fn find_map<R>(
        &self,
        h: u64,
        guard: &Guard,
        mut f: impl FnMut(u64) -> Option<R>,
    ) -> Option<R> {
        let h = slot_hash(h);
        let t = self.table(guard);
        let mut i = h as usize & t.mask;
        for _ in 0..=t.mask {
            let slot = &t.slots()[i];
            let sh = slot.hash.load(Ordering::Acquire);
            if sh == EMPTY {
                return None;
            }
            if sh == h {
                let loc = slot.loc.load(Ordering::Acquire);
                if let Some(r) = f(loc) {
                    return Some(r);
                }
            }
            i = (i + 1) & t.mask;
        }
        None
    }

    /// Writer only (shard lock held). Points the key at `loc`; returns the
    /// previous location if the key was present.
    pub(crate) fn upsert(
        &self,
        h: u64,
        loc: u64,
        mut same_key: impl FnMut(u64) -> bool,
    ) -> Option<u64> {
        match self.upsert_with(h, loc, |old| {
            if same_key(old) {
                Entry::Replace
            } else {
                Entry::Other
            }
        }) {
            Upserted::Replaced(old) => Some(old),
            Upserted::Inserted | Upserted::Kept => None,
        }
    }

    /// Writer only. Like `upsert`, but `decide` judges each entry of hash
    /// `h`: another key's, the key's to replace, or the key's to keep (a
    /// newer record than `loc`'s; recovery keeps the newest by sequence).
    pub(crate) fn upsert_with(
        &self,
        h: u64,
        loc: u64,
        mut decide: impl FnMut(u64) -> Entry,
    ) -> Upserted {
        let h = slot_hash(h);
        let guard = epoch::pin();
        let t = self.table(&guard);
        let mut i = h as usize & t.mask;
        let mut free: Option<usize> = None;
        for _ in 0..=t.mask {
            let slot = &t.slots()[i];
            let sh = slot.hash.load(Ordering::Relaxed);
            if sh == EMPTY {
                free.get_or_insert(i);
                break;
            }
            if sh == TOMBSTONE {
                free.get_or_insert(i);
            } else if sh == h {
                let old = slot.loc.load(Ordering::Relaxed);
                match decide(old) {
                    Entry::Replace => {
                        slot.loc.store(loc, Ordering::Release);
                        return Upserted::Replaced(old);
                    }
                    Entry::Keep => return Upserted::Kept,
                    Entry::Other => {}
                }
            }
            i = (i + 1) & t.mask;
        }
        match free {
            Some(i) => {
                let slot = &t.slots()[i];
                if slot.hash.load(Ordering::Relaxed) == TOMBSTONE {
                    self.tombstones.fetch_sub(1, Ordering::Relaxed);
                }
                slot.loc.store(loc, Ordering::Release);
                slot.hash.store(h, Ordering::Release);
                self.live.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // Unreachable while the load factor is kept below 3/4; grow
                // and retry rather than lose the entry.
                drop(guard);
                self.rebuild(self.live.load(Ordering::Relaxed) * 4 + MIN_CAPACITY);
                return self.upsert_with(h, loc, decide);
            }
        }
        drop(guard);
        self.maybe_grow();
        Upserted::Inserted
    }

    /// Writer only. Adds an entry for a key that should not be present yet
    /// (hint loading, into an index without removals). Returns false and
    /// changes nothing if an entry of the same hash holds the same key
    /// (`same_key` is asked only on a hash match, so rarely).
    pub(crate) fn insert_unique(
        &self,
        h: u64,
        loc: u64,
        mut same_key: impl FnMut(u64) -> bool,
    ) -> bool {
        let h = slot_hash(h);
        {
            let guard = epoch::pin();
            let t = self.table(&guard);
            let mut i = h as usize & t.mask;
            loop {
                let slot = &t.slots()[i];
                let sh = slot.hash.load(Ordering::Relaxed);
                if sh == h && same_key(slot.loc.load(Ordering::Relaxed)) {
                    return false;
                }
                if sh == EMPTY || sh == TOMBSTONE {
                    if sh == TOMBSTONE {
                        self.tombstones.fetch_sub(1, Ordering::Relaxed);
                    }
                    slot.loc.store(loc, Ordering::Release);
                    slot.hash.store(h, Ordering::Release);
                    self.live.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                i = (i + 1) & t.mask;
            }
        }
        self.maybe_grow();
        true
    }

    /// Writer only. Removes the key; returns its location if it was present.
    pub(crate) fn remove(&self, h: u64, same_key: impl FnMut(u64) -> bool) -> Option<u64> {
        self.with_slot(h, same_key, |slot, old| {
            slot.hash.store(TOMBSTONE, Ordering::Release);
            self.live.fetch_sub(1, Ordering::Relaxed);
            self.tombstones.fetch_add(1, Ordering::Relaxed);
            old
        })
    }

    /// Writer only. Points the entry of hash `h` at `loc` `new` if it is at
    /// `old` now (a compare-and-swap on the location, so that a write that
    /// landed meanwhile wins). Returns whether it moved.
    pub(crate) fn replace(&self, h: u64, old: u64, new: u64) -> bool {
        self.with_slot(
            h,
            |loc| loc == old,
            |slot, _| slot.loc.store(new, Ordering::Release),
        )
        .is_some()
    }

    /// Writer only. Finds the live slot of hash `h` whose location `pick`
    /// accepts and applies `change` to it (with that location).
    fn with_slot<R>(
        &self,
        h: u64,
        mut pick: impl FnMut(u64) -> bool,
        change: impl FnOnce(&Slot, u64) -> R,
    ) -> Option<R> {
        let h = slot_hash(h);
        let guard = epoch::pin();
        let t = self.table(&guard);
        let mut i = h as usize & t.mask;
        for _ in 0..=t.mask {
            let slot = &t.slots()[i];
            let sh = slot.hash.load(Ordering::Relaxed);
            if sh == EMPTY {
                return None;
            }
            if sh == h {
                let loc = slot.loc.load(Ordering::Relaxed);
                if pick(loc) {
                    return Some(change(slot, loc));
                }
            }
            i = (i + 1) & t.mask;
        }
        None
    }

    /// Whether an entry of hash `h` points at `loc` (any thread).
    pub(crate) fn points_at(&self, h: u64, loc: u64) -> bool {
        let guard = epoch::pin();
        self.find_map(h, &guard, |l| (l == loc).then_some(()))
            .is_some()
    }

    /// Writer only. Empties the index.
    pub(crate) fn clear(&self) {
        self.live.store(0, Ordering::Relaxed);
        self.tombstones.store(0, Ordering::Relaxed);
        self.publish(Table::new(MIN_CAPACITY));
    }

    /// Calls `f(hash, loc)` for every live entry (writer lock held, or a
    /// best-effort view otherwise).
    pub(crate) fn for_each(&self, mut f: impl FnMut(u64, u64)) {
        let guard = epoch::pin();
        let t = self.table(&guard);
        for slot in t.slots().iter() {
            let h = slot.hash.load(Ordering::Acquire);
            if h != EMPTY && h != TOMBSTONE {
                f(h, slot.loc.load(Ordering::Acquire));
            }
        }
    }

    fn maybe_grow(&self) {
        let live = self.live.load(Ordering::Relaxed);
        let used = live + self.tombstones.load(Ordering::Relaxed);
        let cap = self.cap.load(Ordering::Relaxed);
        if used * 4 >= cap * 3 {
            // Aim for a load of at most 1/2 after the rebuild. If tombstones
            // made the table full, this rehashes at the same size.
            self.rebuild(live * 2);
        }
    }

    fn rebuild(&self, want: usize) {
        let cap = want.max(MIN_CAPACITY).next_power_of_two();
        let guard = epoch::pin();
        let old = self.table(&guard);
        let new = Table::new(cap);
        let mut live = 0;
        for slot in old.slots().iter() {
            let h = slot.hash.load(Ordering::Relaxed);
            if h == EMPTY || h == TOMBSTONE {
                continue;
            }
            let mut i = h as usize & new.mask;
            while new.slots()[i].hash.load(Ordering::Relaxed) != EMPTY {
                i = (i + 1) & new.mask;
            }
            new.slots()[i]
                .loc
                .store(slot.loc.load(Ordering::Relaxed), Ordering::Relaxed);
            new.slots()[i].hash.store(h, Ordering::Relaxed);
            live += 1;
        }
        self.live.store(live, Ordering::Relaxed);
        self.tombstones.store(0, Ordering::Relaxed);
        drop(guard);
        self.publish(new);
    }

    fn publish(&self, new: Table) {
        self.cap.store(new.slots().len(), Ordering::Relaxed);
        let guard = epoch::pin();
        let old = self.table.swap(Owned::new(new), Ordering::AcqRel, &guard);
        // SAFETY: `old` is unreachable for new readers after the swap; the
        // epoch defers its destruction until current readers are unpinned.
        unsafe { guard.defer_destroy(old) };
        // Hand the old table to the global collector now, so that it is
        // freed soon rather than when this thread's local bag fills.
        guard.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A model where "the frame at loc" is a map from loc to key.
    #[test]
    fn matches_a_model_with_collisions_and_growth() {
        let idx = Index::new();
        let mut frames: HashMap<u64, u64> = HashMap::new(); // loc -> key
        let mut model: HashMap<u64, u64> = HashMap::new(); // key -> loc
        let mut rng = 0x1234_5678u64;
        let mut next_loc = 100u64;
        for step in 0..50_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let key = rng % 3000;
            // Only 64 distinct hashes: many collisions.
            let h = key % 64;
            if step % 5 == 4 {
                let got = idx.remove(h, |loc| frames[&loc] == key);
                assert_eq!(got, model.remove(&key));
            } else {
                next_loc += 1;
                frames.insert(next_loc, key);
                let got = idx.upsert(h, next_loc, |loc| frames[&loc] == key);
                assert_eq!(got, model.insert(key, next_loc));
            }
            if step % 1000 == 0 {
                let guard = epoch::pin();
                for (k, l) in &model {
                    let found =
                        idx.find_map(k % 64, &guard, |loc| (frames[&loc] == *k).then_some(loc));
                    assert_eq!(found, Some(*l));
                }
            }
            assert_eq!(idx.len(), model.len());
        }
        let mut seen = 0;
        idx.for_each(|_, loc| {
            assert_eq!(model.get(&frames[&loc]), Some(&loc));
            seen += 1;
        });
        assert_eq!(seen, model.len());
        idx.clear();
        assert_eq!(idx.len(), 0);
        let guard = epoch::pin();
        assert_eq!(idx.find_map(1, &guard, Some), None);
    }

    #[test]
    fn reserved_hashes_are_usable() {
        let idx = Index::new();
        idx.upsert(0, 10, |_| false);
        idx.upsert(1, 11, |_| false);
        let guard = epoch::pin();
        assert_eq!(
            idx.find_map(0, &guard, |l| (l == 10).then_some(l)),
            Some(10)
        );
        assert_eq!(
            idx.find_map(1, &guard, |l| (l == 11).then_some(l)),
            Some(11)
        );
    }
}
