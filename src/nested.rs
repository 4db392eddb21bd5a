//! Nested groups (feature `nested`): dotted key prefixes in the default
//! namespace. `focus("user.42")` stores `set("name", ..)` under the key
//! `user.42.name`; `group("user.42")` yields every record under
//! `user.42.`; `delete_group` removes them as one atomic batch.
//!
//! Without range scans `group` and `delete_group` scan the default
//! namespace's index (a point-in-time snapshot, about 10 ms per 100,000
//! keys here); with range scans (`enable_range_scans(true)`) they seek the
//! ordered index to the prefix and read only the group, in key order.

use std::ops::{Bound, RangeBounds};

use crate::db::Emdb;
use crate::engine::range::prefix_bounds;
use crate::engine::{block_on, DEFAULT_NS};
use crate::error::{Error, Result};
use crate::range::{EmdbRangeCursor, EmdbRangeIter};

/// A prefix is one or more non-empty segments joined by `.`.
fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.split('.').any(str::is_empty) {
        return Err(Error::InvalidPath);
    }
    Ok(())
}

/// `prefix.` as bytes: what every key of the group starts with.
fn group_start(prefix: &str) -> Result<Vec<u8>> {
    check_prefix(prefix)?;
    let mut p = Vec::with_capacity(prefix.len() + 1);
    p.extend_from_slice(prefix.as_bytes());
    p.push(b'.');
    Ok(p)
}

impl Emdb {
    /// A view of the keys under `prefix.` (see [`Focus`]). An empty prefix
    /// is the root: its keys are the plain keys.
    pub fn focus(&self, prefix: impl Into<String>) -> Focus {
        Focus {
            db: self.clone_handle(),
            prefix: prefix.into(),
        }
    }

    /// Every `(key, value)` whose key starts with `prefix.`, lazily.
    /// Without range scans it filters a point-in-time snapshot of the
    /// default namespace (any order); with them it is a prefix seek in
    /// ascending key order, seeing what
    /// [`EmdbRangeIter`](crate::EmdbRangeIter) sees. `Error::InvalidPath`
    /// for an empty or malformed prefix (an empty segment: `""`, `".a"`,
    /// `"a."`, `"a..b"`).
    pub fn group(&self, prefix: impl AsRef<str>) -> Result<GroupIter> {
        let start = group_start(prefix.as_ref())?;
        if self.engine().ctx.config.range_scans {
            return Ok(GroupIter(Group::Seek(self.range_prefix_iter(&start)?)));
        }
        Ok(GroupIter(Group::Scan {
            inner: self.iter()?,
            start,
        }))
    }

    /// Removes every record whose key starts with `prefix.`, as one batch:
    /// after a crash all of them are gone or none. Returns how many.
    pub fn delete_group(&self, prefix: impl AsRef<str>) -> Result<usize> {
        let start = group_start(prefix.as_ref())?;
        let keys: Vec<Vec<u8>> = if self.engine().ctx.config.range_scans {
            self.range_prefix(&start)?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        } else {
            self.keys()?.filter(|k| k.starts_with(&start)).collect()
        };
        block_on(self.engine().remove_batch(DEFAULT_NS, &keys))
    }
}

/// The records of a group, from [`Emdb::group`] and [`Focus::iter`].
pub struct GroupIter(Group);

enum Group {
    /// A point-in-time snapshot, filtered (range scans off).
    Scan {
        inner: crate::iter::EmdbIter,
        /// `prefix.`; empty for the root focus (every record).
        start: Vec<u8>,
    },
    /// A prefix seek (range scans on).
    Seek(EmdbRangeIter),
}

impl Iterator for GroupIter {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Group::Scan { inner, start } => inner.by_ref().find(|(k, _)| k.starts_with(start)),
            Group::Seek(it) => it.next(),
        }
    }
}

/// Keys under one dotted prefix of the default namespace, from
/// [`Emdb::focus`]: `set("k", v)` writes the key `prefix.k`. Owns a handle
/// of the database; cheap to clone.
#[derive(Debug)]
pub struct Focus {
    db: Emdb,
    prefix: String,
}

impl Clone for Focus {
    fn clone(&self) -> Self {
        Focus {
            db: self.db.clone_handle(),
            prefix: self.prefix.clone(),
        }
    }
}

impl Focus {
    fn key(&self, key: &str) -> Vec<u8> {
        self.key_bytes(key.as_bytes())
    }

