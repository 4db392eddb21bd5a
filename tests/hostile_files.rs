//! Files that are not what emdb wrote: a future format version, foreign
//! files, files where directories belong and the reverse. Each gets a clear
//! error, never a panic, and the files are left as they were.

use std::fs;
use std::path::Path;

use emdb::{Emdb, Error};

fn make_db(path: &Path) {
    let db = Emdb::builder()
        .path(path)
        .shards(1)
        .build()
        .expect("create");
    db.insert("k", "v").expect("insert");
    db.flush().expect("flush");
}

/// Rewrites the manifest's version field (bytes 8..12) and fixes its CRC.
fn set_manifest_version(path: &Path, version: u32) {
    let m = path.join("MANIFEST");
    let mut b = fs::read(&m).expect("read manifest");
    b[8..12].copy_from_slice(&version.to_le_bytes());
    let body = b.len() - 4;
    let crc = crc32c::crc32c(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(&m, &b).expect("write manifest");
}

#[test]
fn a_database_from_a_future_format_version_is_refused_untouched() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    make_db(&path);
    let b = fs::read(path.join("MANIFEST")).expect("read");
    let current = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    set_manifest_version(&path, 99);
    let before = fs::read(path.join("MANIFEST")).expect("read");
    match Emdb::open(&path) {
        Err(Error::VersionMismatch {
            found: 99,
            expected,
        }) => assert!(expected < 99),
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert_eq!(
        fs::read(path.join("MANIFEST")).expect("read"),
        before,
        "the manifest was modified"
    );
    // Back to the real version, it opens with its data.
    set_manifest_version(&path, current);
    let db = Emdb::open(&path).expect("open");
    assert_eq!(db.get("k").expect("get").as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_foreign_file_as_manifest_is_a_magic_mismatch() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    fs::create_dir(&path).expect("mkdir");
    fs::write(path.join("MANIFEST"), b"this is a text file, not emdb\n").expect("write");
    assert!(matches!(Emdb::open(&path), Err(Error::MagicMismatch)));
    assert_eq!(
        fs::read(path.join("MANIFEST")).expect("read"),
        b"this is a text file, not emdb\n"
    );
}

#[test]
fn a_directory_of_unrelated_files_opens_as_a_new_database_and_keeps_them() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    fs::create_dir(&path).expect("mkdir");
    fs::write(path.join("notes.txt"), b"keep me").expect("write");
    let db = Emdb::open(&path).expect("open");
    db.insert("a", "b").expect("insert");
    drop(db);
    assert_eq!(fs::read(path.join("notes.txt")).expect("read"), b"keep me");
}

#[test]
fn a_regular_file_at_the_database_path_is_an_error() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    fs::write(&path, b"not a directory").expect("write");
    match Emdb::open(&path) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotADirectory),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(fs::read(&path).expect("read"), b"not a directory");
}

#[test]
fn a_directory_where_the_manifest_belongs_is_an_error() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    fs::create_dir_all(path.join("MANIFEST")).expect("mkdir");
    assert!(matches!(Emdb::open(&path), Err(Error::Io(_))));
}

#[test]
fn segment_files_without_a_manifest_are_not_silently_a_new_database() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    make_db(&path);
    fs::remove_file(path.join("MANIFEST")).expect("remove manifest");
    assert!(matches!(Emdb::open(&path), Err(Error::Corrupted { .. })));
    assert!(
        path.join("000-00000001.seg").exists(),
        "the segment was removed"
    );
}

/// Segment file `000-00000001.seg` style name of shard `s`'s first segment.
fn first_segment(path: &Path, s: u32) -> std::path::PathBuf {
    path.join(format!("{s:03}-00000001.seg"))
}

