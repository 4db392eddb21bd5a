//! Compaction and space accounting: live and dead bytes exact across
//! overwrites, removes, batches, clear, compaction and reopen; `compact()`
//! reclaims space and keeps every record; values handed out before a
//! compaction stay valid, and retired files go when the last holder does.
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --test compaction`.

use std::collections::BTreeMap;
use std::path::Path;

use emdb::Emdb;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Bytes of the frame of a plain record.
fn frame_len(k: &[u8], v: &[u8]) -> u64 {
    36 + k.len() as u64 + v.len() as u64
}

fn expected_live(m: &Map) -> u64 {
    m.iter().map(|(k, v)| frame_len(k, v)).sum()
}

fn builder(dir: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(64 * 1024)
        .max_key_len(64)
        .max_value_len(2048)
        .background_compaction(false)
}

fn contents(db: &Emdb) -> Map {
    db.iter().unwrap().collect()
}

fn check_accounting(db: &Emdb, model: &Map, ctx: &str) {
    let st = db.stats().unwrap();
    assert_eq!(st.live_bytes, expected_live(model), "{ctx}: live bytes");
    assert_eq!(
        st.live_bytes + st.dead_bytes + 64 * st.segments,
        st.logical_size_bytes,
        "{ctx}: live + dead + headers = logical ({st:?})"
    );
    assert_eq!(st.live_records, model.len() as u64, "{ctx}: live records");
}

/// A mixed workload against a model; returns the model.
fn workload(db: &Emdb, seed: u64, n: usize, model: &mut Map) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..n {
        let k = format!("key-{:04}", rng.usize(0..400)).into_bytes();
        match rng.u32(0..100) {
            0..=59 => {
                let v = vec![b'a' + (i % 26) as u8; rng.usize(0..600)];
                db.insert(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
            60..=79 => {
                let had = db.remove(&k).unwrap();
                assert_eq!(had, model.remove(&k));
            }
            80..=98 => {
                let items: Vec<(Vec<u8>, Vec<u8>)> = (0..rng.usize(1..6))
                    .map(|j| {
                        let k = format!("key-{:04}", rng.usize(0..400)).into_bytes();
                        (k, vec![b'A' + (j % 26) as u8; rng.usize(0..300)])
                    })
                    .collect();
                db.insert_many(items.clone()).unwrap();
                for (k, v) in items {
                    model.insert(k, v);
                }
            }
            _ => {
                db.clear().unwrap();
                model.clear();
            }
        }
    }
}

#[test]
fn live_and_dead_bytes_are_exact_across_every_kind_of_write_and_reopen() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let mut model = Map::new();
    {
        let db = builder(&dir).build().unwrap();
        workload(&db, 1, 3000, &mut model);
        check_accounting(&db, &model, "after the workload");
        db.compact().unwrap();
        check_accounting(&db, &model, "after compaction");
        workload(&db, 2, 1000, &mut model);
        check_accounting(&db, &model, "after more writes");
    }
    // Reopen through the hint files of the close's checkpoint.
    {
        let db = builder(&dir).build().unwrap();
        assert_eq!(contents(&db), model);
        check_accounting(&db, &model, "after reopen with hints");
    }
    // Reopen by replay.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let db = builder(&dir).build().unwrap();
    assert_eq!(contents(&db), model);
    check_accounting(&db, &model, "after reopen by replay");
}

#[test]
fn compact_reclaims_space_and_keeps_every_record() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let db = builder(&dir).build().unwrap();
    let mut model = Map::new();
    for i in 0..4000u32 {
        let k = format!("k{i:05}").into_bytes();
        let v = vec![(i % 251) as u8; 200];
        model.insert(k.clone(), v.clone());
        db.insert(k, v).unwrap();
    }
    // Overwrite a third, remove a third.
    for i in 0..4000u32 {
        let k = format!("k{i:05}").into_bytes();
        match i % 3 {
            0 => {
                let v = vec![7u8; 100];
                db.insert(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
            1 => {
                db.remove(&k).unwrap();
                model.remove(&k);
            }
            _ => {}
        }
    }
    db.flush().unwrap();
    let before = db.stats().unwrap();
    db.compact().unwrap();
    let after = db.stats().unwrap();
    assert!(after.compactions >= 1, "{after:?}");
    assert!(after.bytes_reclaimed > 0);
    assert!(
        after.logical_size_bytes < before.logical_size_bytes * 6 / 10,
        "compaction shrank the log: {} -> {}",
        before.logical_size_bytes,
        after.logical_size_bytes
    );
    assert!(
        after.dead_bytes < after.live_bytes / 4,
        "little dead data is left: {after:?}"
    );
    assert_eq!(contents(&db), model);
    check_accounting(&db, &model, "after compaction");
    // The retired files are gone from the directory.
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count() as u64;
    assert_eq!(files, after.segments, "segment files on disk = segments");
    drop(db);
    let db = builder(&dir).build().unwrap();
    assert_eq!(contents(&db), model);
    for (k, v) in &model {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
}

#[test]
fn values_and_iterators_outlive_compaction_and_hold_their_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let db = builder(&dir).build().unwrap();
    for i in 0..2000u32 {
        db.insert(format!("k{i:05}"), vec![(i % 200) as u8; 300])
            .unwrap();
    }
    db.flush().unwrap();
    let held = db.get_zerocopy("k00007").unwrap().unwrap();
    let iter = db.iter().unwrap();
    let files_before = std::fs::read_dir(&dir).unwrap().count();
    // Everything becomes dead except k00007: compaction retires the old
    // segments, while the value and the iterator still hold them.
    for i in 0..2000u32 {
        if i != 7 {
            db.remove(format!("k{i:05}")).unwrap();
        }
    }
    db.compact().unwrap();
    assert_eq!(&held[..], &[7u8; 300][..]);
    assert_eq!(iter.count(), 2000, "the iterator sees its snapshot whole");
    assert_eq!(db.get("k00007").unwrap(), Some(vec![7u8; 300]));
    assert_eq!(db.len().unwrap(), 1);
    // The value still holds its segment's file; once dropped, it goes.
    let seg_files = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count()
    };
    let with_held = seg_files(&dir);
    drop(held);
    // Retired tables are freed through epochs: give them a moment.
    let mut without = seg_files(&dir);
    for _ in 0..100 {
        if without < with_held {
            break;
        }
        let _ = db.get("k00007");
        std::thread::sleep(std::time::Duration::from_millis(10));
        without = seg_files(&dir);
    }
    assert!(
        without < with_held,
        "dropping the last holder removes the file ({with_held} -> {without}; {files_before} files before)"
    );
    assert_eq!(without as u64, db.stats().unwrap().segments);
}
