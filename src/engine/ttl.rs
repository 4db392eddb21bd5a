//! Expiry: which records of a shard have one, so that `len` can leave out
//! the expired ones and `sweep_expired` can find them without reading the
//! log. Records without an expiry are not listed and cost nothing here.
//!
//! Expiry uses the wall clock (`SystemTime`, Unix milliseconds): a record
//! is expired from the millisecond its `expires_at` is reached. A clock
//! step forward expires records early; a step back keeps expired ones
//! visible until the clock passes their time again. Nothing is written
//! when a record expires: reads hide it at once (lazy expiry), and
//! `sweep_expired` or compaction later write its tombstone.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::log::frame::{self, unpack_pos};
use crate::log::segtable::SegTable;

/// Now, in Unix milliseconds (plus the test clock's advance, with the
/// `fault-injection` feature).
#[inline]
pub(crate) fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    #[cfg(feature = "fault-injection")]
    let now = now + CLOCK_ADVANCE_MS.load(std::sync::atomic::Ordering::Relaxed);
    now
}

/// How far tests moved the clock forward (`fault-injection` only).
#[cfg(feature = "fault-injection")]
static CLOCK_ADVANCE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Moves the clock that expiry reads forward by `by`, for the whole
/// process (feature `fault-injection`; for tests of expiry that must not
/// sleep).
#[cfg(feature = "fault-injection")]
pub fn advance_clock(by: Duration) {
    CLOCK_ADVANCE_MS.fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// `now + after` in Unix milliseconds, or `None` if it does not fit.
pub(crate) fn deadline(after: Duration) -> Option<u64> {
    let ms = u64::try_from(after.as_millis()).ok()?;
    now_ms().checked_add(ms).filter(|t| *t < u64::MAX)
}

/// Whether a record with this expiry is hidden now (the clock is read
/// only if it has one).
#[inline]
pub(crate) fn is_expired(expires_at: Option<u64>) -> bool {
    expires_at.is_some_and(|t| t <= now_ms())
}

/// The expiry of the frame at `loc`, if it has one.
pub(crate) fn frame_expiry(segs: &SegTable, loc: u64) -> Option<u64> {
    let (sid, off) = unpack_pos(loc);
    segs.get(sid)?
        .with_frame(off, |b| frame::decode_unchecked(b).ok()?.expires_at)
        .flatten()
}

/// One shard's records that have an expiry, by time: (expires_at, location)
/// to (namespace, key hash). Changed under the shard lock.
#[derive(Default)]
pub(crate) struct Expiring {
    by_time: BTreeMap<(u64, u64), (u32, u64)>,
}

impl Expiring {
    pub(crate) fn len(&self) -> usize {
        self.by_time.len()
    }

    pub(crate) fn add(&mut self, expires_at: u64, loc: u64, ns: u32, hash: u64) {
        self.by_time.insert((expires_at, loc), (ns, hash));
    }

    /// The record at `loc` stopped being live (overwritten, removed,
    /// moved): forgets it if it had an expiry (read from its frame).
    pub(crate) fn forget(&mut self, segs: &SegTable, loc: u64) {
        if self.by_time.is_empty() {
            return;
        }
        if let Some(t) = frame_expiry(segs, loc) {
            self.by_time.remove(&(t, loc));
        }
    }

    /// The record expiring at `t` moved from `old` to `new` (compaction).
    pub(crate) fn moved(&mut self, t: u64, old: u64, new: u64) {
        if let Some(v) = self.by_time.remove(&(t, old)) {
            self.by_time.insert((t, new), v);
        }
    }

    /// Forgets every record of namespace `ns` (cleared or dropped).
    pub(crate) fn forget_namespace(&mut self, ns: u32) {
        self.by_time.retain(|_, (n, _)| *n != ns);
    }

    /// Records of namespace `ns` expired at `now`.
    pub(crate) fn expired_in(&self, ns: u32, now: u64) -> usize {
        self.by_time
            .range(..=(now, u64::MAX))
            .filter(|(_, (n, _))| *n == ns)
            .count()
    }

    /// Up to `max` records (of namespace `ns`, or of all) expired at
    /// `now`: (expires_at, location, namespace, hash), oldest first,
    /// removed from the list.
    pub(crate) fn take_expired(
        &mut self,
        ns: Option<u32>,
        now: u64,
        max: usize,
    ) -> Vec<(u64, u64, u32, u64)> {
        let keys: Vec<(u64, u64)> = self
            .by_time
            .range(..=(now, u64::MAX))
            .filter(|(_, (n, _))| ns.is_none_or(|want| want == *n))
            .take(max)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.by_time.remove(&k).map(|(ns, h)| (k.0, k.1, ns, h)))
            .collect()
    }

    /// Expiry by location, for the hint files of a checkpoint.
    pub(crate) fn by_location(&self) -> std::collections::HashMap<u64, u64> {
        self.by_time.keys().map(|(t, loc)| (*loc, *t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_records_are_counted_and_taken_in_time_order() {
        let mut e = Expiring::default();
        e.add(100, 1, 0, 11);
        e.add(50, 2, 0, 12);
        e.add(70, 3, 5, 13);
        e.add(900, 4, 0, 14);
        assert_eq!(e.expired_in(0, 100), 2);
        assert_eq!(e.expired_in(5, 100), 1);
        assert_eq!(e.expired_in(0, 49), 0);
        assert_eq!(e.take_expired(Some(5), 100, 9), vec![(70, 3, 5, 13)]);
        let taken = e.take_expired(None, 100, 2);
        assert_eq!(taken, vec![(50, 2, 0, 12), (100, 1, 0, 11)]);
        assert_eq!(e.len(), 1);
        e.forget_namespace(0);
        assert_eq!(e.len(), 0);
        assert!(is_expired(Some(5)) && !is_expired(Some(u64::MAX - 1)) && !is_expired(None));
        assert!(deadline(Duration::from_secs(u64::MAX)).is_none());
    }
}
