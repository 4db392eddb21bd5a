//! Batches stay whole when shards recover differently: one shard loads its
//! hint files while another replays its log from the start (its hints are
//! missing or from an unfinished checkpoint).

use std::fs;
use std::path::Path;

use emdb::Emdb;

fn open(path: &Path) -> Emdb {
    Emdb::builder().path(path).shards(2).build().expect("open")
}

fn hint_files(dir: &Path, shard: &str) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(shard) && name.ends_with(".hint")
        })
        .collect()
}

fn batch(tag: &str) -> Vec<(String, String)> {
    (0..64)
        .map(|i| (format!("batch-key-{i:02}"), format!("{tag}-{i}")))
        .collect()
}

#[test]
fn a_batch_spanning_shards_survives_when_one_shard_loses_its_hints() {
    for damaged_shard in ["000-", "001-"] {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("db");
        {
            let db = open(&path);
            db.insert_many(batch("old")).expect("first batch");
            db.flush().expect("flush");
            // The second batch overwrites every key, in both shards.
            db.insert_many(batch("new")).expect("second batch");
            db.flush().expect("flush");
            db.checkpoint().expect("checkpoint");
        } // drop: another checkpoint, clean close
        let hints = hint_files(&path, damaged_shard);
        assert!(
            !hints.is_empty(),
            "checkpoint wrote hint files for {damaged_shard}"
        );
        for h in hints {
            fs::remove_file(h).expect("remove hint");
        }
        let db = open(&path);
        for (k, v) in batch("new") {
            assert_eq!(
                db.get(&k).expect("get").as_deref(),
                Some(v.as_bytes()),
                "{k} lost the committed batch after {damaged_shard} replayed and the other shard used hints"
            );
        }
        assert_eq!(db.len().expect("len"), 64);
    }
}

#[test]
fn a_cleared_database_stays_cleared_when_one_shard_loses_its_hints() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    {
        let db = open(&path);
        db.insert_many(batch("v")).expect("batch");
        db.clear().expect("clear");
        db.insert("after", "clear").expect("insert");
        db.flush().expect("flush");
    }
    for h in hint_files(&path, "000-") {
        fs::remove_file(h).expect("remove hint");
    }
    let db = open(&path);
    assert_eq!(
        db.get("batch-key-00").expect("get"),
        None,
        "a cleared key came back"
    );
    assert_eq!(db.len().expect("len"), 1);
}

/// With the `encrypt` feature, a key for the databases whose large batches
/// are appended (and sealed) by a thread per shard.
fn keyed(b: emdb::EmdbBuilder, encrypted: bool) -> emdb::EmdbBuilder {
    #[cfg(feature = "encrypt")]
    if encrypted {
        return b.encryption_key([0x3c; 32]);
    }
    let _ = encrypted;
    b
}

/// Large batches: in an encrypted database appended by a thread per
/// shard; either way the later of equal keys still wins, and every record
/// is there, live and after a replay.
#[test]
fn a_large_batch_appended_in_parallel_is_whole_and_keeps_the_later_of_equal_keys() {
    for (range_scans, encrypted) in [(false, false), (true, false), (false, true), (true, true)] {
        let t = tempfile::tempdir().expect("tempdir");
        let path = t.path().join("db");
        let build = || {
            let b = Emdb::builder()
                .path(&path)
                .shards(2)
                .segment_size(256 << 10)
                .max_value_len(1024)
                .enable_range_scans(range_scans);
            keyed(b, encrypted).build().expect("open")
        };
        let db = build();
        // 12,000 pairs over 10,000 keys: the last 2,000 repeat keys with a
        // new value, and must win.
        let batch: Vec<(String, String)> = (0..12_000)
            .map(|i| (format!("big-{:05}", i % 10_000), format!("v{i}")))
            .collect();
        db.insert_many(batch).expect("batch");
        let expect = |i: usize| {
            if i < 2_000 {
                format!("v{}", i + 10_000)
            } else {
                format!("v{i}")
            }
        };
        let check = |db: &Emdb, what: &str| {
            assert_eq!(db.len().expect("len"), 10_000, "{what}");
            for i in 0..10_000 {
                let got = db.get(format!("big-{i:05}")).expect("get");
                assert_eq!(
                    got.as_deref(),
                    Some(expect(i).as_bytes()),
                    "{what}: key {i}"
                );
            }
        };
        check(&db, "live");
        drop(db);
        for h in hint_files(&path, "000-")
            .into_iter()
            .chain(hint_files(&path, "001-"))
        {
            fs::remove_file(h).expect("remove hint");
        }
        check(&build(), "after a replay");
    }
}

/// A large batch whose append fails in one shard (its next segment cannot
/// be created: the disk is full) leaves nothing of itself, live or after a
/// reopen.
#[cfg(feature = "fault-injection")]
#[test]
fn a_large_batch_that_fails_part_way_leaves_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = emdb::FaultPlan::new();
    // Encrypted when the feature is on: its large batches are appended by
    // a thread per shard.
    let build = |plan: Option<emdb::FaultPlan>| {
        let b = Emdb::builder()
            .path(&path)
            .shards(2)
            .segment_size(64 << 10)
            .max_key_len(64)
            .max_value_len(1024)
            .background_compaction(false);
        let b = keyed(b, cfg!(feature = "encrypt"));
        match plan {
            Some(p) => b.fault_plan(p),
            None => b,
        }
        .build()
        .expect("open")
    };
    let db = build(Some(plan.clone()));
    db.insert("before", "kept").expect("insert");
    db.flush().expect("flush");
    plan.set_no_space(true);
    let batch: Vec<(String, Vec<u8>)> = (0..8_000)
        .map(|i| (format!("doomed-{i}"), vec![7u8; 100]))
        .collect();
    assert!(
        db.insert_many(batch).is_err(),
        "a batch that needs new segments on a full disk"
    );
    plan.set_no_space(false);
    let check = |db: &Emdb| {
        assert_eq!(
            db.get("before").expect("get").as_deref(),
            Some(&b"kept"[..])
        );
        let left = db
            .keys()
            .expect("keys")
            .filter(|k| k.starts_with(b"doomed-"))
            .count();
        assert_eq!(left, 0, "part of a failed batch is visible");
    };
    check(&db);
    drop(db);
    check(&build(None));
}
