//! `EmdbBuilder::verify`: a clean database has no findings; a flipped bit,
//! a truncated segment, a damaged hint file and a torn tail are each found
//! with their file and offset; and not one byte changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use emdb::{Emdb, Error, VerifyReport};

const VALUE: usize = 100;

fn fill(dir: &Path, n: u32) {
    let db = Emdb::builder()
        .path(dir)
        .shards(1)
        .segment_size(1 << 20)
        .max_value_len(4096)
        .build()
        .unwrap();
    for i in 0..n {
        db.insert(format!("k{i:05}"), vec![b'v'; VALUE]).unwrap();
    }
    db.close().unwrap();
}

fn verify(dir: &Path) -> VerifyReport {
    Emdb::builder().path(dir).verify().unwrap()
}

fn image(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// Where the data of a segment ends (the rest is preallocated zeros).
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).unwrap() + 1
}

#[test]
fn clean_database_has_no_findings() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 1000);
    let before = image(d.path());
    let r = verify(d.path());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(!r.is_damaged());
    assert!(r.frames >= 1000, "{r:?}");
    assert_eq!(r.segments, 1);
    assert_eq!(r.hint_files, 1);
    assert_eq!(r.live_records, Some(1000));
    assert_eq!(image(d.path()), before, "verify changed a file");
}

#[test]
fn flipped_bits_are_each_found() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 1000);
    let seg = &segments(d.path())[0];
    let mut b = std::fs::read(seg).unwrap();
    let end = data_end(&b);
    let flips = [end / 4, end / 2];
    for f in flips {
        b[f] ^= 0x10;
    }
    std::fs::write(seg, &b).unwrap();
    let before = image(d.path());
    let r = verify(d.path());
    assert!(r.is_damaged());
    let damage: Vec<_> = r.findings.iter().filter(|f| f.damage).collect();
    for f in flips {
        // Found in the frame that holds the flipped byte: it starts at most
        // one frame before it.
        assert!(
            damage.iter().any(|x| &x.file == seg
                && x.offset <= f as u64
                && f as u64 - x.offset < (VALUE + 100) as u64),
            "flip at {f} not found: {damage:#?}"
        );
    }
    assert_eq!(image(d.path()), before, "verify changed a file");
}

#[test]
fn truncated_segment_is_found() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 1000);
    let seg = &segments(d.path())[0];
    let b = std::fs::read(seg).unwrap();
    let cut = data_end(&b) * 2 / 3;
    std::fs::write(seg, &b[..cut]).unwrap();
    let r = verify(d.path());
    assert!(r.is_damaged(), "{:#?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| f.damage && &f.file == seg && f.offset <= cut as u64),
        "{:#?}",
        r.findings
    );
}

#[test]
fn damaged_hint_file_is_found() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 200);
    let hint = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "hint"))
        .expect("a checkpoint writes hint files");
    let mut b = std::fs::read(&hint).unwrap();
    b[50] ^= 1;
    std::fs::write(&hint, &b).unwrap();
    let r = verify(d.path());
    assert!(r.is_damaged());
    assert!(
        r.findings.iter().any(|f| f.file == hint && f.damage),
        "{:#?}",
        r.findings
    );
    // The log itself is whole: the open replays it.
    assert_eq!(r.live_records, Some(200));
}

#[test]
fn torn_tail_is_a_notice() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 100);
    // A write a crash cut short, after the last checkpoint's position
    // (made by hand after a clean close: no core thread is left to write).
    let seg = &segments(d.path())[0];
    let mut b = std::fs::read(seg).unwrap();
    let end = data_end(&b);
    b[end..end + 6].copy_from_slice(&[0x40, 0, 0, 0, 1, 0x77]);
    std::fs::write(seg, &b).unwrap();
    let r = verify(d.path());
    assert!(!r.is_damaged(), "{:#?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| !f.damage && &f.file == seg && f.offset == end as u64),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.live_records, Some(100));
}

#[test]
fn a_writer_holding_it_is_lock_busy() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 10);
    let db = Emdb::open(d.path()).unwrap();
    let e = Emdb::builder().path(d.path()).verify().err().unwrap();
    assert!(matches!(e, Error::LockBusy { .. }), "{e:?}");
    db.close().unwrap();
    let e = Emdb::builder()
        .path(d.path().join("none"))
        .verify()
        .err()
        .unwrap();
    assert!(matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound));
}

#[test]
fn a_damaged_manifest_is_a_finding_and_the_segments_are_still_read() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 300);
    let m = d.path().join("MANIFEST");
    let mut b = std::fs::read(&m).unwrap();
    b[0] ^= 0xff;
    std::fs::write(&m, &b).unwrap();
    let r = verify(d.path());
    assert!(r.is_damaged());
    assert!(
        r.findings.iter().any(|f| f.file == m && f.damage),
        "{:#?}",
        r.findings
    );
    assert!(r.frames >= 300, "the segments were scanned: {r:?}");
}

/// A database that rotated many times (sealed segments, sync markers at
/// each rotation, a prepared next segment listed but empty) has no
/// findings.
#[test]
fn a_database_that_rotated_has_no_findings() {
    let d = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(d.path())
        .shards(1)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(4096)
        .build()
        .unwrap();
    for i in 0..3000u32 {
        db.insert(format!("k{i:05}"), vec![b'v'; VALUE]).unwrap();
        if i % 500 == 0 {
            db.flush().unwrap();
        }
    }
    db.close().unwrap();
    let r = verify(d.path());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(r.segments > 4, "{r:?}");
    assert_eq!(r.live_records, Some(3000));
}

/// Garbage after the last durable point, then a valid frame: recovery
/// cuts the log at the garbage, so it is a notice, and the frame after it
/// is not counted as a record.
#[test]
fn a_hole_after_the_durable_point_is_a_notice() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path(), 100);
    let seg = &segments(d.path())[0];
    let mut b = std::fs::read(seg).unwrap();
    let end = data_end(&b);
    // The first frame (just after the 64-byte header) copied after 16
    // bytes of garbage: a valid frame that follows a hole.
    let first_len = u32::from_le_bytes(b[64..68].try_into().unwrap()) as usize;
    let frame = b[64..64 + first_len].to_vec();
    b[end..end + 16].copy_from_slice(&[0x5a; 16]);
    b[end + 16..end + 16 + first_len].copy_from_slice(&frame);
    std::fs::write(seg, &b).unwrap();
    let r = verify(d.path());
    assert!(!r.is_damaged(), "{:#?}", r.findings);
    assert!(
        r.findings
            .iter()
            .any(|f| !f.damage && &f.file == seg && f.offset == end as u64),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.live_records, Some(100));
}
