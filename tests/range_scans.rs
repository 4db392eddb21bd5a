//! Range scans: the calls on every handle, what a lazy iterator sees of
//! concurrent writes (the rule `EmdbRangeIter` documents), the point-in-time
//! reads of `range`, the rebuild at open, and the ordered index's upkeep.
//! The model test (`model_ns_ttl.rs`) compares ranges with a `BTreeMap`
//! across expiry, namespaces and reopens.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use emdb::{Emdb, Error};

fn open(path: &Path) -> Emdb {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(256 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .enable_range_scans(true)
        .build()
        .unwrap()
}

/// An in-memory database with range scans, over two shards.
fn memory() -> Emdb {
    Emdb::builder()
        .in_memory()
        .shards(2)
        .enable_range_scans(true)
        .build()
        .unwrap()
}

/// Removes the hint files, so the next open replays the log.
fn remove_hints(path: &Path) {
    for e in std::fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn keys_of(items: &[(Vec<u8>, Vec<u8>)]) -> Vec<Vec<u8>> {
    items.iter().map(|(k, _)| k.clone()).collect()
}

#[test]
fn without_the_option_every_range_call_is_invalid_config() {
    let db = Emdb::open_in_memory();
    let ns = db.namespace("n").unwrap();
    let bad = |r: Result<(), Error>| matches!(r, Err(Error::InvalidConfig(_)));
    assert!(bad(db.range(..).map(drop)));
    assert!(bad(db.range_prefix("a").map(drop)));
    assert!(bad(db.range_iter(..).map(drop)));
    assert!(bad(db.range_prefix_iter("a").map(drop)));
    assert!(bad(db.iter_from("a").map(drop)));
    assert!(bad(db.iter_after("a").map(drop)));
    assert!(bad(ns.range(..).map(drop)));
    assert!(bad(ns.iter_after("a").map(drop)));
    assert!(bad(db.range_cursor(..).map(drop)));
    assert!(bad(ns.range_prefix_cursor("a").map(drop)));
    assert!(!db.stats().unwrap().range_scans_enabled);
    let on = memory();
    assert!(on.stats().unwrap().range_scans_enabled);
    assert_eq!(on.range(..).unwrap(), vec![]);
}

#[test]
fn bounds_prefixes_and_cursors_in_ascending_order_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db"));
    // Inserted in a scrambled order, across both shards.
    for i in (0..1000u32).map(|i| (i * 7919) % 1000) {
        db.insert(key(i), format!("v{i}")).unwrap();
    }
    let all = db.range(..).unwrap();
    assert_eq!(keys_of(&all), (0..1000).map(key).collect::<Vec<_>>());
    assert_eq!(all[17].1, b"v17".to_vec());
    let lazy: Vec<_> = db.range_iter(..).unwrap().collect();
    assert_eq!(lazy, all, "the lazy iterator crosses chunks without a gap");
    let mid = db.range(key(100)..key(200)).unwrap();
    assert_eq!(keys_of(&mid), (100..200).map(key).collect::<Vec<_>>());
    let incl = db.range(key(100)..=key(200)).unwrap();
    assert_eq!(incl.len(), 101);
    let excl_start = db
        .range((Bound::Excluded(key(100)), Bound::Included(key(105))))
        .unwrap();
    assert_eq!(
        keys_of(&excl_start),
        (101..=105).map(key).collect::<Vec<_>>()
    );
    assert_eq!(
        db.range(key(300)..key(200)).unwrap(),
        vec![],
        "empty, no panic"
    );
    assert_eq!(db.range(key(5)..key(5)).unwrap(), vec![]);
    let p = db.range_prefix("key-0005").unwrap();
    assert_eq!(keys_of(&p), (500..600).map(key).collect::<Vec<_>>());
    let p_lazy: Vec<_> = db.range_prefix_iter("key-0005").unwrap().collect();
    assert_eq!(p_lazy, p);
    assert_eq!(
        db.range_prefix("").unwrap(),
        all,
        "the empty prefix is everything"
    );
    let from: Vec<_> = db.iter_from(key(998)).unwrap().collect();
    assert_eq!(keys_of(&from), vec![key(998), key(999)]);
    let after: Vec<_> = db.iter_after(key(998)).unwrap().collect();
    assert_eq!(keys_of(&after), vec![key(999)]);
    let between: Vec<_> = db.iter_after("key-000100a").unwrap().take(2).collect();
    assert_eq!(keys_of(&between), vec![key(101), key(102)]);
    // Keys whose prefix ends in 0xff bytes.
    db.insert(vec![b'z', 0xff], "a").unwrap();
    db.insert(vec![b'z', 0xff, 0xff, 1], "b").unwrap();
    db.insert(vec![b'{'], "c").unwrap();
    let ff = db.range_prefix([b'z', 0xff]).unwrap();
    assert_eq!(ff.len(), 2);
    let top = db.range_prefix([0xff]).unwrap();
    assert!(top.is_empty());
}

/// The merge across shards and the walk through blocks, for every shard
/// count (one head, two, several): keys of one length whose first eight
/// bytes tie (the merge then compares their bytes), keys of varied
/// lengths (blocks that keep offsets), keys shorter than eight bytes and
/// keys whose heads tie only through zero padding ("b" and "b\0"), with
/// holes punched by removals; each call checked against a model.
#[test]
fn every_shard_count_merges_in_key_order() {
    use std::collections::BTreeMap;
    for shards in [1, 2, 3, 5] {
        let db = Emdb::builder()
            .in_memory()
            .shards(shards)
            .enable_range_scans(true)
            .build()
            .unwrap();
        let mut model = BTreeMap::new();
        let mut put = |k: Vec<u8>, v: Vec<u8>| {
            db.insert(k.clone(), v.clone()).unwrap();
            model.insert(k, v);
        };
        for i in (0..3000u32).map(|i| (i * 7919) % 3000) {
            // One length, one head: "sameHEAD" and four bytes.
            let mut k = b"sameHEAD".to_vec();
            k.extend_from_slice(&i.to_be_bytes());
            put(k, i.to_le_bytes().to_vec());
            // Varied lengths under another prefix.
            let v = format!("v/{}/{}", i % 7, "x".repeat((i % 13) as usize));
            put(v.into_bytes(), vec![b'v'; (i % 50) as usize]);
        }
        for i in 0..200u8 {
            put(vec![b'a', i], vec![i]);
        }
        // Heads that tie through zero padding: "b", "b\0", "b\0\0", ...
        for n in 1..12 {
            let mut k = vec![b'b'];
            k.resize(n, 0);
            put(k, vec![n as u8]);
        }
        // Holes: every fifth key of one length goes.
        for i in (0..3000u32).step_by(5) {
            let mut k = b"sameHEAD".to_vec();
            k.extend_from_slice(&i.to_be_bytes());
            db.remove(&k).unwrap();
            model.remove(&k);
        }
        let expect = |lo: Bound<&[u8]>, hi: Bound<&[u8]>| -> Vec<(Vec<u8>, Vec<u8>)> {
            model
                .range::<[u8], _>((lo, hi))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let all = db.range(..).unwrap();
        assert_eq!(
            all,
            expect(Bound::Unbounded, Bound::Unbounded),
            "{shards} shards"
        );
        let lazy: Vec<_> = db.range_iter(..).unwrap().collect();
        assert_eq!(lazy, all, "{shards} shards: the iterator across chunks");
        let mut cursor = db.range_cursor(..).unwrap();
        let mut lent = Vec::new();
        while let Some((k, v)) = cursor.next_record() {
            lent.push((k.to_vec(), v.to_vec()));
        }
        assert_eq!(lent, all, "{shards} shards: the cursor");
        for p in [
            &b"sameHEAD"[..],
            b"sameHEAD\0\0\x05",
            b"v/3/",
            b"a",
            b"v/",
            b"b",
        ] {
            let mut hi = p.to_vec();
            *hi.last_mut().unwrap() += 1;
            let want = expect(Bound::Included(p), Bound::Excluded(&hi));
            assert!(!want.is_empty());
            assert_eq!(db.range_prefix(p).unwrap(), want, "{shards} shards, {p:?}");
            let lazy: Vec<_> = db.range_prefix_iter(p).unwrap().collect();
            assert_eq!(lazy, want, "{shards} shards, {p:?}: lazily");
        }
        let mut from = b"sameHEAD".to_vec();
        from.extend_from_slice(&1234u32.to_be_bytes());
        let after: Vec<_> = db.iter_after(&from).unwrap().take(300).collect();
        let want: Vec<_> = expect(Bound::Excluded(&from), Bound::Unbounded)
            .into_iter()
            .take(300)
            .collect();
        assert_eq!(after, want, "{shards} shards: iter_after");
    }
}

#[test]
fn namespaces_have_their_own_order_and_clear_and_drop_empty_it() {
    let db = memory();
    let a = db.namespace("a").unwrap();
    let b = db.namespace("b").unwrap();
    for i in 0..300 {
        a.insert(key(i), "a").unwrap();
        b.insert(key(i + 1000), "b").unwrap();
        db.insert(key(i + 2000), "d").unwrap();
    }
    assert_eq!(
        keys_of(&a.range(..).unwrap()),
        (0..300).map(key).collect::<Vec<_>>()
    );
    assert_eq!(b.range(..).unwrap().len(), 300);
    assert!(b.range(key(0)..key(999)).unwrap().is_empty());
    assert_eq!(db.range(..).unwrap().len(), 300);
    a.clear().unwrap();
    assert!(a.range(..).unwrap().is_empty());
    a.insert("again", "1").unwrap();
    assert_eq!(keys_of(&a.range(..).unwrap()), vec![b"again".to_vec()]);
    assert!(db.drop_namespace("b").unwrap());
    let b = db.namespace("b").unwrap();
    assert!(
        b.range(..).unwrap().is_empty(),
        "a re-created namespace starts empty"
    );
    assert_eq!(db.range(..).unwrap().len(), 300);
}

/// The rule `EmdbRangeIter` documents: writes after the cursor show,
/// writes at or before it do not; keys ascend, once each; keys live and
/// unchanged throughout are all yielded.
#[test]
fn a_lazy_iterator_sees_writes_ahead_of_its_cursor_only() {
    let db = memory();
    for i in (0..2000).step_by(2) {
        db.insert(key(i), "old").unwrap();
    }
    let mut it = db.range_iter(..).unwrap();
    // Take a few: the first chunk (128 keys) was read.
    let head: Vec<_> = it.by_ref().take(10).collect();
    assert_eq!(
        keys_of(&head),
        (0..20).step_by(2).map(key).collect::<Vec<_>>()
    );
    // Behind the chunk just read (keys up to about 254): not shown.
    db.insert(key(1), "new behind").unwrap();
    db.insert(key(2), "changed behind").unwrap();
    // Ahead of it.
    db.insert(key(1001), "new ahead").unwrap();
    db.insert(key(1002), "changed ahead").unwrap();
    db.remove(key(1004)).unwrap();
    let rest: Vec<_> = it.collect();
    let mut seen = keys_of(&head);
    seen.extend(keys_of(&rest));
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "each key at most once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending");
    assert!(
        !unique.contains(&key(1)),
        "a key inserted behind the cursor"
    );
    assert!(
        unique.contains(&key(1001)),
        "a key inserted ahead of the cursor"
    );
    assert!(
        !unique.contains(&key(1004)),
        "a key removed ahead of the cursor"
    );
    let value_of = |k: &[u8]| rest.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    assert_eq!(value_of(&key(1002)), Some(b"changed ahead".to_vec()));
    for i in (0..2000).step_by(2).filter(|&i| i != 1004) {
        assert!(unique.contains(&key(i)), "unchanged key {i} yielded");
    }
}

/// A cursor lends what `range_iter` yields, and follows the same rule for
/// writes made while it runs; a record it lent stays as lent (the chunk it
/// came from is a copy) whatever is written meanwhile.
#[test]
fn a_cursor_lends_what_the_iterator_yields_under_the_same_rule() {
    let db = memory();
    for i in (0..2000).step_by(2) {
        db.insert(key(i), format!("old-{i}")).unwrap();
    }
    let copied = |c: &mut emdb::EmdbRangeCursor| {
        let mut out = Vec::new();
        while let Some((k, v)) = c.next_record() {
            out.push((k.to_vec(), v.to_vec()));
        }
        out
    };
    assert_eq!(
        copied(&mut db.range_cursor(..).unwrap()),
        db.range_iter(..).unwrap().collect::<Vec<_>>()
    );
    let bounds = (Bound::Excluded(key(100)), Bound::Included(key(1500)));
    assert_eq!(
        copied(&mut db.range_cursor(bounds.clone()).unwrap()),
        db.range(bounds).unwrap()
    );
    assert_eq!(
        copied(&mut db.range_prefix_cursor("key-0001").unwrap()),
        db.range_prefix("key-0001").unwrap()
    );

    let mut c = db.range_cursor(..).unwrap();
    let (k0, v0) = c.next_record().unwrap();
    let (k0, v0) = (k0.to_vec(), v0.to_vec());
    assert_eq!((k0.as_slice(), v0.as_slice()), (&key(0)[..], &b"old-0"[..]));
    for _ in 0..9 {
        c.next_record().unwrap();
    }
    // Behind the chunk just read, and ahead of it.
    db.insert(key(2), "changed behind").unwrap();
    db.insert(key(1), "new behind").unwrap();
    db.insert(key(1001), "new ahead").unwrap();
    db.insert(key(1002), "changed ahead").unwrap();
    db.remove(key(1004)).unwrap();
    db.compact().unwrap();
    let rest = copied(&mut c);
    assert!(rest.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    let has = |i: u32| rest.iter().any(|(k, _)| *k == key(i));
    assert!(!has(1), "a key inserted behind the cursor");
    assert!(has(1001), "a key inserted ahead of the cursor");
    assert!(!has(1004), "a key removed ahead of the cursor");
    let value_of = |i: u32| {
        rest.iter()
            .find(|(k, _)| *k == key(i))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value_of(1002), Some(b"changed ahead".to_vec()));
    assert_eq!(value_of(20), Some(b"old-20".to_vec()), "in the first chunk");
    assert_eq!(rest.len(), 1000 - 10 + 1 - 1);
}

/// A reader parks its chunk buffer in a thread-local spare when dropped:
/// one dropped while its thread's locals are destroyed (it lived in
/// another thread-local) must not panic, and a thread's next reader reads
/// as well with a reused buffer.
#[test]
fn readers_dropped_as_a_thread_ends_and_reused_buffers_are_fine() {
    use std::cell::RefCell;
    thread_local! {
        static KEPT: RefCell<Vec<emdb::EmdbRangeCursor>> = const { RefCell::new(Vec::new()) };
    }
    let db = memory();
    for i in 0..500 {
        db.insert(key(i), vec![b'v'; 100 + i as usize % 7]).unwrap();
    }
    let want = db.range(..).unwrap();
    let handle = {
        let db = db.clone_handle();
        std::thread::spawn(move || {
            // Registered before the spare buffer's local, so (destructors
            // run in reverse order) destroyed after it.
            KEPT.with(|k| assert!(k.borrow().is_empty()));
            for round in 0..3 {
                let mut c = db.range_cursor(..).unwrap();
                let mut got = Vec::new();
                while let Some((k, v)) = c.next_record() {
                    got.push((k.to_vec(), v.to_vec()));
                }
                assert_eq!(got.len(), 500, "round {round}");
                let it: Vec<_> = db.range_iter(..).unwrap().collect();
                assert_eq!(it, got, "round {round}");
            }
            // Two cursors half read, dropped with the thread's locals.
            for _ in 0..2 {
                let mut c = db.range_cursor(..).unwrap();
                c.next_record().unwrap();
                KEPT.with(|k| k.borrow_mut().push(c));
            }
        })
    };
    handle
        .join()
        .expect("no panic, also in the thread-local destructors");
    assert_eq!(db.range_iter(..).unwrap().collect::<Vec<_>>(), want);
}

/// `range(..)` reads its whole result at one point in time: a reader
/// summing every account never sees part of a transfer, while eight
/// threads run transfers as transactions.
#[test]
fn range_sees_transactions_whole() {
    let db = Arc::new(memory());
    const ACCOUNTS: u32 = 100;
    for i in 0..ACCOUNTS {
        db.insert(key(i), 1000u64.to_le_bytes()).unwrap();
    }
    let total = |items: &[(Vec<u8>, Vec<u8>)]| -> u64 {
        items
            .iter()
            .map(|(_, v)| u64::from_le_bytes(v[..8].try_into().unwrap()))
            .sum()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8u64)
        .map(|t| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) || done < 50 {
                    let (a, b) = (rng.u32(..ACCOUNTS), rng.u32(..ACCOUNTS));
                    let amount = rng.u64(..50);
                    let r = db.transaction_retry(100, |tx| {
                        let get = |tx: &mut emdb::Transaction<'_>, k| -> emdb::Result<u64> {
                            let v = tx.get(key(k))?.expect("account");
                            Ok(u64::from_le_bytes(v[..8].try_into().unwrap()))
                        };
                        let (x, y) = (get(tx, a)?, get(tx, b)?);
                        if a == b || x < amount {
                            return Ok(());
                        }
                        tx.insert(key(a), (x - amount).to_le_bytes())?;
                        tx.insert(key(b), (y + amount).to_le_bytes())
                    });
                    r.unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    for _ in 0..300 {
        let items = db.range(..).unwrap();
        assert_eq!(items.len(), ACCOUNTS as usize);
        assert_eq!(
            total(&items),
            1000 * ACCOUNTS as u64,
            "range saw part of a transfer"
        );
        let prefix = db.range_prefix("key-").unwrap();
        assert_eq!(total(&prefix), 1000 * ACCOUNTS as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(total(&db.range(..).unwrap()), 1000 * ACCOUNTS as u64);
}

#[test]
fn the_ordered_index_is_rebuilt_at_open_with_and_without_hints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        // Written without range scans: the next open builds the index.
        let db = Emdb::builder().path(&path).shards(2).build().unwrap();
        for i in 0..3000 {
            db.insert(key(i), format!("v{i}")).unwrap();
        }
        for i in (0..3000).step_by(3) {
            db.remove(key(i)).unwrap();
        }
        db.namespace("n").unwrap().insert("nk", "nv").unwrap();
        db.close().unwrap();
    }
    let want: Vec<Vec<u8>> = (0..3000).filter(|i| i % 3 != 0).map(key).collect();
    {
        let db = open(&path);
        assert_eq!(keys_of(&db.range(..).unwrap()), want, "from hints");
        let n = db.namespace("n").unwrap();
        assert_eq!(n.range(..).unwrap(), vec![(b"nk".to_vec(), b"nv".to_vec())]);
        drop(n);
        db.close().unwrap();
    }
    remove_hints(&path);
    let db = open(&path);
    assert_eq!(keys_of(&db.range(..).unwrap()), want, "by replay");
    assert_eq!(db.get(key(1)).unwrap(), Some(b"v1".to_vec()));
}

#[test]
fn removes_and_compaction_keep_the_ordered_index_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(dir.path().join("db"))
        .shards(2)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .background_compaction(false)
        .enable_range_scans(true)
        .build()
        .unwrap();
    let empty = db.stats().unwrap().ordered_index_bytes;
    for i in 0..20_000 {
        db.insert(key(i), vec![b'x'; 40]).unwrap();
    }
    let full = db.stats().unwrap().ordered_index_bytes;
    assert!(full > empty + 20_000 * 10, "{full} bytes for 20,000 keys");
    for i in 0..20_000 {
        if i % 10 != 0 {
            db.remove(key(i)).unwrap();
        }
    }
    db.compact().unwrap();
    let left = db.range(..).unwrap();
    assert_eq!(
        keys_of(&left),
        (0..20_000).step_by(10).map(key).collect::<Vec<_>>()
    );
    let after = db.stats().unwrap().ordered_index_bytes;
    assert!(
        after < full / 3,
        "removed keys leave the ordered index: {after} of {full} bytes"
    );
}

/// The ordered index keeps each key's record location: every overwrite
/// (single, batch, transaction) and every compaction move must carry it
/// along, or a scan would return an older value of the key. Checked
/// against a model and against point reads, live, after compactions that
/// moved records, and after reopens (with hints, then by replay).
#[test]
fn overwrites_and_compaction_moves_keep_scanned_values_current() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let open = || {
        Emdb::builder()
            .path(&path)
            .shards(2)
            .segment_size(64 << 10)
            .max_key_len(64)
            .max_value_len(1024)
            .background_compaction(false)
            .compaction_threshold(0.1)
            .enable_range_scans(true)
            .build()
            .unwrap()
    };
    let check = |db: &Emdb, model: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>, at: &str| {
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(db.range(..).unwrap(), want, "{at}: range(..)");
        let lazy: Vec<_> = db.range_iter(..).unwrap().collect();
        assert_eq!(lazy, want, "{at}: range_iter(..)");
        for p in ["key-0001", "key-002", "key-0033"] {
            let expect: Vec<_> = want
                .iter()
                .filter(|(k, _)| k.starts_with(p.as_bytes()))
                .cloned()
                .collect();
            let got: Vec<_> = db.range_prefix_iter(p).unwrap().collect();
            assert_eq!(got, expect, "{at}: range_prefix_iter {p}");
        }
        for (k, v) in &lazy {
            assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{at}: get {k:?}");
        }
    };
    let mut model = std::collections::BTreeMap::new();
    let db = open();
    let value = |i: u32, round: u32| format!("v{round}-{i}-{}", "x".repeat(60)).into_bytes();
    for i in 0..3_000 {
        db.insert(key(i), value(i, 0)).unwrap();
        model.insert(key(i), value(i, 0));
    }
    for round in 1..=4u32 {
        // Overwrites one at a time, in a batch and in transactions;
        // removes; then a compaction, which moves the live records out of
        // segments the overwrites left mostly dead.
        for i in (0..3_000).filter(|i| i % 3 == round % 3) {
            db.insert(key(i), value(i, round)).unwrap();
            model.insert(key(i), value(i, round));
        }
        let batch: Vec<_> = (0..3_000)
            .filter(|i| i % 5 == round % 5)
            .map(|i| (key(i), value(i, round + 10)))
            .collect();
        db.insert_many(batch.iter().map(|(k, v)| (k, v))).unwrap();
        model.extend(batch);
        for i in (0..3_000).step_by(97) {
            let k = key(i + round);
            db.transaction(|tx| {
                tx.insert(k.clone(), value(i, round + 20))?;
                Ok(())
            })
            .unwrap();
            model.insert(k, value(i, round + 20));
        }
        for i in (round..3_000).step_by(11) {
            db.remove(key(i)).unwrap();
            model.remove(&key(i));
        }
        check(&db, &model, &format!("round {round}, overwritten"));
        let moved = db.stats().unwrap().bytes_moved;
        db.compact().unwrap();
        assert!(
            db.stats().unwrap().bytes_moved > moved,
            "round {round}: the compaction moved records"
        );
        check(&db, &model, &format!("round {round}, compacted"));
    }
    drop(db);
    let db = open();
    check(&db, &model, "reopened with hints");
    drop(db);
    remove_hints(&path);
    check(&open(), &model, "reopened by replay");
}

