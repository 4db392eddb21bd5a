//! Namespaces: separate key spaces with their own indexes, a durable
//! registry, atomic drops whose records never come back, and the async
//! twin.

use std::path::Path;

use emdb::{Emdb, Error};

#[cfg(feature = "fault-injection")]
#[path = "support/power_cut.rs"]
mod power_cut;

fn open(path: &Path) -> Emdb {
    Emdb::builder()
        .path(path)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(2048)
        .build()
        .expect("open")
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn namespaces_are_separate_key_spaces() {
    let db = Emdb::open_in_memory();
    let users = db.namespace("users").unwrap();
    let sessions = db.namespace("sessions").unwrap();
    assert_eq!(users.name(), "users");
    db.insert("k", "default").unwrap();
    users.insert("k", "user").unwrap();
    sessions.insert("k", "session").unwrap();
    users
        .insert_many([("a", "1"), ("b", "2"), ("c", "3")])
        .unwrap();
    assert_eq!(db.get("k").unwrap(), Some(b"default".to_vec()));
    assert_eq!(users.get("k").unwrap(), Some(b"user".to_vec()));
    assert_eq!(sessions.get("k").unwrap(), Some(b"session".to_vec()));
    assert_eq!(users.get_zerocopy("a").unwrap().unwrap(), b"1"[..]);
    assert!(!db.contains_key("a").unwrap());
    assert!(users.contains_key("a").unwrap());
    assert_eq!(
        (
            db.len().unwrap(),
            users.len().unwrap(),
            sessions.len().unwrap()
        ),
        (1, 4, 1)
    );
    assert_eq!(
        sorted(users.keys().unwrap().collect()),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"k".to_vec()]
    );
    assert_eq!(
        sorted(db.iter().unwrap().collect()),
        vec![(b"k".to_vec(), b"default".to_vec())]
    );
    assert_eq!(users.remove("a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(users.remove("a").unwrap(), None);
    // clear empties one namespace only.
    users.clear().unwrap();
    assert!(users.is_empty().unwrap());
    assert_eq!(db.get("k").unwrap(), Some(b"default".to_vec()));
    assert_eq!(sessions.len().unwrap(), 1);
    db.clear().unwrap();
    assert_eq!(sessions.get("k").unwrap(), Some(b"session".to_vec()));
    assert_eq!(
        db.list_namespaces().unwrap(),
        vec!["".to_string(), "sessions".to_string(), "users".to_string()]
    );
    let st = db.stats().unwrap();
    assert_eq!(st.namespace_count, 3);
    assert_eq!(st.live_records, 1);
    // The same name gives the same namespace.
    assert_eq!(db.namespace("sessions").unwrap().len().unwrap(), 1);
}

#[test]
fn namespaces_and_their_records_survive_reopens_with_and_without_hints() {
    for checkpoint in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = open(&path);
            let a = db.namespace("alpha").unwrap();
            let b = db.namespace("beta").unwrap();
            for i in 0..500u32 {
                a.insert(format!("key-{i}"), format!("a{i}")).unwrap();
                b.insert(format!("key-{i}"), format!("b{i}")).unwrap();
                db.insert(format!("key-{i}"), format!("d{i}")).unwrap();
            }
            b.clear().unwrap();
            b.insert("after-clear", "x").unwrap();
            db.flush().unwrap();
            if checkpoint {
                db.checkpoint().unwrap();
            }
            db.close().unwrap();
        }
        let db = open(&path);
        let ctx = format!("checkpoint {checkpoint}");
        assert_eq!(
            db.list_namespaces().unwrap(),
            vec!["", "alpha", "beta"],
            "{ctx}"
        );
        let a = db.namespace("alpha").unwrap();
        let b = db.namespace("beta").unwrap();
        assert_eq!(
            (db.len().unwrap(), a.len().unwrap(), b.len().unwrap()),
            (500, 500, 1),
            "{ctx}"
        );
        for i in (0..500u32).step_by(37) {
            assert_eq!(
                a.get(format!("key-{i}")).unwrap(),
                Some(format!("a{i}").into_bytes())
            );
            assert_eq!(
                db.get(format!("key-{i}")).unwrap(),
                Some(format!("d{i}").into_bytes())
            );
        }
        assert_eq!(b.get("after-clear").unwrap(), Some(b"x".to_vec()));
    }
}

