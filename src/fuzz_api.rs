//! Entry points for fuzzing (cargo feature `fuzzing`): the on-disk decoders
//! and recovery, run on arbitrary bytes. Used by the `cargo fuzz` targets in
//! `fuzz/` and by `tests/fuzz_decode.rs`. Not a stable API; hidden from the
//! documentation.
//!
//! No input may make these functions panic through the engine. Where a decode
//! succeeds they also check what must then hold (a decoded value re-encodes
//! to something that decodes to the same value, the checked and unchecked
//! frame decoders agree, a recovered database reopens to the same contents,
//! ...). A failed check panics on purpose, so that a fuzzer reports it: every
//! panic out of this module is an engine bug.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::builder::IoBackend;
use crate::db::Emdb;
use crate::error::Error;
use crate::log::frame::{
    self, pack_pos, DecodeError, FrameSpec, Kind, SegmentHeader, MIN_FRAME, SEGMENT_HEADER_LEN,
};
use crate::log::hint;
use crate::log::manifest::{Manifest, ShardEntry};
use crate::log::segment;

/// What [`decode_frames`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameWalk {
    /// Frames that decoded with a good checksum.
    pub frames: usize,
    /// Offsets at which no frame decoded (each skipped by one byte).
    pub invalid: usize,
}

/// Walks `bytes` the way recovery walks a segment body: decodes the frame at
/// the current offset and steps over it; where no frame decodes, it moves on
/// by one byte, as recovery's search for sync markers after damage does.
/// Every offset is thus tried with the checked and the unchecked decoder and
/// with `crc_ok`, which must agree with each other.
pub fn decode_frames(bytes: &[u8]) -> FrameWalk {
    let mut walk = FrameWalk::default();
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let checked = frame::decode(rest);
        let unchecked = frame::decode_unchecked(rest);
        match checked {
            Ok(f) => {
                assert_eq!(unchecked, Ok(f), "decode and decode_unchecked disagree");
                assert!(
                    f.len >= MIN_FRAME && f.len <= rest.len(),
                    "frame length {} outside [{MIN_FRAME}, {}]",
                    f.len,
                    rest.len()
                );
                assert!(frame::crc_ok(&rest[..f.len]), "decode accepted a bad CRC");
                check_reencode(&rest[..f.len], &f);
                walk.frames += 1;
                off += f.len;
            }
            Err(e) => {
                match unchecked {
                    // Layout fine: only the checksum can be wrong.
                    Ok(f) => {
                        assert_eq!(e, DecodeError::Invalid("checksum mismatch"));
                        assert!(!frame::crc_ok(&rest[..f.len]));
                    }
                    Err(u) => assert_eq!(e, u, "decode and decode_unchecked disagree"),
                }
                let _ = frame::crc_ok(rest);
                walk.invalid += 1;
                off += 1;
            }
        }
    }
    walk
}

/// A frame without a nonce re-encodes to exactly its bytes.
fn check_reencode(bytes: &[u8], f: &frame::Frame<'_>) {
    let spec = FrameSpec {
        kind: f.kind,
        seq: f.seq,
        namespace: f.namespace,
        batch_count: f.batch_count,
        expires_at: f.expires_at,
        key: f.key,
        value: f.value,
    };
    if spec.encoded_len() != bytes.len() {
        // Carries a nonce (the encrypted flag), which `encode` never writes.
        return;
    }
    let mut out = vec![0u8; bytes.len()];
    frame::encode(&spec, &mut out);
    assert_eq!(
        out, bytes,
        "a decoded frame does not re-encode to its bytes"
    );
}

/// Decodes a segment header. `true` if it is valid.
pub fn decode_segment_header(bytes: &[u8]) -> bool {
    match SegmentHeader::decode(bytes) {
        Ok(h) => {
            let enc = h.encode();
            assert_eq!(SegmentHeader::decode(&enc), Ok(h), "header roundtrip");
            // Reserved bytes are not checked on decode; with them zero the
            // encoding is exact.
            let b = &bytes[..SEGMENT_HEADER_LEN];
            if b[28..32].iter().chain(&b[40..60]).all(|x| *x == 0) {
                assert_eq!(&enc[..], b, "header does not re-encode to its bytes");
            }
            true
        }
        Err(_) => false,
    }
}