/// With range scans a batch is appended in key order; of equal keys the
/// later pair still wins, live and after a replay of the log.
#[test]
fn a_batch_with_repeated_keys_keeps_the_last_pair_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let pairs = [
        ("b", "1"),
        ("a", "x"),
        ("c", "-"),
        ("b", "2"),
        ("a", "y"),
        ("b", "3"),
    ];
    let want = vec![
        (b"a".to_vec(), b"y".to_vec()),
        (b"b".to_vec(), b"3".to_vec()),
        (b"c".to_vec(), b"-".to_vec()),
    ];
    {
        let db = open(&path);
        db.insert_many(pairs).unwrap();
        assert_eq!(db.range(..).unwrap(), want);
        assert_eq!(db.get("b").unwrap(), Some(b"3".to_vec()));
        db.flush().unwrap();
        db.close().unwrap();
    }
    remove_hints(&path);
    let db = open(&path);
    assert_eq!(db.range(..).unwrap(), want, "after a replay of the log");
}

#[cfg(feature = "ttl")]
#[test]
fn expired_records_are_not_in_ranges() {
    use std::time::Duration;
    let db = memory();
    db.insert("a", "1").unwrap();
    db.insert_with_ttl("b", "2", emdb::Ttl::After(Duration::from_millis(1)))
        .unwrap();
    db.insert("c", "3").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        keys_of(&db.range(..).unwrap()),
        vec![b"a".to_vec(), b"c".to_vec()]
    );
    assert_eq!(db.iter_from("b").unwrap().count(), 1);
    assert_eq!(db.sweep_expired(), 1);
    assert_eq!(db.range(..).unwrap().len(), 2);
}