    /// `prefix.key` (`key` alone for the root focus).
    fn key_bytes(&self, key: &[u8]) -> Vec<u8> {
        if self.prefix.is_empty() {
            return key.to_vec();
        }
        let mut k = Vec::with_capacity(self.prefix.len() + 1 + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.push(b'.');
        k.extend_from_slice(key);
        k
    }

    /// The prefix this focus stands for.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes `prefix.key`.
    pub fn set(&self, key: impl AsRef<str>, value: impl Into<Vec<u8>>) -> Result<()> {
        self.db.insert(self.key(key.as_ref()), value)
    }

    /// Writes `prefix.key` with an expiry.
    #[cfg(feature = "ttl")]
    pub fn set_with_ttl(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Vec<u8>>,
        ttl: crate::Ttl,
    ) -> Result<()> {
        self.db.insert_with_ttl(self.key(key.as_ref()), value, ttl)
    }

    /// The value of `prefix.key`.
    pub fn get(&self, key: impl AsRef<str>) -> Result<Option<Vec<u8>>> {
        self.db.get(self.key(key.as_ref()))
    }

    /// Removes `prefix.key`; returns its previous value.
    pub fn remove(&self, key: impl AsRef<str>) -> Result<Option<Vec<u8>>> {
        self.db.remove(self.key(key.as_ref()))
    }

    /// Whether `prefix.key` has a value.
    pub fn contains_key(&self, key: impl AsRef<str>) -> Result<bool> {
        self.db.contains_key(self.key(key.as_ref()))
    }

    /// A focus on `prefix.sub`.
    pub fn focus(&self, sub: impl AsRef<str>) -> Focus {
        Focus {
            db: self.db.clone_handle(),
            prefix: String::from_utf8_lossy(&self.key(sub.as_ref())).into_owned(),
        }
    }

    /// Every `(key, value)` under this focus (full keys), as
    /// [`Emdb::group`]; the root focus yields every record.
    pub fn iter(&self) -> Result<GroupIter> {
        if self.prefix.is_empty() {
            if self.db.engine().ctx.config.range_scans {
                return Ok(GroupIter(Group::Seek(self.db.range_iter(..)?)));
            }
            return Ok(GroupIter(Group::Scan {
                inner: self.db.iter()?,
                start: Vec::new(),
            }));
        }
        self.db.group(&self.prefix)
    }

    /// Bounds on full keys for `range`, whose bounds are keys relative to
    /// this focus (as `set` takes them), kept within the focus.
    fn full_bounds<R: RangeBounds<Vec<u8>>>(&self, range: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let full = |b: Bound<&Vec<u8>>| {
            b.map(|k| {
                let mut f = self.key("").to_vec();
                f.extend_from_slice(k);
                f
            })
        };
        let (from, to) = (full(range.start_bound()), full(range.end_bound()));
        if self.prefix.is_empty() {
            return (from, to);
        }
        // Within `prefix.`: an unbounded side stops at the focus's edge.
        let (lo, hi) = prefix_bounds(&self.key(""));
        let from = if matches!(from, Bound::Unbounded) {
            lo
        } else {
            from
        };
        let to = if matches!(to, Bound::Unbounded) {
            hi
        } else {
            to
        };
        (from, to)
    }

    /// The records under this focus whose keys, relative to the focus (as
    /// `set` takes them), are in `range`: full keys, ascending, at one point
    /// in time, as [`Emdb::range`]. `Error::InvalidConfig` without range
    /// scans.
    pub fn range<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.db.range(self.full_bounds(&range))
    }

    /// The records under this focus whose relative keys start with
    /// `prefix`, as [`Focus::range`].
    pub fn range_prefix<Q: AsRef<[u8]>>(&self, prefix: Q) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.db.range_prefix(self.key_bytes(prefix.as_ref()))
    }

    /// [`Focus::range`], lazily (see [`EmdbRangeIter`]).
    pub fn range_iter<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Result<EmdbRangeIter> {
        self.db.range_iter(self.full_bounds(&range))
    }

    /// [`Focus::range_prefix`], lazily.
    pub fn range_prefix_iter<Q: AsRef<[u8]>>(&self, prefix: Q) -> Result<EmdbRangeIter> {
        self.db.range_prefix_iter(self.key_bytes(prefix.as_ref()))
    }

    /// [`Focus::range_iter`] without a copy per record (see
    /// [`EmdbRangeCursor`](crate::EmdbRangeCursor)).
    pub fn range_cursor<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Result<EmdbRangeCursor> {
        self.db.range_cursor(self.full_bounds(&range))
    }

    /// [`Focus::range_prefix_iter`] without a copy per record.
    pub fn range_prefix_cursor<Q: AsRef<[u8]>>(&self, prefix: Q) -> Result<EmdbRangeCursor> {
        self.db.range_prefix_cursor(self.key_bytes(prefix.as_ref()))
    }

    /// The records under this focus from relative key `key` on
    /// (inclusive), lazily.
    pub fn iter_from<Q: AsRef<[u8]>>(&self, key: Q) -> Result<EmdbRangeIter> {
        self.range_iter((Bound::Included(key.as_ref().to_vec()), Bound::Unbounded))
    }

    /// The records under this focus after relative key `key` (exclusive),
    /// lazily.
    pub fn iter_after<Q: AsRef<[u8]>>(&self, key: Q) -> Result<EmdbRangeIter> {
        self.range_iter((Bound::Excluded(key.as_ref().to_vec()), Bound::Unbounded))
    }

    /// Removes every record under this focus, as [`Emdb::delete_group`].
    /// `Error::InvalidPath` on the root focus.
    pub fn delete_all(&self) -> Result<usize> {
        self.db.delete_group(&self.prefix)
    }
}