/// Decodes a manifest. `true` if it is valid.
pub fn decode_manifest(bytes: &[u8]) -> bool {
    let path = Path::new("MANIFEST");
    match Manifest::decode(bytes, path) {
        Ok(m) => {
            assert_eq!(m.shards.len(), m.shard_count as usize);
            for s in &m.shards {
                assert!(s.segments.windows(2).all(|w| w[0] < w[1]));
            }
            let enc = m.encode();
            let again = Manifest::decode(&enc, path).expect("a re-encoded manifest decodes");
            assert_eq!(again, m, "manifest roundtrip");
            if bytes.get(20..24) == Some(&[0, 0, 0, 0][..]) {
                assert_eq!(enc, bytes, "manifest does not re-encode to its bytes");
            }
            true
        }
        Err(Error::MagicMismatch | Error::VersionMismatch { .. } | Error::Corrupted { .. }) => {
            false
        }
        Err(e) => panic!("unexpected manifest error {e:?}"),
    }
}

/// Reads `bytes` as a hint file (through a temporary file, as recovery
/// reads one), once for the identity its own header names and once for
/// another. Returns the entries read.
pub fn decode_hint(bytes: &[u8]) -> Option<usize> {
    let dir = Scratch::new("hint");
    let path = dir.path().join(segment::hint_name(0, 1));
    let ok = fs::write(&path, bytes).is_ok();
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes.get(at..at + 8).map_or(0, |b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let (shard, seg, gen) = (u32_at(12), u32_at(16), u64_at(24));
    let entries = if ok {
        hint::read(&path, shard, seg, gen)
    } else {
        None
    };
    if ok {
        assert_eq!(
            hint::read(&path, shard ^ 1, seg, gen),
            None,
            "a hint file of another shard was accepted"
        );
    }
    let entries = entries?;
    assert_eq!(bytes.len(), 44 + entries.len() * 12, "hint length");
    if u32_at(20) == 0 {
        let again = dir.path().join("again.hint");
        hint::write(
            &crate::io::Files::default(),
            &again,
            shard,
            seg,
            gen,
            &entries,
        )
        .expect("write hint");
        assert_eq!(
            fs::read(&again).expect("read hint"),
            bytes,
            "hint does not re-encode to its bytes"
        );
    }
    Some(entries.len())
}

/// Runs every decoder of this module on `bytes`.
pub fn decode_all(bytes: &[u8]) {
    decode_frames(bytes);
    decode_segment_header(bytes);
    decode_manifest(bytes);
    decode_hint(bytes);
}

/// Which file format [`sample`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleKind {
    /// A run of frames, as a segment body holds them.
    Frames,
    /// A segment file: header, then frames.
    Segment,
    /// A manifest.
    Manifest,
    /// A hint file.
    Hint,
}

impl SampleKind {
    /// Every kind.
    pub const ALL: [SampleKind; 4] = [
        SampleKind::Frames,
        SampleKind::Segment,
        SampleKind::Manifest,
        SampleKind::Hint,
    ];
}

/// A valid encoding of `kind` whose contents `bytes` choose, made by the
/// engine's own encoders: the decoders must accept it whole.
pub fn sample(kind: SampleKind, bytes: &[u8]) -> Vec<u8> {
    sample_from(kind, &mut Input { b: bytes })
}

fn sample_from(kind: SampleKind, r: &mut Input<'_>) -> Vec<u8> {
    let mut seq = r.u64() >> 8;
    match kind {
        SampleKind::Frames => {
            let mut b = Vec::new();
            gen_frames(r, (0, 1), 1, &mut seq, &mut b, &mut BTreeMap::new());
            b
        }
        SampleKind::Segment => {
            let shard_count = 1 + r.u8() as u32 % 4;
            let header = SegmentHeader {
                shard: r.u8() as u32 % shard_count,
                shard_count,
                segment: 1 + r.u16() as u32,
                hash_seed: r.u64(),
            };
            let mut b = header.encode().to_vec();
            gen_frames(
                r,
                (header.shard, shard_count),
                header.segment,
                &mut seq,
                &mut b,
                &mut BTreeMap::new(),
            );
            b
        }
        SampleKind::Manifest => {
            let shard_count = 1 + r.u8() as u32 % 4;
            let shards = (0..shard_count)
                .map(|_| {
                    let mut id = 0u32;
                    let segments = (0..r.u8() % 5)
                        .map(|_| {
                            id += 1 + r.u8() as u32 % 3;
                            id
                        })
                        .collect();
                    ShardEntry {
                        segments,
                        checkpoint_pos: r.u64(),
                    }
                })
                .collect();
            Manifest {
                shard_count,
                hash_seed: r.u64(),
                checkpoint_gen: r.u8() as u64,
                seq_floor: seq,
                shards,
            }
            .encode()
        }
        SampleKind::Hint => {
            let entries: Vec<(u64, u32)> = (0..r.u8() % 16)
                .map(|_| (r.u64(), r.u16() as u32))
                .collect();
            let dir = Scratch::new("sample");
            let path = dir.path().join("h.hint");
            let (shard, seg, gen) = (r.u8() as u32, r.u16() as u32, r.u64());
            hint::write(
                &crate::io::Files::default(),
                &path,
                shard,
                seg,
                gen,
                &entries,
            )
            .expect("write hint");
            fs::read(&path).expect("read hint")
        }
    }
}

