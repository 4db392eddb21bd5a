//! How much disk a database takes: a new database with a few records takes
//! a few MiB, however large `segment_size` is, because each segment file
//! grows as it fills (1 MiB, doubling up to 4 MiB steps).
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --test space`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use emdb::Emdb;

/// Bytes the files of `dir` occupy on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn a_small_database_stays_small() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    // The defaults (64 MiB segments), two shards, as the tour uses.
    let db = Emdb::builder().path(&dir).shards(2).build().unwrap();
    for i in 0..1002 {
        db.insert(format!("user:{i:04}"), format!("{{\"name\":\"user {i}\"}}"))
            .unwrap();
    }
    db.flush().unwrap();
    let st = db.stats().unwrap();
    assert!(
        st.file_size_bytes <= 4 << 20,
        "1,002 records take {} bytes of segment files",
        st.file_size_bytes
    );
    drop(db);
    let used = disk_usage(&dir);
    assert!(used <= 4 << 20, "1,002 records occupy {used} bytes on disk");
    // And it reopens and keeps growing normally.
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), 1002);
    for i in 0..20_000 {
        db.insert(format!("more:{i:05}"), vec![b'x'; 200]).unwrap();
    }
    db.flush().unwrap();
    let st = db.stats().unwrap();
    assert!(st.file_size_bytes > 4 << 20, "the files grew: {st:?}");
    assert!(
        st.file_size_bytes < 3 * st.logical_size_bytes + (4 << 20),
        "growth in steps keeps the preallocation proportionate: {st:?}"
    );
    drop(db);
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), 21_002);
    assert_eq!(db.get("more:19999").unwrap(), Some(vec![b'x'; 200]));
}
