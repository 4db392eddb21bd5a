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

use crate::error::Error;
use crate::log::frame::{
    self, DecodeError, FrameSpec, SegmentHeader, MIN_FRAME, SEGMENT_HEADER_LEN,
};
use crate::log::hint;
use crate::log::manifest::{Manifest, ShardEntry};
use crate::log::segment;

mod recover;
#[cfg(feature = "encrypt")]
pub use recover::recover_encrypted_from_bytes;
pub use recover::recover_from_bytes;
use recover::{damage, gen_frames};

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

/// A frame re-encodes to exactly its bytes: a plain one with `encode`, an
/// encrypted one with `encode_sealed` given its ciphertext and tag back (and
/// opening it with a fixed key fails cleanly, never panics).
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
    let mut out = vec![0u8; bytes.len()];
    match f.sealed {
        None => frame::encode(&spec, &mut out),
        Some(seal) => {
            let at = f.key_at();
            let n = f.key.len() + f.value.len();
            frame::encode_sealed(&spec, seal, &mut out, |_, body| {
                body.copy_from_slice(&bytes[at..at + n]);
                let mut tag = [0u8; frame::TAG_LEN];
                tag.copy_from_slice(&bytes[at + n..at + n + frame::TAG_LEN]);
                tag
            });
            #[cfg(feature = "encrypt")]
            open_with_a_fixed_key(f);
        }
    }
    assert_eq!(
        out, bytes,
        "a decoded frame does not re-encode to its bytes"
    );
}

/// Opens an encrypted frame under a fixed key at a few places: arbitrary
/// bytes must fail authentication (a forgery is 2^-128), never panic.
#[cfg(feature = "encrypt")]
fn open_with_a_fixed_key(f: &frame::Frame<'_>) {
    use std::sync::OnceLock;
    static FIXED: OnceLock<(crate::crypt::Crypto, crate::crypt::KeyCache)> = OnceLock::new();
    let (c, keys) = FIXED.get_or_init(|| {
        let c = crate::crypt::Crypto::new(crate::crypt::Cipher::Aes256Gcm, &[1u8; 32], Vec::new());
        (c, Default::default())
    });
    let mut buf = Vec::new();
    for off in [64u32, 4096] {
        let at = crate::crypt::Place {
            shard: 0,
            segment: 1,
            keys,
        };
        assert!(
            c.open_frame(at, off, f, &mut buf).is_err(),
            "an arbitrary frame authenticated"
        );
    }
}

/// Appends up to three encrypted frames (their "ciphertext" and tag from
/// the input: the decoders see the layout, not a real seal).
fn gen_sealed_frames(r: &mut Input<'_>, seq: &mut u64, out: &mut Vec<u8>) {
    for _ in 0..r.u8() % 4 {
        *seq += 1;
        let n = 1 + r.u8() as usize % 16;
        let key = r.take(n).to_vec();
        let n = r.u8() as usize % 64;
        let value = r.take(n).to_vec();
        let spec = FrameSpec {
            kind: if r.u8() % 3 == 0 {
                frame::Kind::Remove
            } else {
                frame::Kind::Put
            },
            seq: *seq,
            namespace: r.u8() as u32 % 2,
            batch_count: 0,
            expires_at: (r.u8() % 4 == 0).then(|| r.u64()),
            key: &key,
            value: &value,
        };
        let seal = frame::Seal {
            key_id: r.u64(),
            hash: r.u64(),
            check: r.u64(),
        };
        let at = out.len();
        out.resize(at + spec.encoded_len() + frame::SEAL_LEN, 0);
        let tag_byte = r.u8();
        frame::encode_sealed(&spec, seal, &mut out[at..], |_, _| {
            [tag_byte; frame::TAG_LEN]
        });
    }
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
    match Manifest::decode(bytes, path, Default::default()) {
        Ok(m) => {
            assert_eq!(m.shards.len(), m.shard_count as usize);
            for s in &m.shards {
                assert!(s.segments.windows(2).all(|w| w[0] < w[1]));
            }
            let enc = m.encode();
            let again = Manifest::decode(&enc, path, Default::default())
                .expect("a re-encoded manifest decodes");
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
        hint::read(&path, shard, seg, gen, None)
    } else {
        None
    };
    if ok {
        assert_eq!(
            hint::read(&path, shard ^ 1, seg, gen, None),
            None,
            "a hint file of another shard was accepted"
        );
    }
    let (entries, data_end) = entries?;
    assert_eq!(bytes.len(), 44 + entries.len() * 24, "hint length");
    assert_eq!(data_end, u32_at(20), "hint data end");
    let again = dir.path().join("again.hint");
    hint::write(
        &crate::io::Files::default(),
        &again,
        (shard, seg),
        gen,
        data_end,
        &entries,
        None,
    )
    .expect("write hint");
    assert_eq!(
        fs::read(&again).expect("read hint"),
        bytes,
        "hint does not re-encode to its bytes"
    );
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
            gen_sealed_frames(r, &mut seq, &mut b);
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
            gen_sealed_frames(r, &mut seq, &mut b);
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
                batch_floor: 0,
                aborted: Vec::new(),
                shards,
                namespaces: Vec::new(),
                next_namespace: 1,
                names: Default::default(),
            }
            .encode()
        }
        SampleKind::Hint => {
            let entries: Vec<hint::Entry> = (0..r.u8() % 16)
                .map(|_| hint::Entry {
                    hash: r.u64(),
                    off: r.u16() as u32,
                    ns: r.u8() as u32 % 3,
                    expires_at: r.u64() % 3,
                })
                .collect();
            let dir = Scratch::new("sample");
            let path = dir.path().join("h.hint");
            let (shard, seg, gen) = (r.u8() as u32, r.u16() as u32, r.u64());
            let data_end = r.u16() as u32;
            hint::write(
                &crate::io::Files::default(),
                &path,
                (shard, seg),
                gen,
                data_end,
                &entries,
                None,
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
