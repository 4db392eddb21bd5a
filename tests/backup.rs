//! `backup_to`: a consistent, openable copy while writers go on; every file
//! and directory of it durable when the call returns; clear refusals.
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --all-features --test backup`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use emdb::{Emdb, Error};

fn builder(dir: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(64 * 1024)
        .max_key_len(64)
        .max_value_len(2048)
}

fn contents(db: &Emdb) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter().unwrap().collect()
}

#[test]
fn a_backup_opens_with_the_same_records() {
    let t = tempfile::tempdir().unwrap();
    let db = builder(&t.path().join("db")).build().unwrap();
    for i in 0..3000u32 {
        db.insert(
            format!("k{i:05}"),
            vec![(i % 251) as u8; (i % 700) as usize],
        )
        .unwrap();
    }
    for i in (0..3000u32).step_by(3) {
        db.remove(format!("k{i:05}")).unwrap();
    }
    db.insert_many((0..50u32).map(|i| (format!("b{i}"), format!("batch {i}"))))
        .unwrap();
    db.compact().unwrap();
    db.insert("after-compaction", "yes").unwrap();
    // Not flushed: the backup makes what it copies durable itself.
    let copy = t.path().join("backups").join("one");
    db.backup_to(&copy).unwrap();
    let want = contents(&db);
    drop(db);
    let b = builder(&copy).build().unwrap();
    assert_eq!(contents(&b), want);
    assert_eq!(b.len().unwrap(), want.len());
    // The copy is a database of its own: it takes writes.
    b.insert("in-the-copy", "1").unwrap();
    drop(b);
    let b = Emdb::open(&copy).unwrap();
    assert_eq!(b.get("in-the-copy").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_backup_under_writers_holds_everything_written_before_the_call() {
    let t = tempfile::tempdir().unwrap();
    let db = builder(&t.path().join("db")).build().unwrap();
    const THREADS: usize = 3;
    // Per thread: the number of writes that returned.
    let done: Vec<AtomicU64> = (0..THREADS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let seen_before: Mutex<Vec<Vec<u64>>> = Mutex::new(Vec::new());
    let key = |t: usize, k: u64| format!("t{t}-k{:03}", k % 200);
    let value = |t: usize, i: u64| format!("t{t}-write-{i:08}-{}", "x".repeat((i % 300) as usize));
    std::thread::scope(|s| {
        for (th, d) in done.iter().enumerate() {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if i % 10 == 0 {
                        // A batch: both keys of it carry write i.
                        db.insert_many([
                            (key(th, i), value(th, i)),
                            (key(th, i + 1), value(th, i)),
                        ])
                        .unwrap();
                    } else {
                        db.insert(key(th, i), value(th, i)).unwrap();
                    }
                    d.store(i, Ordering::Release);
                }
            });
        }
        for n in 0..4 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let before: Vec<u64> = done.iter().map(|d| d.load(Ordering::Acquire)).collect();
            db.backup_to(t.path().join(format!("copy{n}"))).unwrap();
            seen_before.lock().unwrap().push(before);
        }
        stop.store(true, Ordering::Relaxed);
    });
    for (n, before) in seen_before.into_inner().unwrap().into_iter().enumerate() {
        let b = builder(&t.path().join(format!("copy{n}"))).build().unwrap();
        for (th, upto) in before.iter().enumerate() {
            for k in 0..200u64 {
                // The newest write to this key among those that returned
                // before the call must be there, or a newer one.
                let last = (1..=*upto)
                    .rev()
                    .find(|i| i % 200 == k || (i % 10 == 0 && (i + 1) % 200 == k));
                let got = b.get(key(th, k)).unwrap();
                if let Some(last) = last {
                    let got = got.unwrap_or_else(|| panic!("copy {n}: t{th} key {k} missing"));
                    let s = String::from_utf8(got).unwrap();
                    let i: u64 = s[s.find("write-").unwrap() + 6..][..8].parse().unwrap();
                    assert!(
                        i >= last,
                        "copy {n}: t{th} key {k} holds write {i}, older than {last}"
                    );
                    assert_eq!(s, value(th, i), "copy {n}: a value never written");
                }
            }
        }
        // Batches are whole: both keys of a batch show it, or newer writes.
        for (k, v) in b.iter().unwrap() {
            let s = String::from_utf8(v).unwrap();
            let th: usize = s[1..2].parse().unwrap();
            let i: u64 = s[s.find("write-").unwrap() + 6..][..8].parse().unwrap();
            if i % 10 == 0 {
                let other = if k == key(th, i).into_bytes() {
                    key(th, i + 1)
                } else {
                    key(th, i)
                };
                let o = String::from_utf8(b.get(&other).unwrap().unwrap()).unwrap();
                let j: u64 = o[o.find("write-").unwrap() + 6..][..8].parse().unwrap();
                assert!(j >= i, "copy {n}: batch {i} of t{th} is torn");
            }
        }
    }
}

#[test]
fn backup_refuses_a_path_inside_the_database_or_a_non_empty_directory() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let db = builder(&dir).build().unwrap();
    db.insert("a", "1").unwrap();
    for bad in [
        dir.clone(),
        dir.join("inside"),
        dir.join("x").join("..").join("y"),
    ] {
        match db.backup_to(&bad) {
            Err(Error::InvalidInput(why)) => assert!(why.contains("inside"), "{why}"),
            other => panic!("backup into {} gave {other:?}", bad.display()),
        }
    }
    let full = t.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"keep").unwrap();
    match db.backup_to(&full) {
        Err(Error::InvalidInput(why)) => assert!(why.contains("not empty"), "{why}"),
        other => panic!("backup into a non-empty directory gave {other:?}"),
    }
    assert_eq!(std::fs::read(full.join("something")).unwrap(), b"keep");
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(db.backup_to(&file), Err(Error::InvalidInput(_))));
    // An empty directory is fine.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    db.backup_to(&empty).unwrap();
    assert_eq!(
        Emdb::open(&empty).unwrap().get("a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // The database itself was not touched.
    assert!(!dir.join("inside").exists());
}

#[test]
fn an_in_memory_database_backs_up_to_disk() {
    let t = tempfile::tempdir().unwrap();
    let db = Emdb::open_in_memory();
    for i in 0..500u32 {
        db.insert(format!("m{i}"), format!("v{i}")).unwrap();
    }
    db.remove("m7").unwrap();
    db.backup_to(t.path().join("copy")).unwrap();
    let b = Emdb::open(t.path().join("copy")).unwrap();
    assert_eq!(b.len().unwrap(), 499);
    assert_eq!(b.get("m8").unwrap().as_deref(), Some(&b"v8"[..]));
    assert_eq!(b.get("m7").unwrap(), None);
}

/// The copy is durable when the call returns: a power cut right after it
/// leaves a copy that opens with every record (the power-loss model checks
/// that each file's data and each directory entry was fsynced).
#[cfg(feature = "fault-injection")]
#[test]
fn a_backup_survives_a_power_cut_right_after_it() {
    use emdb::{FaultPlan, ImagePolicy};
    for seed in 0..4u64 {
        let t = tempfile::tempdir().unwrap();
        let plan = FaultPlan::new();
        plan.track_durable();
        let db = builder(&t.path().join("db"))
            .fault_plan(plan.clone())
            .build()
            .unwrap();
        for i in 0..2000u32 {
            db.insert(format!("k{i:05}"), vec![(i % 199) as u8; 300])
                .unwrap();
        }
        let want = contents(&db);
        let copy = t.path().join("new").join("copy");
        db.backup_to(&copy).unwrap();
        plan.power_off();
        drop(db);
        let policy = if seed % 2 == 0 {
            ImagePolicy::DurableOnly
        } else {
            ImagePolicy::Random
        };
        let image = t.path().join("image");
        let report = plan.durable_image(&copy, &image, policy, seed).unwrap();
        assert!(
            !report.directory_lost,
            "the copy's directory was not durable"
        );
        let b = builder(&image).build().unwrap();
        assert_eq!(contents(&b), want, "{report:?}");
    }
}
