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
