//! The background check of the frames recovery takes from hint files
//! (`engine/scrub.rs`): after a reopen it checks each such frame's CRC once
//! and then lets reads skip the check, except in a segment where a frame
//! failed, whose reads go on checking and report the damage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use emdb::{Emdb, EmdbBuilder, Error};

fn builder(path: &Path) -> EmdbBuilder {
    Emdb::builder()
        .path(path)
        .shards(1)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(1024)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    (0..100).map(|j| (i * 7 + j * 13) as u8).collect()
}

const N: usize = 3_000;

/// A database of N records over several 64 KiB segments, closed (so the
/// close's checkpoint wrote hint files); returns its segment files in id
/// order.
fn make_db(path: &Path) -> Vec<PathBuf> {
    let db = builder(path).build().expect("create");
    for i in 0..N {
        db.insert(key(i), value(i)).expect("insert");
    }
    db.close().expect("close");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(path)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let hints = std::fs::read_dir(path)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "hint")
        })
        .count();
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    assert!(hints > 0, "closing wrote no hint files: nothing to check");
    segs
}

/// Polls `stats().unverified_bytes` until `done` holds for it (30 s at
/// most: the check runs beside whatever else loads the machine).
fn wait_for(db: &Emdb, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = db.stats().expect("stats").unverified_bytes;
        if done(left) || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn frames_from_hint_files_are_checked_in_the_background() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("db");
    make_db(&path);
    let db = builder(&path).build().expect("reopen");
    assert_eq!(wait_for(&db, |left| left == 0), 0, "the check never ended");
    for i in 0..N {
        assert_eq!(db.get(key(i)).expect("get"), Some(value(i)), "key {i}");
    }
    // Closed while checking (a fresh reopen): the thread stops, the lock
    // goes with the handle.
    drop(db);
    let db = builder(&path).build().expect("reopen");
    drop(db);
    let db = builder(&path)
        .build()
        .expect("reopen after a close mid-check");
    assert_eq!(db.get(key(N - 1)).expect("get"), Some(value(N - 1)));
}

/// Where the frames of segment file `bytes` end: they start at the first
/// key's frame (its 32-byte header before the key) and lie back to back,
/// each led by its length.
fn frames_span(bytes: &[u8], first_key: &[u8]) -> (usize, usize) {
    let at = bytes
        .windows(first_key.len())
        .position(|w| w == first_key)
        .expect("first key in segment");
    let start = at - 32;
    let mut off = start;
    while off + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        off += len;
    }
    (start, off)
}

#[test]
fn a_damaged_frame_keeps_its_segment_checked_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("db");
    let segs = make_db(&path);
    // Damage a value in the first segment (the check reads it first, then
    // goes on to the others).
    let first = &segs[0];
    let mut bytes = std::fs::read(first).expect("read segment");
    let (start, end) = frames_span(&bytes, &key(0));
    let victim = 10;
    let v = value(victim);
    let at = bytes
        .windows(v.len())
        .position(|w| w == v.as_slice())
        .expect("value in the first segment");
    bytes[at + 50] ^= 0x10;
    std::fs::write(first, &bytes).expect("write segment");

    let db = builder(&path).build().expect("reopen");
    // Every other segment checked; the damaged one's frames stay marked.
    let left = wait_for(&db, |left| left == (end - start) as u64);
    assert_eq!(
        left,
        (end - start) as u64,
        "the check did not end as expected"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(db.stats().unwrap().unverified_bytes, (end - start) as u64);
    match db.get(key(victim)) {
        Err(Error::Corrupted { .. }) => {}
        other => panic!("a damaged record read as {other:?}"),
    }
    for i in (0..N).filter(|&i| i != victim) {
        assert_eq!(db.get(key(i)).expect("get"), Some(value(i)), "key {i}");
    }
}