/// A dropped namespace is gone at once and after every kind of reopen: with
/// hints written before the drop, by full replay, and after compaction. A
/// namespace re-created under the same name starts empty and stays so.
#[test]
fn a_dropped_namespace_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        let db = open(&path);
        let old = db.namespace("tmp").unwrap();
        for i in 0..400u32 {
            old.insert(format!("k{i}"), vec![b'o'; 300]).unwrap();
        }
        db.insert("keep", "me").unwrap();
        db.flush().unwrap();
        db.checkpoint().unwrap(); // hints list the old records
        assert!(db.drop_namespace("tmp").unwrap());
        assert!(!db.drop_namespace("tmp").unwrap(), "dropped twice");
        assert_eq!(db.list_namespaces().unwrap(), vec![""]);
        // The old handle reads nothing and refuses writes.
        assert_eq!(old.get("k1").unwrap(), None);
        assert_eq!(old.len().unwrap(), 0);
        assert!(matches!(old.insert("k1", "v"), Err(Error::InvalidInput(_))));
        let new = db.namespace("tmp").unwrap();
        assert!(new.is_empty().unwrap());
        new.insert("fresh", "1").unwrap();
        db.flush().unwrap();
    }
    let check = |db: &Emdb, ctx: &str| {
        let tmp = db.namespace("tmp").unwrap();
        assert_eq!(tmp.len().unwrap(), 1, "{ctx}");
        assert_eq!(tmp.get("k1").unwrap(), None, "{ctx}");
        assert_eq!(tmp.get("fresh").unwrap(), Some(b"1".to_vec()), "{ctx}");
        assert_eq!(db.get("keep").unwrap(), Some(b"me".to_vec()), "{ctx}");
    };
    check(&open(&path), "reopen");
    // Full replay: no hint files.
    for e in std::fs::read_dir(&path).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
    check(&open(&path), "replay without hints");
    {
        let db = open(&path);
        db.compact().unwrap();
        check(&db, "after compact");
        assert!(
            db.stats().unwrap().bytes_reclaimed > 0,
            "compaction reclaimed nothing of the dropped namespace"
        );
    }
    check(&open(&path), "reopen after compact");
}

#[test]
fn bad_namespace_names_are_refused() {
    let db = Emdb::open_in_memory();
    assert!(matches!(db.namespace(""), Err(Error::InvalidInput(_))));
    assert!(matches!(db.namespace("a\nb"), Err(Error::InvalidInput(_))));
    assert!(matches!(db.namespace("nul\0"), Err(Error::InvalidInput(_))));
    assert!(matches!(
        db.namespace("x".repeat(256)),
        Err(Error::LimitExceeded { .. })
    ));
    assert!(db.namespace("x".repeat(255)).is_ok());
    assert!(db.namespace("ünïcödé namespace").is_ok());
    assert!(
        !db.drop_namespace("").unwrap(),
        "the default namespace is not dropped"
    );
    assert_eq!(db.list_namespaces().unwrap().len(), 3);
}

#[test]
fn the_namespace_count_is_limited() {
    let db = Emdb::open_in_memory();
    for i in 1..4096 {
        db.namespace(format!("ns{i}")).unwrap();
    }
    db.namespace("last").unwrap();
    assert!(matches!(
        db.namespace("one too many"),
        Err(Error::LimitExceeded { .. })
    ));
    assert!(db.drop_namespace("last").unwrap());
    db.namespace("room again").unwrap();
    assert_eq!(db.stats().unwrap().namespace_count, 4097);
}