#[test]
fn records_moved_into_another_shards_log_are_reported_not_served() {
    // Valid frames (good CRCs, right hash seed) in a shard their keys do not
    // hash to: `get` could never find them while `iter` would list them.
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    {
        let db = Emdb::builder()
            .path(&path)
            .shards(2)
            .build()
            .expect("create");
        for i in 0..64 {
            db.insert(format!("key-{i:02}"), format!("value-{i}"))
                .expect("insert");
        }
        db.flush().expect("flush");
    }
    // Replay, not hints; then shard 0's frames replace shard 1's.
    for e in fs::read_dir(&path).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "hint") {
            fs::remove_file(p).expect("rm hint");
        }
    }
    let data_end = |b: &[u8]| b.iter().rposition(|x| *x != 0).map_or(64, |i| i + 1);
    let s0 = fs::read(first_segment(&path, 0)).expect("read");
    let mut s1 = fs::read(first_segment(&path, 1)).expect("read");
    let (e0, e1) = (data_end(&s0), data_end(&s1));
    s1[64..e1.max(e0)].fill(0);
    s1[64..e0].copy_from_slice(&s0[64..e0]);
    fs::write(first_segment(&path, 1), &s1).expect("write");
    match Emdb::open(&path) {
        Err(Error::Corrupted { reason, file, .. }) => {
            assert!(reason.contains("another shard"), "reason: {reason}");
            assert!(
                file.ends_with("001-00000001.seg"),
                "file: {}",
                file.display()
            );
        }
        other => panic!("expected Corrupted, got {:?}", other.map(|_| ())),
    }
}

/// Entries `(hash, offset)` of a hint file.
fn read_hint(p: &Path) -> Vec<(u64, u32)> {
    let b = fs::read(p).expect("read hint");
    let n = u64::from_le_bytes(b[32..40].try_into().expect("count")) as usize;
    (0..n)
        .map(|i| {
            // hash u64, offset u32, namespace u32 (0 here: the default),
            // expiry u64 (0: none)
            let e = &b[40 + 24 * i..64 + 24 * i];
            (
                u64::from_le_bytes(e[..8].try_into().expect("hash")),
                u32::from_le_bytes(e[8..12].try_into().expect("offset")),
            )
        })
        .collect()
}

/// Rewrites a hint file's entries, keeping its header, with a good CRC.
fn write_hint(p: &Path, entries: &[(u64, u32)]) {
    let mut b = fs::read(p).expect("read hint")[..40].to_vec();
    b[32..40].copy_from_slice(&(entries.len() as u64).to_le_bytes());
    for (h, o) in entries {
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    fs::write(p, b).expect("write hint");
}

/// Offset of the frame holding `key` (its header is 32 bytes, no expiry).
fn frame_of(seg: &[u8], key: &[u8]) -> u32 {
    let at = seg
        .windows(key.len())
        .position(|w| w == key)
        .expect("key in segment");
    (at - 32) as u32
}

#[test]
fn a_key_listed_in_two_hint_files_is_reported_not_served_twice() {
    // Checkpoints list each live key once. Here two well-formed hint files
    // list one key: the stale copy in segment 1 and the live one in 2.
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let open = || {
        Emdb::builder()
            .path(&path)
            .shards(1)
            .segment_size(64 * 1024)
            .max_key_len(256)
            .max_value_len(4096)
            .build()
    };
    {
        let db = open().expect("create");
        db.insert("the-duplicated-key", "old").expect("insert");
        for i in 0..40 {
            db.insert(format!("filler-{i:02}"), vec![b'f'; 2000])
                .expect("insert");
        }
        db.insert("the-duplicated-key", "new").expect("insert");
        db.flush().expect("flush");
    } // closing writes a checkpoint: hint files for both segments
    let (seg1, seg2) = (path.join("000-00000001.seg"), path.join("000-00000002.seg"));
    let (h1, h2) = (
        path.join("000-00000001.hint"),
        path.join("000-00000002.hint"),
    );
    assert!(h1.exists() && h2.exists(), "two segments, two hint files");
    let key = b"the-duplicated-key";
    let old = frame_of(&fs::read(&seg1).expect("read"), key);
    let live = frame_of(&fs::read(&seg2).expect("read"), key);
    let hash = read_hint(&h2)
        .iter()
        .find(|(_, o)| *o == live)
        .expect("live entry")
        .0;
    let mut e1 = read_hint(&h1);
    assert!(e1.iter().all(|(_, o)| *o != old), "stale record not hinted");
    e1.push((hash, old));
    e1.sort_unstable_by_key(|e| e.1);
    write_hint(&h1, &e1);
    match open() {
        Err(Error::Corrupted { reason, file, .. }) => {
            assert!(reason.contains("listed twice"), "reason: {reason}");
            assert!(
                file.extension().is_some_and(|x| x == "hint"),
                "{}",
                file.display()
            );
        }
        other => panic!("expected Corrupted, got {:?}", other.map(|_| ())),
    }
}
