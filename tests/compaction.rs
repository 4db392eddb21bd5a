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
    // One more file may be the next segment, created ahead of need.
    assert!(
        files == after.segments || files == after.segments + 1,
        "{files} segment files for {} segments",
        after.segments
    );
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
    // The last claim on the retired segment goes with the value: its file
    // goes at once, on this thread.
    drop(held);
    let segments = db.stats().unwrap().segments as usize;
    let without = seg_files(&dir);
    assert!(
        without < with_held,
        "dropping the last holder removes the file ({with_held} -> {without}; {files_before} files before)"
    );
    // One more file may be the next segment, created ahead of need.
    assert!(
        without == segments || without == segments + 1,
        "every retired file is gone: {without} files for {segments} segments"
    );
}

/// Writers, readers and `ValueRef` holders while background compaction (and
/// explicit `compact()` calls) retire segments under them: no reader ever
/// misses a key that is never removed, sees another key's or a torn value,
/// or sees a key's version go back; held values never change.
#[test]
fn readers_and_held_values_see_nothing_wrong_during_background_compaction() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let t = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(t.path().join("db"))
        .shards(2)
        .segment_size(32 * 1024)
        .max_key_len(64)
        .max_value_len(1024)
        .compaction_threshold(0.3)
        .build()
        .unwrap();
    const KEYS: u64 = 64;
    let key = |k: u64| format!("stable-{k:03}").into_bytes();
    // `key | version | filler | checksum`: self-verifying.
    let value = |k: u64, ver: u64| {
        let mut v = format!("{k:03}|{ver:010}|").into_bytes();
        v.extend(std::iter::repeat_n(
            b'a' + (ver % 26) as u8,
            (ver % 200) as usize,
        ));
        let sum: u64 = v.iter().map(|b| *b as u64).sum();
        v.extend_from_slice(&sum.to_le_bytes());
        v
    };
    let check = |k: u64, v: &[u8]| -> u64 {
        assert!(v.len() >= 23, "value of {k} too short");
        let (body, sum) = v.split_at(v.len() - 8);
        let s: u64 = body.iter().map(|b| *b as u64).sum();
        assert_eq!(s.to_le_bytes(), sum, "torn or foreign value for key {k}");
        let text = std::str::from_utf8(&body[..15]).unwrap();
        assert_eq!(&text[..3], format!("{k:03}"), "another key's value for {k}");
        text[4..14].parse().unwrap()
    };
    for k in 0..KEYS {
        db.insert(key(k), value(k, 0)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let version = AtomicU64::new(1);
    let reads = AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (db, stop, version) = (&db, &stop, &version);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w);
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.u64(0..KEYS);
                    let ver = version.fetch_add(1, Ordering::Relaxed);
                    // Per key, versions only grow: one writer owns each key.
                    if k % 2 == w {
                        db.insert(key(k), value(k, ver)).unwrap();
                    }
                    // Churn that is removed again: dead bytes and tombstones.
                    let c = format!("churn-{w}-{}", rng.u32(0..50));
                    if rng.bool() {
                        db.insert(c.as_str(), vec![1u8; 300]).unwrap();
                    } else {
                        db.remove(c.as_str()).unwrap();
                    }
                }
            });
        }
        for r in 0..2u64 {
            let (db, stop, reads) = (&db, &stop, &reads);
            s.spawn(move || {
                let mut last = vec![0u64; KEYS as usize];
                let mut held: Vec<(u64, emdb::ValueRef<'_>, Vec<u8>)> = Vec::new();
                let mut rng = fastrand::Rng::with_seed(100 + r);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.u64(0..KEYS);
                    let v = db
                        .get(key(k))
                        .unwrap()
                        .unwrap_or_else(|| panic!("key {k} missing; it is never removed"));
                    let ver = check(k, &v);
                    assert!(
                        ver >= last[k as usize],
                        "key {k} went back from {} to {ver}",
                        last[k as usize]
                    );
                    last[k as usize] = ver;
                    if n % 50 == 0 {
                        let zc = db.get_zerocopy(key(k)).unwrap().expect("zero-copy read");
                        let copy = zc.to_vec();
                        check(k, &copy);
                        held.push((k, zc, copy));
                    }
                    if held.len() > 40 {
                        for (k, zc, copy) in held.drain(..20) {
                            assert_eq!(&zc[..], &copy[..], "a held value of {k} changed");
                        }
                    }
                    n += 1;
                }
                for (k, zc, copy) in held {
                    assert_eq!(&zc[..], &copy[..], "a held value of {k} changed");
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    db.compact().unwrap();
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let st = db.stats().unwrap();
    assert!(st.compactions >= 1, "compaction must have run: {st:?}");
    eprintln!(
        "{} reads, {} compaction runs, {} bytes reclaimed",
        reads.load(Ordering::Relaxed),
        st.compactions,
        st.bytes_reclaimed
    );
    for k in 0..KEYS {
        check(k, &db.get(key(k)).unwrap().unwrap());
    }
}

/// `stats()` reads each shard under its lock: live + dead + headers is the
/// logical size in every snapshot, even while writers append, the core
/// adds markers and compactions move records from segment to segment
/// (the add and the subtract of a move are two steps).
#[test]
fn stats_add_up_while_writes_and_compactions_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(t.path().join("db"))
        .shards(2)
        .segment_size(16 * 1024)
        .max_key_len(64)
        .max_value_len(1024)
        .compaction_threshold(0.2)
        .build()
        .unwrap();
    let stop = AtomicBool::new(false);
    let mut snapshots = 0u64;
    let mut wrong = None;
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w);
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("k-{w}-{}", rng.u32(0..40));
                    if rng.u8(0..4) == 0 {
                        db.remove(k.as_str()).unwrap();
                    } else {
                        db.insert(k.as_str(), vec![b'v'; rng.usize(0..400)])
                            .unwrap();
                    }
                    if rng.u8(0..32) == 0 {
                        db.flush().unwrap();
                    }
                }
            });
        }
        {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    db.compact().unwrap();
                }
            });
        }
        // The other threads stop before anything is asserted (a panic here
        // would leave them running and the scope waiting for ever).
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < until {
            let st = db.stats().unwrap();
            if st.live_bytes + st.dead_bytes + 64 * st.segments != st.logical_size_bytes {
                wrong = Some(st);
                break;
            }
            snapshots += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(st) = wrong {
        panic!("live + dead + headers != logical in snapshot {snapshots}: {st:?}");
    }
    let st = db.stats().unwrap();
    assert!(st.compactions >= 1, "compaction must have run: {st:?}");
    assert!(snapshots >= 100, "only {snapshots} snapshots taken");
}

/// Files a crash can leave behind (the hint file of a retired segment, a
/// half-written hint) are removed at the next open; other files are not.
#[test]
fn stale_hint_files_go_at_open_and_other_files_stay() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let db = builder(&dir).build().unwrap();
    db.insert("k", "v").unwrap();
    drop(db);
    for name in ["000-00000099.hint", "001-00000098.hint.tmp", "notes.txt"] {
        std::fs::write(dir.join(name), b"left behind").unwrap();
    }
    let db = builder(&dir).build().unwrap();
    assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(!dir.join("000-00000099.hint").exists());
    assert!(!dir.join("001-00000098.hint.tmp").exists());
    assert!(
        dir.join("notes.txt").exists(),
        "a file emdb does not own stays"
    );
    // The listed segments' own hint files stay.
    drop(db);
    assert!(dir.join("000-00000001.hint").exists() || dir.join("001-00000001.hint").exists());
}