#[cfg(feature = "async")]
#[test]
fn async_namespaces_mirror_the_blocking_ones() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    futures::executor::block_on(async {
        let db = emdb::AsyncEmdb::open(&path).await.unwrap();
        let ns = db.namespace("events").await.unwrap();
        assert_eq!(ns.name(), "events");
        for i in 0..100u32 {
            ns.insert(format!("e{i}"), format!("v{i}")).await.unwrap();
        }
        ns.insert_many([("x", "1"), ("y", "2")]).await.unwrap();
        db.flush().await.unwrap();
        assert_eq!(ns.len().await.unwrap(), 102);
        assert_eq!(db.len().await.unwrap(), 0);
        assert_eq!(ns.get("e5").await.unwrap(), Some(b"v5".to_vec()));
        assert!(ns.contains_key("x").await.unwrap());
        assert_eq!(ns.remove("x").await.unwrap(), Some(b"1".to_vec()));
        let streamed: Vec<_> = ns.iter_stream().await.unwrap().collect().await;
        assert_eq!(streamed.len(), 101);
        assert_eq!(ns.keys().await.unwrap().len(), 101);
        assert_eq!(ns.sync_handle().len().unwrap(), 101);
        assert_eq!(db.list_namespaces().await.unwrap(), vec!["", "events"]);
        drop(ns); // a namespace handle keeps the database open
        db.close().await.unwrap();
        let db = emdb::AsyncEmdb::open(&path).await.unwrap();
        assert_eq!(
            db.namespace("events").await.unwrap().len().await.unwrap(),
            101
        );
        assert!(db.drop_namespace("events").await.unwrap());
        assert!(db
            .namespace("events")
            .await
            .unwrap()
            .is_empty()
            .await
            .unwrap());
        db.close().await.unwrap();
    });
}

/// The registry across power cuts: a namespace created and flushed into
/// survives; a drop that returned is durable even though hint files written
/// before it still list the old records; a drop cut by the power at a
/// random I/O leaves the namespace whole or gone, never partly there.
#[cfg(feature = "fault-injection")]
#[test]
fn namespace_creation_and_drop_survive_power_cuts() {
    use power_cut::{image_policy, reopen_image, tracked};
    for cycle in 0..12u64 {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(1 + (cycle % 2) as usize)
                .segment_size(64 << 10)
                .max_key_len(64)
                .max_value_len(2048),
        );
        let doomed = db.namespace("doomed").unwrap();
        let kept = db.namespace("kept").unwrap();
        for i in 0..200u32 {
            doomed
                .insert(format!("k{i}"), format!("doomed{i}"))
                .unwrap();
            kept.insert(format!("k{i}"), format!("kept{i}")).unwrap();
        }
        db.flush().unwrap();
        db.checkpoint().unwrap();
        let cut_during_drop = cycle >= 6;
        if cut_during_drop {
            // The power goes off while the drop runs, at a moment that
            // varies by cycle (the manifest's write, sync, rename and
            // directory sync take about a millisecond each here).
            let cutter = {
                let plan = plan.clone();
                let delay = std::time::Duration::from_micros((cycle - 6) * 150);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    plan.power_off();
                })
            };
            let _ = db.drop_namespace("doomed");
            cutter.join().unwrap();
        } else {
            assert!(db.drop_namespace("doomed").unwrap());
            let again = db.namespace("doomed").unwrap();
            again.insert("new", "record").unwrap();
            db.flush().unwrap();
        }
        plan.power_off();
        drop((doomed, kept, db));
        let policy = image_policy(cycle % 2 == 0);
        let (db, image) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        let ctx = format!("cycle {cycle} ({image})");
        let kept = db.namespace("kept").unwrap();
        assert_eq!(kept.len().unwrap(), 200, "{ctx}");
        let listed = db
            .list_namespaces()
            .unwrap()
            .contains(&"doomed".to_string());
        let doomed = db.namespace("doomed").unwrap();
        if cut_during_drop {
            let n = doomed.len().unwrap();
            eprintln!(
                "cycle {cycle}: drop cut by the power; the namespace is {}",
                if listed { "whole" } else { "gone" }
            );
            assert!(
                (listed && n == 200) || (!listed && n == 0),
                "{ctx}: a cut drop left {n} of 200 records (listed: {listed})"
            );
        } else {
            assert!(listed, "{ctx}: the re-created namespace was lost");
            assert_eq!(
                doomed.get("k1").unwrap(),
                None,
                "{ctx}: an old record came back"
            );
            assert_eq!(doomed.len().unwrap(), 1, "{ctx}");
            assert_eq!(
                doomed.get("new").unwrap(),
                Some(b"record".to_vec()),
                "{ctx}"
            );
        }
    }
}
