//! Encryption under the other layers: expiry (reads, sweeps and compaction
//! of expired records, which decrypt keys to write tombstones), nested
//! groups (prefix seeks and `delete_group` as one batch), range scans (the
//! ordered index rebuilt at open from decrypted keys) and the async API.
//! A binary of its own: it moves the expiry clock of the whole process.
#![cfg(all(
    feature = "encrypt",
    feature = "fault-injection",
    feature = "nested",
    feature = "ttl",
    feature = "async"
))]

use std::path::Path;
use std::time::Duration;

use emdb::{AsyncEmdb, Emdb, Ttl};

const KEY: [u8; 32] = [0x61; 32];

fn builder(path: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .background_compaction(false)
        .enable_range_scans(true)
        .encryption_key(KEY)
}

/// Keys in groups of ten: `user.<i / 10>.<i>`.
fn k(i: u32) -> String {
    format!("user.{:02}.{:03}", i / 10, i)
}

#[test]
fn expiry_groups_and_ranges_work_on_an_encrypted_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = builder(&p).build().unwrap();
    for i in 0..300 {
        db.insert(k(i), format!("name-{i}")).unwrap();
    }
    for i in 0..100 {
        db.insert_with_ttl(
            format!("session.{i:03}"),
            "token",
            Ttl::After(Duration::from_secs(60)),
        )
        .unwrap();
    }
    // Ranges, in key order, from decrypted keys.
    let r = db.range_prefix("user.01.").unwrap();
    assert_eq!(r.len(), 10);
    assert_eq!(r[0], (k(10).into_bytes(), b"name-10".to_vec()));
    assert!(r.windows(2).all(|w| w[0].0 < w[1].0));
    let group: Vec<_> = db.group("session").unwrap().collect();
    assert_eq!(group.len(), 100);

    // Expiry: invisible at once, swept (tombstones written from decrypted
    // keys), and compacted away.
    emdb::advance_clock(Duration::from_secs(120));
    assert_eq!(db.get("session.007").unwrap(), None);
    assert_eq!(db.group("session").unwrap().count(), 0);
    assert_eq!(db.sweep_expired(), 100);
    db.compact().unwrap();
    assert_eq!(db.len().unwrap(), 300);

    // delete_group: one batch of sealed tombstones.
    assert_eq!(db.delete_group("user.02").unwrap(), 10);
    assert_eq!(db.range_prefix("user.02.").unwrap().len(), 0);
    assert_eq!(db.group("user.03").unwrap().count(), 10);
    db.close().unwrap();

    // Reopen by replay: the ordered index is rebuilt from decrypted keys.
    for e in std::fs::read_dir(&p).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".hint") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let db = builder(&p).build().unwrap();
    assert_eq!(db.len().unwrap(), 290);
    let all = db.range(..).unwrap();
    assert_eq!(all.len(), 290);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(db.get(k(299)).unwrap().as_deref(), Some(&b"name-299"[..]));
    assert_eq!(db.get("session.001").unwrap(), None);
}

#[test]
fn the_async_api_opens_and_reads_an_encrypted_database() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    futures::executor::block_on(async {
        let db = AsyncEmdb::builder()
            .path(&p)
            .shards(2)
            .encryption_key(KEY)
            .build_async()
            .await
            .unwrap();
        db.insert("a", "1").await.unwrap();
        db.insert_many(vec![("b", "2"), ("c", "3")]).await.unwrap();
        assert_eq!(db.get("b").await.unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(db.iter().await.unwrap().len(), 3);
        db.close().await.unwrap();
    });
    // The wrong key is refused the same way.
    let wrong = futures::executor::block_on(
        AsyncEmdb::builder()
            .path(&p)
            .encryption_key([0; 32])
            .build_async(),
    );
    assert!(matches!(wrong, Err(emdb::Error::EncryptionKeyMismatch)));
    let db = builder(&p).build().unwrap();
    assert_eq!(db.get("c").unwrap().as_deref(), Some(&b"3"[..]));
}
