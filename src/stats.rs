//! `EmdbStats`: what `Emdb::stats` reports.

use crate::io::IoBackend;

/// A snapshot of the database's figures.
///
/// Each shard's figures are read together under its lock, so that for a
/// shard `live_bytes + dead_bytes` plus 64 bytes of header per segment is
/// its `logical_size_bytes` even while the core appends markers or the
/// background compactor moves records. Shards are read one after another:
/// with writes in flight, the totals are not one point in time.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EmdbStats {
    /// Keys in every namespace of the database (the sum of their `len()`,
    /// except that expired records count until a sweep or compaction
    /// removes them).
    pub live_records: u64,
    /// Namespaces, the default one included.
    pub namespace_count: usize,
    /// Bytes of log data (frames and headers) in the segments.
    pub logical_size_bytes: u64,
    /// Bytes of segment files on disk, preallocated space included (0 in
    /// memory).
    pub file_size_bytes: u64,
    /// Preallocated, not yet used bytes of the segment files.
    pub preallocated_bytes: u64,
    /// Whether the ordered index for range scans is kept.
    pub range_scans_enabled: bool,
    /// Whether records are encrypted at rest.
    pub encrypted: bool,
    /// The I/O backend in use (never `Auto`).
    pub io_backend: IoBackend,
    /// Shard cores (threads).
    pub shards: usize,
    /// fdatasyncs the engine issued since open (each is one device flush
    /// on a device with a volatile write cache).
    pub device_flushes: u64,
    /// Records those syncs made durable.
    pub durable_records: u64,
    /// `durable_records / device_flushes`: how well group commit coalesces.
    pub records_per_flush: f64,
    /// Memory held by the hash index, in bytes.
    pub index_bytes: u64,
    /// Memory held by the ordered index of range scans, in bytes (0 when
    /// they are off).
    pub ordered_index_bytes: u64,
    /// Bytes of the records the index points to (live), in all segments.
    pub live_bytes: u64,
    /// Bytes of frames no live record holds: overwritten and removed
    /// records, tombstones, markers. Compaction reclaims them.
    pub dead_bytes: u64,
    /// Bytes of frames recovery took from hint files whose checksums this
    /// process has not checked yet: a read of such a frame checks its CRC
    /// first. A background thread checks them after open and brings this
    /// to zero (it stays above zero for a segment with a damaged frame).
    pub unverified_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Compaction runs that retired segments since open.
    pub compactions: u64,
    /// Bytes of segment files compaction retired since open.
    pub bytes_reclaimed: u64,
    /// Bytes of records (and tombstones) compaction moved since open.
    pub bytes_moved: u64,
}

impl EmdbStats {
    pub(crate) fn empty(io_backend: IoBackend, shards: usize) -> EmdbStats {
        EmdbStats {
            live_records: 0,
            namespace_count: 0,
            logical_size_bytes: 0,
            file_size_bytes: 0,
            preallocated_bytes: 0,
            range_scans_enabled: false,
            encrypted: false,
            io_backend,
            shards,
            device_flushes: 0,
            durable_records: 0,
            records_per_flush: 0.0,
            index_bytes: 0,
            ordered_index_bytes: 0,
            live_bytes: 0,
            dead_bytes: 0,
            unverified_bytes: 0,
            segments: 0,
            compactions: 0,
            bytes_reclaimed: 0,
            bytes_moved: 0,
        }
    }
}