/// Runs the decoder of `kind` on `bytes`.
pub fn decode_as(kind: SampleKind, bytes: &[u8]) {
    match kind {
        SampleKind::Frames => {
            decode_frames(bytes);
        }
        SampleKind::Segment => {
            decode_segment_header(bytes);
            decode_frames(bytes.get(SEGMENT_HEADER_LEN..).unwrap_or_default());
        }
        SampleKind::Manifest => {
            decode_manifest(bytes);
        }
        SampleKind::Hint => {
            decode_hint(bytes);
        }
    }
}

/// The body of the `decode` fuzz target. The first byte picks a format;
/// with its bit 0x10 clear the rest of the input is decoded as it is,
/// otherwise the input first builds a valid [`sample`] of that format and
/// then damages it (bytes changed, cut, extended), so that the fuzzer gets
/// past the checksums.
pub fn fuzz_decode(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let kind = SampleKind::ALL[(sel % 4) as usize];
    if sel & 0x10 == 0 {
        decode_as(kind, rest);
        return;
    }
    let mut r = Input { b: rest };
    let mut img = sample_from(kind, &mut r);
    if sel & 0x20 == 0 {
        // Undamaged: every decoder must accept its own format.
        check_valid(kind, &img);
    }
    damage(&mut img, &mut r);
    decode_as(kind, &img);
}

/// Asserts that the decoder of `kind` accepts `bytes` whole.
pub fn check_valid(kind: SampleKind, bytes: &[u8]) {
    match kind {
        SampleKind::Frames => {
            assert_eq!(decode_frames(bytes).invalid, 0, "valid frames rejected")
        }
        SampleKind::Segment => {
            assert!(
                decode_segment_header(bytes),
                "valid segment header rejected"
            );
            assert_eq!(
                decode_frames(&bytes[SEGMENT_HEADER_LEN..]).invalid,
                0,
                "valid frames rejected"
            );
        }
        SampleKind::Manifest => assert!(decode_manifest(bytes), "valid manifest rejected"),
        SampleKind::Hint => assert!(decode_hint(bytes).is_some(), "valid hint rejected"),
    }
}

/// Changes bytes of `img`, cuts it or extends it, as the input says.
fn damage(img: &mut Vec<u8>, r: &mut Input<'_>) {
    for _ in 0..r.u8() % 8 {
        if img.is_empty() {
            break;
        }
        let at = r.u16() as usize % img.len();
        match r.u8() {
            x if x < 0xe0 => img[at] ^= x | 1,
            _ => {
                // Overwrite a little-endian length-sized field.
                let v = r.u16().to_le_bytes();
                for (i, b) in v.iter().enumerate() {
                    if let Some(p) = img.get_mut(at + i) {
                        *p = *b;
                    }
                }
            }
        }
    }
    match r.u8() % 4 {
        0 => {
            let cut = r.u16() as usize % (img.len() + 1);
            img.truncate(cut);
        }
        1 => {
            let n = r.u8() as usize;
            img.extend_from_slice(r.take(n));
        }
        _ => {}
    }
}

/// A fresh directory under the system temporary directory (`TMPDIR`),
/// removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("emdb-fuzz-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create a scratch directory");
        Scratch(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Reads little-endian integers from the input; zeros once it runs out.
struct Input<'a> {
    b: &'a [u8],
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.b.split_first() {
            Some((x, rest)) => {
                self.b = rest;
                *x
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, i| acc | (self.u8() as u64) << (8 * i))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.b.len());
        let (a, rest) = self.b.split_at(n);
        self.b = rest;
        a
    }
}

const RECOVER_SEGMENT_SIZE: u64 = 16 << 10;
const RECOVER_SEED: u64 = 0x5eed_f022;

