//! Lazy range iterators (`range_iter`, `range_prefix_iter`, `iter_from`,
//! `iter_after`), over the ordered index that `enable_range_scans(true)`
//! keeps.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use crate::engine::chunk::Packed;
use crate::engine::range::CHUNK;
use crate::engine::State;
use crate::error::Result;

/// `(key, value)` pairs of a key range in ascending key order, read lazily
/// in chunks of 128 keys, from `range_iter`, `range_prefix_iter`,
/// `iter_from` and `iter_after`.
///
/// **What it sees.** Each chunk is read at one point in time, holding
/// every shard's lock for the chunk (tens of microseconds; writers wait
/// meanwhile), so within a chunk no write and no transaction is seen in
/// part. The next chunk starts after the last key the previous one
/// examined. So for a write made while the iteration runs:
/// - to a key after that point: the iterator shows it (or, for a removal,
///   does not show the key);
/// - to a key at or before that point: the iterator does not show it (it
///   showed the key's earlier state, or nothing if the key is new);
/// - keys come in strictly ascending order, each at most once, and every
///   key that is live and unchanged for the whole iteration is yielded.
///
/// A transaction whose keys fall in two chunks may thus be seen in part;
/// `range` and `range_prefix` read their whole result at one point in
/// time. A record that has expired when its chunk is read is skipped, as
/// is a damaged one (a point read of it reports the damage).
///
/// The iterator keeps the engine's state alive, not the database: reads
/// go on after the last handle is dropped and see what was written.
pub struct EmdbRangeIter(EmdbRangeCursor);

/// Owned bounds of `range`.
pub(crate) fn owned_bounds<R: RangeBounds<Vec<u8>>>(range: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl EmdbRangeIter {
    pub(crate) fn new(
        state: Arc<State>,
        ns: u32,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<EmdbRangeIter> {
        EmdbRangeCursor::new(state, ns, bounds).map(EmdbRangeIter)
    }
}

impl Iterator for EmdbRangeIter {
    type Item = (Vec<u8>, Vec<u8>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = self.0.next_record()?;
        Some((key.to_vec(), value.to_vec()))
    }
}

/// The records of a key range in ascending key order without a copy per
/// record: [`next_record`](EmdbRangeCursor::next_record) lends each key
/// and value from the cursor's buffer until the next call. From
/// `range_cursor` and `range_prefix_cursor` (beyond the API contract).
///
/// It reads as [`EmdbRangeIter`] does (chunks of 128 keys, each at one
/// point in time; the same rule for concurrent writes), and sees the same
/// records; it skips the two allocations and the copy that each record of
/// an `EmdbRangeIter` costs, which in a scan is a large part of the time
/// per record. Not an `Iterator`: a record borrows the cursor.
///
/// ```
/// # let db = emdb::Emdb::builder().in_memory().enable_range_scans(true).build()?;
/// db.insert("a1", "x")?;
/// db.insert("a2", "yy")?;
/// db.insert("b1", "z")?;
/// let mut cursor = db.range_prefix_cursor("a")?;
/// let mut bytes = 0;
/// while let Some((key, value)) = cursor.next_record() {
///     assert!(key.starts_with(b"a"));
///     bytes += value.len();
/// }
/// assert_eq!(bytes, 3);
/// # Ok::<(), emdb::Error>(())
/// ```
pub struct EmdbRangeCursor {
    state: Arc<State>,
    ns: u32,
    /// The current chunk, and the next of its records to lend.
    buf: Packed,
    pos: usize,
    from: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    done: bool,
}

impl EmdbRangeCursor {
    pub(crate) fn new(
        state: Arc<State>,
        ns: u32,
        (from, to): (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> Result<EmdbRangeCursor> {
        crate::engine::range::check_enabled(&state)?;
        Ok(EmdbRangeCursor {
            state,
            ns,
            buf: Packed::from_spare(),
            pos: 0,
            from,
            to,
            done: false,
        })
    }

    /// The next record in ascending key order, borrowed until the next
    /// call; `None` once the range is done.
    #[inline]
    pub fn next_record(&mut self) -> Option<(&[u8], &[u8])> {
        if self.pos == self.buf.len() && !self.refill() {
            return None;
        }
        self.pos += 1;
        Some(self.buf.get(self.pos - 1))
    }

    /// Reads the next chunk that has a record; false once the range is
    /// done.
    fn refill(&mut self) -> bool {
        while !self.done {
            self.buf.clear();
            self.buf.reserve(CHUNK);
            self.pos = 0;
            let next = self.state.range_chunk(
                self.ns,
                self.from.as_ref().map(Vec::as_slice),
                self.to.as_ref().map(Vec::as_slice),
                CHUNK,
                &mut self.buf,
            );
            match next {
                Ok(Some(last)) => self.from = Bound::Excluded(last),
                // Done, or a configuration error (checked at creation).
                Ok(None) | Err(_) => self.done = true,
            }
            if self.buf.len() > 0 {
                return true;
            }
        }
        false
    }
}

impl Drop for EmdbRangeCursor {
    fn drop(&mut self) {
        std::mem::take(&mut self.buf).keep_as_spare();
    }
}

impl std::fmt::Debug for EmdbRangeCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmdbRangeCursor")
            .field("ns", &self.ns)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EmdbRangeIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EmdbRangeIter").field(&self.0).finish()
    }
}