#[cfg(feature = "nested")]
#[test]
fn focus_ranges_take_relative_keys_and_stay_in_the_focus() {
    let db = memory();
    let users = db.focus("users");
    for i in 0..50 {
        users.set(format!("u{i:02}"), format!("{i}")).unwrap();
    }
    db.insert("users", "not in the group").unwrap();
    db.insert("users/x", "nor this").unwrap();
    db.insert("usersz", "nor this").unwrap();
    db.insert("a", "before").unwrap();
    let all = users.range(..).unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(all[0].0, b"users.u00".to_vec(), "full keys, in order");
    let some = users.range(b"u10".to_vec()..b"u20".to_vec()).unwrap();
    assert_eq!(some.len(), 10);
    assert_eq!(users.range_prefix("u4").unwrap().len(), 10);
    assert_eq!(users.range_prefix_iter("u4").unwrap().count(), 10);
    assert_eq!(users.iter_from("u45").unwrap().count(), 5);
    assert_eq!(users.iter_after("u45").unwrap().count(), 4);
    assert_eq!(users.range_iter(..).unwrap().count(), 50);
    let grouped: Vec<_> = db.group("users").unwrap().collect();
    assert_eq!(grouped, all, "group is the same prefix seek, in key order");
    assert_eq!(db.delete_group("users").unwrap(), 50);
    assert!(users.range(..).unwrap().is_empty());
    assert_eq!(db.range(..).unwrap().len(), 4);
    let root = db.focus("");
    assert_eq!(root.iter().unwrap().count(), 4);
    assert_eq!(root.range(..).unwrap().len(), 4);
}