/// Appends frames described by the input to `seg` (a segment image whose
/// current length is the next frame's offset), each with a good checksum:
/// puts, removes, clears and sync markers, some in batches, some with an
/// expiry, in two namespaces, over a keyspace of 8 keys per shard (each key
/// in the shard its hash routes it to, as the engine writes them). Keeps
/// `live` (key hash -> segment id and offset of its live put) as the index
/// would, for hint files.
fn gen_frames(
    r: &mut Input<'_>,
    (shard, shard_count): (u32, u32),
    segment_id: u32,
    seq: &mut u64,
    seg: &mut Vec<u8>,
    live: &mut BTreeMap<u64, (u32, u32)>,
) {
    for _ in 0..r.u8() % 12 {
        let t = r.u8();
        let kind = [
            Kind::Put,
            Kind::Put,
            Kind::Put,
            Kind::Remove,
            Kind::Clear,
            Kind::Sync,
        ][(t % 6) as usize];
        let ns = (t >> 7) as u32 & (r.u8() as u32 % 2);
        let key = shard_key(ns, shard, shard_count, r.u8() % 8);
        let off = seg.len() as u32;
        // A real marker claims a position at or before itself; some claim
        // anything.
        let claim = match r.u8() {
            x if x % 2 == 0 => pack_pos(segment_id, off),
            x => pack_pos((x as u32 >> 1) % 3, r.u16() as u32),
        };
        let value: Vec<u8> = match kind {
            Kind::Sync => claim.to_le_bytes().to_vec(),
            Kind::Put => {
                let n = r.u8() as usize;
                (0..n).map(|i| (i as u8) ^ t).collect()
            }
            _ => Vec::new(),
        };
        let key: &[u8] = match kind {
            Kind::Put | Kind::Remove => &key,
            _ => &[],
        };
        *seq += (r.u8() % 3) as u64;
        let spec = FrameSpec {
            kind,
            seq: *seq,
            namespace: ns,
            batch_count: if kind == Kind::Clear {
                shard_count
            } else if t & 0x40 != 0 {
                (r.u8() % 4) as u32
            } else {
                0
            },
            expires_at: (t & 0x20 != 0).then(|| r.u64()),
            key,
            value: &value,
        };
        let mut buf = vec![0u8; spec.encoded_len()];
        frame::encode(&spec, &mut buf);
        let h = crate::index::key_hash(RECOVER_SEED, spec.namespace, key);
        match kind {
            Kind::Put => {
                live.insert(h, (segment_id, off));
            }
            Kind::Remove => {
                live.remove(&h);
            }
            Kind::Clear => live.clear(),
            Kind::Sync => {}
        }
        seg.extend_from_slice(&buf);
    }
}

/// The `n`th key (of those named `k<number>`) that the engine routes to
/// `shard` of `shard_count` in the fuzzed databases.
fn shard_key(ns: u32, shard: u32, shard_count: u32, n: u8) -> Vec<u8> {
    (0u32..)
        .map(|i| format!("k{i}").into_bytes())
        .filter(|k| {
            let h = crate::index::key_hash(RECOVER_SEED, ns, k);
            (((h >> 32) * shard_count as u64) >> 32) as u32 == shard
        })
        .nth(n as usize)
        .expect("keys of every shard")
}

