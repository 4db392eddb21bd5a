//! TTL (feature `ttl`, on by default): expiry hides a record from every
//! read, survives reopens (through hint files and by replay), is swept into
//! tombstones, and compaction drops expired records without letting an
//! older value of the key come back. Waits are short sleeps past TTLs of a
//! few milliseconds; what must still be visible has a TTL of an hour, so a
//! slow machine cannot make these tests fail.

#![cfg(feature = "ttl")]

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emdb::{Emdb, Error, Ttl};

const HOUR: Duration = Duration::from_secs(3600);
const SHORT: Duration = Duration::from_millis(5);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn open(path: &Path) -> Emdb {
    Emdb::builder()
        .path(path)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(2048)
        .background_compaction(false)
        .build()
        .expect("open")
}

/// Removes every hint file: the next open replays the whole log.
fn remove_hints(path: &Path) {
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn wait_past_short() {
    sleep(SHORT * 10);
}

#[test]
fn expired_records_are_invisible_to_every_read() {
    let db = Emdb::open_in_memory();
    db.insert_with_ttl("long", "v", Ttl::After(HOUR)).unwrap();
    db.insert_with_ttl("short", "v", Ttl::After(SHORT)).unwrap();
    db.insert_with_ttl("never", "v", Ttl::Never).unwrap();
    db.insert("plain", "v").unwrap();
    let before = now_ms();
    let at = db.expires_at("long").unwrap().expect("an expiry");
    assert!(
        at >= before + HOUR.as_millis() as u64 - 5_000 && at <= now_ms() + HOUR.as_millis() as u64
    );
    let left = db.ttl("long").unwrap().expect("time left");
    assert!(left <= HOUR && left > HOUR - Duration::from_secs(60));
    assert_eq!(db.expires_at("never").unwrap(), None);
    assert_eq!(db.ttl("plain").unwrap(), None);
    wait_past_short();
    assert_eq!(db.get("short").unwrap(), None);
    assert!(db.get_zerocopy("short").unwrap().is_none());
    assert!(!db.contains_key("short").unwrap());
    assert_eq!(db.expires_at("short").unwrap(), None);
    assert_eq!(db.ttl("short").unwrap(), None);
    assert_eq!(db.len().unwrap(), 3);
    let mut keys: Vec<_> = db.keys().unwrap().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![b"long".to_vec(), b"never".to_vec(), b"plain".to_vec()]
    );
    assert_eq!(db.iter().unwrap().count(), 3);
    assert_eq!(
        db.remove("short").unwrap(),
        None,
        "an expired key has no value to return"
    );
    assert_eq!(db.get("long").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn persist_and_plain_inserts_clear_an_expiry() {
    let db = Emdb::open_in_memory();
    db.insert_with_ttl("a", "1", Ttl::After(HOUR)).unwrap();
    db.insert_with_ttl("b", "1", Ttl::After(HOUR)).unwrap();
    assert!(db.persist("a").unwrap());
    assert_eq!(db.expires_at("a").unwrap(), None);
    assert!(!db.persist("a").unwrap(), "nothing left to persist");
    assert!(!db.persist("missing").unwrap());
    db.insert("b", "2").unwrap();
    assert_eq!(
        db.expires_at("b").unwrap(),
        None,
        "a plain insert clears the expiry"
    );
    db.insert_with_ttl("c", "1", Ttl::After(SHORT)).unwrap();
    wait_past_short();
    assert!(
        !db.persist("c").unwrap(),
        "an expired key is not brought back"
    );
    assert_eq!(db.get("c").unwrap(), None);
    assert_eq!(db.get("a").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn default_ttl_applies_to_writes_that_name_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(dir.path().join("db"))
        .default_ttl(HOUR)
        .build()
        .unwrap();
    db.insert("a", "1").unwrap();
    db.insert_many([("b", "1")]).unwrap();
    db.insert_with_ttl("c", "1", Ttl::Default).unwrap();
    db.insert_with_ttl("d", "1", Ttl::Never).unwrap();
    for k in ["a", "b", "c"] {
        assert!(db.expires_at(k).unwrap().is_some(), "{k}");
    }
    assert_eq!(db.expires_at("d").unwrap(), None);
}

#[test]
fn a_ttl_that_overflows_the_clock_is_refused() {
    let db = Emdb::open_in_memory();
    assert!(matches!(
        db.insert_with_ttl("k", "v", Ttl::After(Duration::MAX)),
        Err(Error::TtlOverflow)
    ));
    assert!(matches!(
        db.insert_with_ttl("k", "v", Ttl::After(Duration::from_millis(u64::MAX))),
        Err(Error::TtlOverflow)
    ));
    assert_eq!(db.get("k").unwrap(), None, "nothing was written");
    let ns = db.namespace("n").unwrap();
    assert!(matches!(
        ns.insert_with_ttl("k", "v", Ttl::After(Duration::MAX)),
        Err(Error::TtlOverflow)
    ));
}

#[test]
fn sweep_writes_tombstones_that_survive_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open(&path);
        for i in 0..100u32 {
            let ttl = if i % 10 == 0 {
                Ttl::After(SHORT)
            } else {
                Ttl::After(HOUR)
            };
            db.insert_with_ttl(format!("k{i:03}"), "v", ttl).unwrap();
        }
        let users = db.namespace("users").unwrap();
        users.insert_with_ttl("u", "v", Ttl::After(SHORT)).unwrap();
        wait_past_short();
        assert_eq!(db.len().unwrap(), 90);
        assert_eq!(db.sweep_expired(), 10, "default namespace only");
        assert_eq!(db.sweep_expired(), 0, "nothing left");
        assert_eq!(users.sweep_expired(), 1);
        db.flush().unwrap();
    }
    // Replay without hints: the tombstones keep the records gone.
    remove_hints(&path);
    let db = open(&path);
    assert_eq!(db.len().unwrap(), 90);
    assert_eq!(db.sweep_expired(), 0);
    assert_eq!(db.get("k000").unwrap(), None);
    assert_eq!(db.get("k001").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn expiry_survives_reopens_with_and_without_hints() {
    for hints in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let at = {
            let db = open(&path);
            db.insert_with_ttl("long", "v", Ttl::After(HOUR)).unwrap();
            db.insert_with_ttl("short", "v", Ttl::After(SHORT)).unwrap();
            db.insert("plain", "v").unwrap();
            let at = db.expires_at("long").unwrap().unwrap();
            db.close().unwrap(); // checkpoints: hint files carry the expiry
            at
        };
        if !hints {
            remove_hints(&path);
        }
        wait_past_short();
        let db = open(&path);
        assert_eq!(db.expires_at("long").unwrap(), Some(at), "hints: {hints}");
        assert_eq!(db.expires_at("plain").unwrap(), None);
        // Expired while the database was closed: stays gone, and sweeps.
        assert_eq!(db.get("short").unwrap(), None);
        assert_eq!(db.len().unwrap(), 2);
        assert_eq!(db.sweep_expired(), 1, "hints: {hints}");
    }
}

/// Compaction reclaims expired records (it sweeps them into tombstones
/// first, so their segments count as dead), and an older value of a key
/// under an expired newer one never comes back: the old record sits in a
/// segment that stays (all live), the expired one goes with its segment.
#[test]
fn compaction_drops_expired_records_without_resurrecting_older_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open(&path);
        db.insert("k", "old value").unwrap();
        // Fill a few segments so "k"'s old record sits in an older one.
        for i in 0..600u32 {
            db.insert(format!("filler-{i}"), vec![b'f'; 200]).unwrap();
        }
        db.insert_with_ttl("k", "new value", Ttl::After(SHORT))
            .unwrap();
        for i in 0..200u32 {
            db.insert_with_ttl(format!("t{i}"), vec![b't'; 200], Ttl::After(SHORT))
                .unwrap();
        }
        db.flush().unwrap();
        wait_past_short();
        assert_eq!(db.get("k").unwrap(), None);
        db.compact().unwrap();
        let st = db.stats().unwrap();
        assert!(st.compactions > 0 && st.bytes_reclaimed > 0);
        assert_eq!(db.get("k").unwrap(), None, "after compaction");
        assert_eq!(db.len().unwrap(), 600);
        assert!(
            std::fs::read_dir(&path)
                .unwrap()
                .any(|e| e.unwrap().file_name() == "000-00000001.seg"),
            "the segment of the old value stays (it is live)"
        );
        db.flush().unwrap();
    }
    remove_hints(&path);
    let db = open(&path);
    assert_eq!(
        db.get("k").unwrap(),
        None,
        "the old value came back after replay"
    );
    assert_eq!(db.len().unwrap(), 600);
}

#[cfg(feature = "async")]
#[test]
fn async_ttl_calls_mirror_the_blocking_ones() {
    futures::executor::block_on(async {
        let db = emdb::AsyncEmdb::open_in_memory();
        db.insert_with_ttl("long", "v", Ttl::After(HOUR))
            .await
            .unwrap();
        db.insert_with_ttl("short", "v", Ttl::After(SHORT))
            .await
            .unwrap();
        assert!(db.expires_at("long").await.unwrap().is_some());
        assert!(db.ttl("long").await.unwrap().is_some());
        wait_past_short();
        assert_eq!(db.get("short").await.unwrap(), None);
        assert_eq!(db.sweep_expired().await.unwrap(), 1);
        assert!(db.persist("long").await.unwrap());
        assert_eq!(db.expires_at("long").await.unwrap(), None);
        let ns = db.namespace("n").await.unwrap();
        ns.insert_with_ttl("x", "v", Ttl::After(SHORT))
            .await
            .unwrap();
        wait_past_short();
        assert_eq!(ns.sweep_expired().await.unwrap(), 1);
    });
}
