//! Iterators over a point-in-time snapshot.
//!
//! `iter()` and `keys()` copy the location of every live record under all
//! shard locks at once (8 bytes a key), then read the records lazily. They
//! see exactly the database as it was at that moment: later writes are
//! invisible, and the records they point to stay readable because the
//! iterator holds their segments. Each record's checksum is verified; a
//! damaged record is skipped (`get` reports it as `Error::Corrupted`). A
//! record that has expired by the time the iterator reaches it is skipped.

use crate::log::frame::{self, unpack_pos, Kind};
use crate::log::segment::Held;

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
}

impl Cursor {
    fn new(snap: Vec<(Vec<Held>, Vec<u64>)>, ns: u32) -> Cursor {
        let remaining = snap.iter().map(|(_, l)| l.len()).sum();
        let shards = snap
            .into_iter()
            .map(|(segs, locs)| ShardSnap { segs, locs })
            .collect();
        Cursor {
            shards,
            shard: 0,
            pos: 0,
            remaining,
            ns,
        }
    }

    fn next_with<R>(&mut self, f: impl Fn(&[u8], &[u8]) -> R) -> Option<R> {
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
            let r = s.segs[i]
                .with_frame(off, |b| {
                    let fr = frame::decode_unchecked(b).ok()?;
                    // A record whose checksum fails is skipped: an iterator
                    // never yields bytes that were not written.
                    // Expired records are invisible here too.
                    (fr.kind == Kind::Put
                        && fr.namespace == ns
                        && !crate::engine::ttl::is_expired(fr.expires_at)
                        && frame::crc_ok(b))
                    .then(|| f(fr.key, fr.value))
                })
                .flatten();
            if r.is_some() {
                return r;
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
    pub(crate) fn new(snap: Vec<(Vec<Held>, Vec<u64>)>, ns: u32) -> EmdbIter {
        EmdbIter {
            cursor: Cursor::new(snap, ns),
        }
    }
}

impl Iterator for EmdbIter {
    type Item = (Vec<u8>, Vec<u8>);
    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next_with(|k, v| (k.to_vec(), v.to_vec()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining))
    }
}

/// Iterator over keys, in no particular order.
pub struct EmdbKeyIter {
    cursor: Cursor,
}

impl EmdbKeyIter {
    pub(crate) fn new(snap: Vec<(Vec<Held>, Vec<u64>)>, ns: u32) -> EmdbKeyIter {
        EmdbKeyIter {
            cursor: Cursor::new(snap, ns),
        }
    }
}

impl Iterator for EmdbKeyIter {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        self.cursor.next_with(|k, _| k.to_vec())
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.cursor.remaining))
    }
}
