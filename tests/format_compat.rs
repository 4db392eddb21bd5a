//! The on-disk format is an API: a database written by format version 1
//! (committed under tests/fixtures/v1) must open with the same contents,
//! through its hint files and by full replay.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use emdb::Emdb;

fn copy_fixture(to: &Path, with_hints: bool) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(&from).expect("fixture dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_owned();
        if !with_hints && p.extension().is_some_and(|x| x == "hint") {
            continue;
        }
        fs::copy(&p, to.join(name)).expect("copy");
    }
}

/// What the fixture generator wrote (see the commit that added it): a
/// 10-record batch, 50 puts, 5 overwrites, 5 removes, a checkpoint, then 5
/// more puts of 200-byte values.
fn expected() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for i in 0..10 {
        m.insert(
            format!("batch-{i}").into_bytes(),
            format!("batch value {i}").into_bytes(),
        );
    }
    for i in 0..45 {
        let v = if i < 5 {
            format!("overwritten {i}")
        } else {
            format!("value {i}")
        };
        m.insert(format!("key-{i:02}").into_bytes(), v.into_bytes());
    }
    for i in 0..5u8 {
        m.insert(format!("late-{i}").into_bytes(), vec![i; 200]);
    }
    m
}

#[test]
fn version_1_fixture_opens_with_its_hints() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    copy_fixture(&path, true);
    let db = Emdb::open(&path).expect("open v1 fixture");
    let got: BTreeMap<_, _> = db.iter().expect("iter").collect();
    assert_eq!(got, expected());
    assert_eq!(
        db.stats().expect("stats").shards,
        2,
        "the stored shard count wins"
    );
}

#[test]
fn version_1_fixture_opens_by_full_replay() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    copy_fixture(&path, false);
    let db = Emdb::open(&path).expect("open v1 fixture without hints");
    let got: BTreeMap<_, _> = db.iter().expect("iter").collect();
    assert_eq!(got, expected());
    db.insert("new", "write").expect("writes continue");
    drop(db);
    let db = Emdb::open(&path).expect("reopen");
    assert_eq!(db.get("new").expect("get").as_deref(), Some(&b"write"[..]));
    assert_eq!(db.len().expect("len"), expected().len() + 1);
}