/// Builds a database directory from `bytes` and opens it: the input
/// describes one or two shards of one or two segments each, with frames of
/// every kind (put, remove, clear, sync marker; batches, expiry) encoded with
/// good checksums, then damaged (bytes changed, files cut), plus optional
/// hint files and a manifest (itself damaged at times). The open may fail with an
/// error; if it succeeds, every read must agree with iteration, the database
/// must take a write and a flush, and it must reopen to the same contents.
/// Returns the number of keys recovered, or `None` if the open failed.
pub fn recover_from_bytes(bytes: &[u8]) -> Option<usize> {
    let scratch = Scratch::new("recover");
    let dir = scratch.path().join("db");
    fs::create_dir_all(&dir).expect("create the database directory");
    let mut r = Input { b: bytes };
    let mode = r.u8();
    let shard_count = 1 + (mode & 1) as u32;
    let nseg = 1 + ((mode >> 1) & 1) as u32;
    let raw_manifest = mode & 0x04 != 0;
    let with_hints = mode & 0x08 != 0;
    let mut seq = 1u64;
    let mut checkpoint = Vec::new();
    for s in 0..shard_count {
        let mut hinted_pos = 0u64;
        let mut live = BTreeMap::new();
        let mut hints = Vec::new();
        for id in 1..=nseg {
            let header = SegmentHeader {
                shard: s,
                shard_count,
                segment: id,
                hash_seed: RECOVER_SEED,
            };
            let mut seg = header.encode().to_vec();
            gen_frames(&mut r, (s, shard_count), id, &mut seq, &mut seg, &mut live);
            hinted_pos = pack_pos(id, seg.len() as u32);
            // Raw bytes after the frames, then zeros.
            let n = r.u8() as usize % 64;
            seg.extend_from_slice(r.take(n));
            seg.resize(seg.len() + (r.u8() as usize) * 16, 0);
            // Damage.
            for _ in 0..r.u8() % 4 {
                let at = r.u16() as usize % seg.len();
                seg[at] ^= r.u8() | 1;
            }
            if r.u8() % 8 == 0 {
                let cut = r.u16() as usize % (seg.len() + 1);
                seg.truncate(cut);
            }
            fs::write(dir.join(segment::file_name(s, id)), &seg).expect("write segment");
            if with_hints && r.u8() % 8 != 0 {
                // (segment, generation, entry to move and where)
                let gen = 1 + (r.u8() % 8 == 0) as u64;
                let moved = (r.u8() % 4 == 0).then(|| (r.u8() as usize, r.u16() as u32));
                hints.push((id, gen, moved));
            }
        }
        // A checkpoint's hints list the live puts, each in its segment.
        for (id, gen, moved) in hints {
            let mut entries: Vec<(u64, u32)> = live
                .iter()
                .filter(|(_, (sid, _))| *sid == id)
                .map(|(h, (_, off))| (*h, *off))
                .collect();
            if let (false, Some((i, to))) = (entries.is_empty(), moved) {
                let n = entries.len();
                entries[i % n].1 = to;
            }
            entries.sort_unstable_by_key(|e| e.1);
            let path = dir.join(segment::hint_name(s, id));
            hint::write(&crate::io::Files::default(), &path, s, id, gen, &entries)
                .expect("write hint");
        }
        if with_hints && r.u8() % 4 == 0 {
            hinted_pos = pack_pos(nseg, r.u16() as u32);
        }
        checkpoint.push(if with_hints { hinted_pos } else { 0 });
    }
    let m = Manifest {
        shard_count,
        hash_seed: RECOVER_SEED,
        checkpoint_gen: with_hints as u64,
        seq_floor: if with_hints { seq + 1 } else { 0 },
        shards: checkpoint
            .into_iter()
            .map(|checkpoint_pos| ShardEntry {
                segments: (1..=nseg).collect(),
                checkpoint_pos,
            })
            .collect(),
    };
    let manifest = if raw_manifest {
        let mut b = m.encode();
        for _ in 0..r.u8() % 3 {
            let at = r.u16() as usize % b.len();
            b[at] ^= r.u8() | 1;
        }
        b
    } else {
        m.encode()
    };
    fs::write(dir.join(crate::log::manifest::FILE), manifest).expect("write manifest");

    let open = || {
        Emdb::builder()
            .path(&dir)
            .shards(shard_count as usize)
            .segment_size(RECOVER_SEGMENT_SIZE)
            .max_key_len(64)
            .max_value_len(1024)
            .io_backend(IoBackend::Portable)
            .build()
    };
    let db = match open() {
        Ok(db) => db,
        Err(
            Error::Corrupted { .. }
            | Error::MagicMismatch
            | Error::VersionMismatch { .. }
            | Error::Io(_),
        ) => return None,
        Err(e) => panic!("unexpected error opening a damaged database: {e:?}"),
    };
    let first = contents(&db);
    db.insert("fuzz-probe", "after recovery")
        .expect("a recovered database takes writes");
    db.flush().expect("a recovered database flushes");
    drop(db);
    let db = open().expect("a recovered database reopens");
    let mut second = contents(&db);
    assert_eq!(
        second.remove(&b"fuzz-probe"[..]).as_deref(),
        Some(&b"after recovery"[..]),
        "the write after recovery is lost"
    );
    let first: BTreeMap<_, _> = first
        .into_iter()
        .filter(|(k, _)| k != b"fuzz-probe")
        .collect();
    assert_eq!(first, second, "a reopen changed what recovery found");
    Some(first.len())
}

/// Every pair the iterator yields, checked against `get` and `len`.
fn contents(db: &Emdb) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (k, v) in db.iter().expect("iter") {
        match db.get(&k) {
            Ok(Some(g)) => assert_eq!(g, v, "get and iter disagree"),
            Ok(None) => panic!("iter yields a key that get does not find"),
            Err(Error::Corrupted { .. }) => {}
            Err(e) => panic!("get failed: {e:?}"),
        }
        assert!(out.insert(k, v).is_none(), "iter yields a key twice");
    }
    let len = db.len().expect("len");
    assert!(out.len() <= len, "iter yields more keys than len");
    out
}
