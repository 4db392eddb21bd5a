//! Recovery of damaged database images (the `recover` fuzz target): a small
//! database is generated from the input, damaged, and opened.

use std::collections::BTreeMap;
use std::fs;

use super::{Input, Scratch};
use crate::db::Emdb;
use crate::error::Error;
use crate::io::IoBackend;
use crate::log::frame::{self, pack_pos, FrameSpec, Kind, SegmentHeader};
use crate::log::hint;
use crate::log::manifest::{Manifest, ShardEntry};
use crate::log::segment;

/// Changes bytes of `img`, cuts it or extends it, as the input says.
pub(super) fn damage(img: &mut Vec<u8>, r: &mut Input<'_>) {
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

const RECOVER_SEGMENT_SIZE: u64 = 16 << 10;
const RECOVER_SEED: u64 = 0x5eed_f022;

/// Appends frames described by the input to `seg` (a segment image whose
/// current length is the next frame's offset), each with a good checksum:
/// puts, removes, clears and sync markers, some in batches, some with an
/// expiry, in two namespaces, over a keyspace of 8 keys per shard (each key
/// in the shard its hash routes it to, as the engine writes them). Keeps
/// `live` (key hash -> segment id and offset of its live put) as the index
/// would, for hint files.
pub(super) fn gen_frames(
    r: &mut Input<'_>,
    (shard, shard_count): (u32, u32),
    segment_id: u32,
    seq: &mut u64,
    seg: &mut Vec<u8>,
    live: &mut BTreeMap<u64, (u32, u32, u32, u64)>,
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
                live.insert(h, (segment_id, off, ns, spec.expires_at.unwrap_or(0)));
            }
            Kind::Remove => {
                live.remove(&h);
            }
            // A clear empties its own namespace only.
            Kind::Clear => live.retain(|_, e| e.2 != ns),
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
            let mut entries: Vec<hint::Entry> = live
                .iter()
                .filter(|(_, (sid, _, _, _))| *sid == id)
                .map(|(h, (_, off, ns, exp))| hint::Entry {
                    hash: *h,
                    off: *off,
                    ns: *ns,
                    expires_at: *exp,
                })
                .collect();
            if let (false, Some((i, to))) = (entries.is_empty(), moved) {
                let n = entries.len();
                entries[i % n].off = to;
            }
            entries.sort_unstable_by_key(|e| e.off);
            let path = dir.join(segment::hint_name(s, id));
            let seg_len =
                fs::metadata(dir.join(segment::file_name(s, id))).map_or(0, |m| m.len() as u32);
            hint::write(
                &crate::io::Files::default(),
                &path,
                (s, id),
                gen,
                seg_len,
                &entries,
                None,
            )
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
        batch_floor: 0,
        aborted: Vec::new(),
        // The fuzzed frames use the default namespace and namespace 1.
        namespaces: vec![(1, "fuzz".to_string())],
        next_namespace: 2,
        shards: checkpoint
            .into_iter()
            .map(|checkpoint_pos| ShardEntry {
                segments: (1..=nseg).collect(),
                checkpoint_pos,
            })
            .collect(),
        names: Default::default(),
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
    let db = opened(open())?;
    probe_and_reopen(db, open)
}

/// The database a damaged image opened as, or `None` for an error a
/// damaged image may give (any other error is a bug).
fn opened(r: crate::Result<Emdb>) -> Option<Emdb> {
    match r {
        Ok(db) => Some(db),
        Err(
            Error::Corrupted { .. }
            | Error::MagicMismatch
            | Error::VersionMismatch { .. }
            | Error::EncryptionKeyMismatch
            | Error::Encryption(_)
            | Error::Io(_),
        ) => None,
        Err(e) => panic!("unexpected error opening a damaged database: {e:?}"),
    }
}

/// What a recovered database holds, checked: it reads consistently, takes
/// a write, and reopens (with `open`) to the same contents plus that write.
fn probe_and_reopen(db: Emdb, open: impl Fn() -> crate::Result<Emdb>) -> Option<usize> {
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

/// Recovery of a damaged encrypted database: an encrypted database written
/// through the engine as the input says (puts, removes, batches, a
/// namespace, flushes, maybe a checkpoint), closed, then damaged in its
/// segments, hint files, keyring or manifest, and opened with its key. The
/// open may fail with an error but not panic; an opened database must read
/// consistently (never a value that was not written), take a write and
/// reopen to the same contents. Returns the records found.
#[cfg(feature = "encrypt")]
pub fn recover_encrypted_from_bytes(bytes: &[u8]) -> Option<usize> {
    let scratch = Scratch::new("recover-enc");
    let dir = scratch.path().join("db");
    let mut r = Input { b: bytes };
    let open = || {
        Emdb::builder()
            .path(&dir)
            .shards(2)
            .segment_size(RECOVER_SEGMENT_SIZE)
            .max_key_len(64)
            .max_value_len(1024)
            .io_backend(IoBackend::Portable)
            .background_compaction(false)
            .encryption_key([0x5e; 32])
            .build()
    };
    let db = open().expect("a new encrypted database opens");
    let ns = db.namespace("fuzz").expect("a namespace");
    let value = |k: u8, n: u8| vec![k ^ n; 1 + n as usize * 3];
    for _ in 0..r.u8() % 64 {
        let k = [b'k', r.u8() % 16];
        match r.u8() % 8 {
            0 => {
                db.remove(k).expect("remove");
            }
            1 => {
                let n = r.u8();
                let batch: Vec<_> = (0..1 + n % 6).map(|i| ([b'b', i], value(i, n))).collect();
                db.insert_many(batch).expect("batch");
            }
            2 => db.flush().expect("flush"),
            3 => ns.insert(k, value(k[1], r.u8())).expect("namespace insert"),
            _ => db.insert(k, value(k[1], r.u8())).expect("insert"),
        }
    }
    if r.u8() % 2 == 0 {
        db.checkpoint().expect("checkpoint");
    }
    drop(ns);
    db.close().expect("close");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("list the database")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
        .collect();
    names.sort();
    for _ in 0..r.u8() % 3 {
        if names.is_empty() {
            break;
        }
        let p = &names[r.u8() as usize % names.len()];
        let mut img = fs::read(p).expect("read a file of the database");
        damage(&mut img, &mut r);
        fs::write(p, &img).expect("write the damaged file");
    }
    let db = opened(open())?;
    let first = contents(&db);
    for (k, v) in &first {
        // Every value read is one the input wrote for its key: one byte
        // repeated 3n + 1 times, under a key of the key space.
        let uniform = v.first().is_some_and(|b| v.iter().all(|x| x == b)) && v.len() % 3 == 1;
        let ok = uniform && matches!(k.as_slice(), [b'b', 0..=5] | [b'k', 0..=15]);
        assert!(ok, "a value that was never written: {k:?} -> {v:?}");
    }
    probe_and_reopen(db, open)
}