#[cfg(feature = "async")]
#[test]
fn async_ranges_and_streams_match_the_sync_calls() {
    use futures::StreamExt;
    futures::executor::block_on(async {
        let db = emdb::AsyncEmdb::builder()
            .in_memory()
            .shards(2)
            .enable_range_scans(true)
            .build_async()
            .await
            .unwrap();
        for i in 0..600 {
            db.insert(key(i), format!("v{i}")).await.unwrap();
        }
        let sync = db.sync_handle();
        let want = sync.range(..).unwrap();
        assert_eq!(db.range(..).await.unwrap(), want);
        let stream: Vec<_> = db.range_stream(..).await.unwrap().collect().await;
        assert_eq!(stream, want);
        let p: Vec<_> = db
            .range_prefix_stream("key-0001")
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(p, db.range_prefix("key-0001").await.unwrap());
        assert_eq!(p.len(), 100);
        let from: Vec<_> = db.iter_from_stream(key(590)).await.unwrap().collect().await;
        assert_eq!(from.len(), 10);
        assert_eq!(db.iter_from(key(590)).await.unwrap(), from);
        let after: Vec<_> = db
            .iter_after_stream(key(590))
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(after.len(), 9);
        assert_eq!(db.iter_after(key(590)).await.unwrap(), after);
        let ns = db.namespace("n").await.unwrap();
        ns.insert("b", "2").await.unwrap();
        ns.insert("a", "1").await.unwrap();
        let got: Vec<_> = ns.range_stream(..).await.unwrap().collect().await;
        assert_eq!(keys_of(&got), vec![b"a".to_vec(), b"b".to_vec()]);
        // Every range future and stream is Send + 'static (spawnable).
        fn spawnable<T: Send + 'static>(t: T) -> T {
            t
        }
        let ns_range = spawnable(ns.range(b"a".to_vec()..)).await.unwrap();
        assert_eq!(ns_range.len(), 2);
        let stream = spawnable(ns.iter_after_stream("a")).await.unwrap();
        let after_a: Vec<_> = spawnable(stream).collect().await;
        assert_eq!(keys_of(&after_a), vec![b"b".to_vec()]);
        spawnable(db.range_prefix("key-")).await.unwrap();
        let off = emdb::AsyncEmdb::open_in_memory();
        assert!(matches!(
            off.range_stream(..).await,
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(off.range(..).await, Err(Error::InvalidConfig(_))));
        db.close().await.unwrap();
    });
}
