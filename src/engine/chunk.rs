//! Where a range read puts the records it reads ([`Sink`]), and the chunk
//! buffer of the lazy readers ([`Packed`]).

use crate::log::frame::Frame;

/// Where a range read puts the records it reads, in ascending key order.
pub(crate) trait Sink {
    /// Copies the key and value of `fr` (a plaintext or decrypted frame).
    fn take(&mut self, fr: &Frame<'_>);
    /// Copies a record whose key (its first `key_len` bytes) and value lie
    /// back to back in `both`, as a plaintext frame holds them.
    fn take_record(&mut self, both: &[u8], key_len: usize);
    /// How many records it holds.
    fn count(&self) -> usize;
    /// Drops the records after the first `n`.
    fn cut(&mut self, n: usize);
}

/// The eager calls' result: each record copied into its own two `Vec`s.
impl Sink for Vec<(Vec<u8>, Vec<u8>)> {
    fn take(&mut self, fr: &Frame<'_>) {
        self.push((fr.key.to_vec(), fr.value.to_vec()));
    }
    fn take_record(&mut self, both: &[u8], key_len: usize) {
        let (key, value) = both.split_at(key_len);
        self.push((key.to_vec(), value.to_vec()));
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn cut(&mut self, n: usize) {
        self.truncate(n);
    }
}

/// A lazy reader's chunk: its records packed back to back in one buffer
/// (each key, then its value), reused from chunk to chunk. A cursor lends
/// records from here; an iterator copies each into the `Vec`s it yields
/// only when asked for it, so each record's two allocations are freed
/// before the next record's are made (the allocator's per-thread cache
/// serves them), and no allocation is made while the shard locks are held.
///
/// (Lending records straight from the segments' file views instead, the
/// chunk holding a claim on each segment as a `ValueRef` does, was tried:
/// the claims' atomic counts cost a prefix scan more than the copies they
/// save: 10,000 prefix scans of about 100 keys took 137-150 ms against
/// 115-126 ms copying, full scans alike. One claim per segment and chunk
/// measured alike too: the frames' lines are fetched either way, and
/// fetching only their headers helps only loops that never read the
/// values; ARCHITECTURE.md, "Range scans".)
#[derive(Default)]
pub(crate) struct Packed {
    bytes: Vec<u8>,
    /// Where each record's key and value end in `bytes`.
    ends: Vec<(usize, usize)>,
}

/// Bytes of buffer a thread keeps for its next lazy reader.
const SPARE_MAX: usize = 256 << 10;

thread_local! {
    /// The last lazy reader's buffer, for the next one this thread makes:
    /// a short prefix scan then allocates nothing for its chunk (a fresh
    /// 25 KiB buffer each time, freed at the heap's top, was given back to
    /// the kernel and faulted in again by the next scan).
    static SPARE: std::cell::Cell<Option<Packed>> = const { std::cell::Cell::new(None) };
}

impl Packed {
    /// An empty buffer: this thread's spare one if it has it.
    pub(crate) fn from_spare() -> Packed {
        // `try_with`: a reader made or dropped while the thread's locals
        // are being destroyed goes without.
        SPARE
            .try_with(|s| s.take())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps this buffer (emptied) as the thread's spare, unless it grew
    /// large.
    pub(crate) fn keep_as_spare(mut self) {
        if self.bytes.capacity() <= SPARE_MAX {
            self.clear();
            // A buffer already there is dropped instead.
            let _ = SPARE.try_with(|s| s.set(Some(self)));
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The key and value of record `i` (below [`len`](Packed::len)).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> (&[u8], &[u8]) {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p].1);
        let (key_end, value_end) = self.ends[i];
        (&self.bytes[start..key_end], &self.bytes[key_end..value_end])
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Room for `records` records of about 200 bytes without growing.
    pub(crate) fn reserve(&mut self, records: usize) {
        self.ends.reserve(records);
        self.bytes.reserve(records * 200);
    }
}

impl Sink for Packed {
    #[inline]
    fn take(&mut self, fr: &Frame<'_>) {
        // One copy where the frame holds the key and value back to back.
        match fr.key_and_value() {
            Some(both) => self.take_record(both, fr.key.len()),
            None => {
                let key_end = self.bytes.len() + fr.key.len();
                self.bytes.extend_from_slice(fr.key);
                self.bytes.extend_from_slice(fr.value);
                self.ends.push((key_end, self.bytes.len()));
            }
        }
    }

    #[inline]
    fn take_record(&mut self, both: &[u8], key_len: usize) {
        let key_end = self.bytes.len() + key_len;
        self.bytes.extend_from_slice(both);
        self.ends.push((key_end, self.bytes.len()));
    }

    #[inline]
    fn count(&self) -> usize {
        self.len()
    }

    fn cut(&mut self, n: usize) {
        self.ends.truncate(n);
        let end = n.checked_sub(1).map_or(0, |p| self.ends[p].1);
        self.bytes.truncate(end);
    }
}
