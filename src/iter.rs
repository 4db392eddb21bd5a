//! Iterators over a point-in-time snapshot.
//!
//! `iter()` and `keys()` copy the location of every live record under all
//! shard locks at once (8 bytes a key), then read the records lazily. They
//! see exactly the database as it was at that moment: later writes are
//! invisible, and the records they point to stay readable because the
//! iterator holds their segments. Each record's checksum is verified; a
//! damaged record is skipped (`get` reports it as `Error::Corrupted`). A
//! record that has expired by the time the iterator reaches it is skipped.

use std::sync::Arc;

use crate::crypt::Crypto;
use crate::log::frame::{self, unpack_pos, Kind};
use crate::log::segment::Held;

/// What an iterator reads: per shard, the segments it holds and the
/// locations of the live records; the keys that open encrypted records.
pub(crate) struct Snap {
    pub shards: Vec<(Vec<Held>, Vec<u64>)>,
    pub crypto: Option<Arc<Crypto>>,
}

struct ShardSnap {
    segs: Vec<Held>,
    locs: Vec<u64>,
}

struct Cursor {
    shards: Vec<ShardSnap>,
    shard: usize,
    pos: usize,
    remaining: usize,
    ns: u32,
    crypto: Option<Arc<Crypto>>,
    buf: Vec<u8>,
    /// Records skipped because they were damaged.
    damaged: usize,
}

/// What the cursor did with one record.
enum Visit<R> {
    Yield(R),
    Skip,
    Damaged,
}

impl Cursor {
    fn new(snap: Snap, ns: u32) -> Cursor {
        let remaining = snap.shards.iter().map(|(_, l)| l.len()).sum();
        let shards = snap
            .shards
            .into_iter()
            .map(|(segs, locs)| ShardSnap { segs, locs })
            .collect();
        Cursor {
            shards,
            shard: 0,
            pos: 0,
            remaining,
            ns,
            crypto: snap.crypto,
            buf: Vec::new(),
            damaged: 0,
        }
    }

    fn next_with<R>(&mut self, f: impl Fn(&[u8], &[u8], Option<u64>) -> R) -> Option<R> {
        while self.shard < self.shards.len() {
            let s = &self.shards[self.shard];
            if self.pos >= s.locs.len() {
                self.shard += 1;
                self.pos = 0;
                continue;
            }
            let loc = s.locs[self.pos];
            self.pos += 1;
            self.remaining = self.remaining.saturating_sub(1);
            let (sid, off) = unpack_pos(loc);
            let Ok(i) = s.segs.binary_search_by_key(&sid, |g| g.id) else {
                continue;
            };
            let ns = self.ns;
            let (crypto, buf) = (self.crypto.as_deref(), &mut self.buf);
            let seg = &s.segs[i];
            let r = seg.with_frame(off, |b| {
                // A record whose checksum fails (or that fails
                // authentication) is skipped and counted: an iterator never
                // yields bytes that were not written. Expired records are
                // invisible here too.
                let Ok(fr) = frame::decode_unchecked(b) else {
                    return Visit::Damaged;
                };
                if fr.kind != Kind::Put
                    || fr.namespace != ns
                    || crate::engine::ttl::is_expired(fr.expires_at)
                {
                    return Visit::Skip;
                }
                if !frame::crc_ok(b) {
                    return Visit::Damaged;
                }
                if fr.sealed.is_none() {
                    return Visit::Yield(f(fr.key, fr.value, fr.expires_at));
                }
                match crypto.map(|c| c.open_frame(seg.place(), off, &fr, buf)) {
                    Some(Ok(p)) => Visit::Yield(f(p.key, p.value, p.expires_at)),
                    _ => Visit::Damaged,
                }
            });
            match r {
                Some(Visit::Yield(r)) => return Some(r),
                Some(Visit::Damaged) => self.damaged += 1,
                _ => {}
            }
        }
        None
    }
}

/// Iterator over `(key, value)` pairs, in no particular order.
pub struct EmdbIter {
    cursor: Cursor,
}

impl EmdbIter {
    pub(crate) fn new(snap: Snap, ns: u32) -> EmdbIter {
        EmdbIter {
            cursor: Cursor::new(snap, ns),
        }
    }
}

impl Iterator for EmdbIter {
    type Item = (Vec<u8>, Vec<u8>);
    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next_with(|k, v, _| (k.to_vec(), v.to_vec()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining))
    }
}

impl EmdbIter {
    /// The next record with its expiry time (Unix ms; `None` for a record
    /// that never expires), from the same snapshot as `next`; beyond the
    /// emdb API (`emdb dump --format json` prints it).
    pub fn next_expiring(&mut self) -> Option<(Vec<u8>, Vec<u8>, Option<u64>)> {
        self.cursor.next_with(|k, v, e| (k.to_vec(), v.to_vec(), e))
    }

    /// Records skipped so far because they were damaged (their checksum
    /// or authentication failed; `get` reports each as
    /// `Error::Corrupted`); beyond the emdb API.
    pub fn damaged(&self) -> usize {
        self.cursor.damaged
    }
}

/// Iterator over keys, in no particular order.
pub struct EmdbKeyIter {
    cursor: Cursor,
}

impl EmdbKeyIter {
    pub(crate) fn new(snap: Snap, ns: u32) -> EmdbKeyIter {
        EmdbKeyIter {
            cursor: Cursor::new(snap, ns),
        }
    }
}

impl Iterator for EmdbKeyIter {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.cursor.next_with(|k, _, _| k.to_vec())
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining))
    }
}
