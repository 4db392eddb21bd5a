//! The indexes of one shard, one per namespace, so that `len`, `clear`,
//! `iter` and `drop_namespace` of a namespace cost the size of that
//! namespace, not of the database.
//!
//! The default namespace (id 0) is a field: its lookups cost what they did
//! before namespaces existed. The others live in a table sorted by id,
//! replaced as a whole (copy on write) when a namespace gets its first
//! record in this shard or is dropped, and reclaimed through the epoch, so
//! readers find an index with one atomic load and a binary search over a
//! few entries. Changes are made under the shard lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use crate::index::Index;

/// Id of the default namespace.
pub(crate) const DEFAULT_NS: u32 = 0;

type Table = Vec<(u32, Arc<Index>)>;

pub(crate) struct Indexes {
    default: Index,
    others: Atomic<Table>,
}

impl Drop for Indexes {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader holds the table.
        unsafe {
            let t = self.others.load(Ordering::Relaxed, epoch::unprotected());
            if !t.is_null() {
                drop(t.into_owned());
            }
        }
    }
}

impl Indexes {
    /// The default namespace's index and the others' (any order).
    pub(crate) fn new(default: Index, mut others: Vec<(u32, Index)>) -> Indexes {
        others.sort_unstable_by_key(|(id, _)| *id);
        let table: Table = others
            .into_iter()
            .filter(|(id, _)| *id != DEFAULT_NS)
            .map(|(id, ix)| (id, Arc::new(ix)))
            .collect();
        Indexes {
            default,
            others: Atomic::new(table),
        }
    }

    fn table<'g>(&self, guard: &'g Guard) -> &'g Table {
        // SAFETY: never null; replaced tables are reclaimed through the epoch.
        unsafe { self.others.load(Ordering::Acquire, guard).deref() }
    }

    /// The index of namespace `ns`, if it has one in this shard.
    #[inline]
    pub(crate) fn get<'g>(&'g self, ns: u32, guard: &'g Guard) -> Option<&'g Index> {
        if ns == DEFAULT_NS {
            return Some(&self.default);
        }
        let t = self.table(guard);
        t.binary_search_by_key(&ns, |(id, _)| *id)
            .ok()
            .map(|i| &*t[i].1)
    }

    /// The index of `ns`, created empty if it has none yet. The caller
    /// holds the shard lock (changes of the table are serialized by it).
    pub(crate) fn get_or_create<'g>(&'g self, ns: u32, guard: &'g Guard) -> &'g Index {
        if let Some(ix) = self.get(ns, guard) {
            return ix;
        }
        let mut next = self.table(guard).clone();
        let at = next.partition_point(|(id, _)| *id < ns);
        next.insert(at, (ns, Arc::new(Index::new())));
        self.publish(next, guard);
        // Just published, and only this (locked) writer changes the table.
        self.get(ns, guard).unwrap_or(&self.default)
    }

    /// Removes the index of `ns` (not the default's) and returns it. The
    /// caller holds the shard lock.
    pub(crate) fn remove(&self, ns: u32, guard: &Guard) -> Option<Arc<Index>> {
        if ns == DEFAULT_NS {
            return None;
        }
        let cur = self.table(guard);
        let i = cur.binary_search_by_key(&ns, |(id, _)| *id).ok()?;
        let gone = cur[i].1.clone();
        let mut next = cur.clone();
        next.remove(i);
        self.publish(next, guard);
        Some(gone)
    }

    fn publish(&self, next: Table, guard: &Guard) {
        let old = self.others.swap(Owned::new(next), Ordering::AcqRel, guard);
        // SAFETY: unreachable for new readers; destroyed after current ones.
        unsafe { guard.defer_destroy(old) };
    }

    /// Calls `f` with every namespace id and its index, the default first.
    pub(crate) fn for_each(&self, guard: &Guard, mut f: impl FnMut(u32, &Index)) {
        f(DEFAULT_NS, &self.default);
        for (id, ix) in self.table(guard) {
            f(*id, ix);
        }
    }

    /// Live records in every namespace of this shard.
    pub(crate) fn total_len(&self) -> usize {
        let guard = epoch::pin();
        let mut n = 0;
        self.for_each(&guard, |_, ix| n += ix.len());
        n
    }

    /// Bytes of memory held by every table.
    pub(crate) fn memory_bytes(&self) -> usize {
        let guard = epoch::pin();
        let mut n = 0;
        self.for_each(&guard, |_, ix| n += ix.memory_bytes());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_created_found_and_removed() {
        let ix = Indexes::new(Index::new(), vec![(7, Index::new())]);
        let guard = epoch::pin();
        assert!(ix.get(0, &guard).is_some());
        assert!(ix.get(7, &guard).is_some());
        assert!(ix.get(3, &guard).is_none());
        ix.get_or_create(3, &guard).upsert(42, 1, |_| false);
        ix.get_or_create(9, &guard);
        assert_eq!(ix.get(3, &guard).map(|i| i.len()), Some(1));
        let mut ids = Vec::new();
        ix.for_each(&guard, |id, _| ids.push(id));
        assert_eq!(ids, vec![0, 3, 7, 9]);
        assert_eq!(ix.total_len(), 1);
        assert_eq!(ix.remove(3, &guard).map(|i| i.len()), Some(1));
        assert!(ix.get(3, &guard).is_none());
        assert!(ix.remove(0, &guard).is_none(), "the default stays");
    }
}
