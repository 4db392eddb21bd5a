//! Injected I/O failures (feature `fault-injection`): a failed write or sync
//! reaches the caller waiting on it, the shard then refuses writes, a failed
//! sync is never retried, and a reopen holds everything acknowledged before.
#![cfg(feature = "fault-injection")]

use std::path::Path;

use emdb::{Emdb, Error, FaultPlan};

fn open(path: &Path, plan: Option<FaultPlan>) -> Emdb {
    // One shard: every write and sync of the database goes through one core,
    // so the plan's counts are unambiguous.
    let b = Emdb::builder().path(path).shards(1);
    let b = match plan {
        Some(p) => b.fault_plan(p),
        None => b,
    };
    b.build().expect("open")
}

fn is_os_error(e: &Error, errno: i32) -> bool {
    matches!(e, Error::Io(io) if io.raw_os_error() == Some(errno))
}

fn check_failure_poisons(errno: i32, fail: impl Fn(&FaultPlan)) {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    {
        let db = open(&path, Some(plan.clone()));
        for i in 0..100 {
            db.insert(format!("acked-{i:03}"), format!("value-{i}"))
                .expect("insert");
        }
        db.flush().expect("flush before the fault");
        fail(&plan);
        match db.insert("after-fault", "x") {
            // The insert only buffers; the flush waits on the failing I/O.
            Ok(()) => {
                let err = db
                    .flush()
                    .expect_err("flush over the injected fault must fail");
                assert!(
                    is_os_error(&err, errno),
                    "the waiter gets the injected error, got {err:?}"
                );
            }
            // The core wrote something of its own first (a sync marker, just
            // before going idle) and met the fault: the shard was poisoned
            // before the insert, which is refused with the cause.
            Err(Error::Poisoned { cause, .. }) => {
                let want = std::io::Error::from_raw_os_error(errno).to_string();
                assert!(cause.contains(&want), "cause {cause:?}, want {want:?}");
                let err = db.flush().expect_err("flush after the failure must fail");
                assert!(is_os_error(&err, errno), "got {err:?}");
            }
            Err(e) => panic!("unexpected error from an insert: {e:?}"),
        }
        assert_eq!(plan.faults_injected(), 1);
        // The shard is poisoned: writes are refused, flushes fail.
        let err = db
            .insert("later", "y")
            .expect_err("writes after a failure are refused");
        assert!(matches!(err, Error::Poisoned { .. }), "got {err:?}");
        assert!(db.flush().is_err(), "a later flush must not report success");
        assert!(db.insert_many([("a", "1"), ("b", "2")]).is_err());
        assert!(db.remove("acked-000").is_err());
        // Reads still work.
        assert_eq!(
            db.get("acked-007").expect("get").as_deref(),
            Some(&b"value-7"[..])
        );
    }
    // A failed sync is never retried, not even at close.
    assert_eq!(
        plan.syncs_after_fault(),
        0,
        "a sync was issued after the fault"
    );
    let db = open(&path, None);
    for i in 0..100 {
        assert_eq!(
            db.get(format!("acked-{i:03}")).expect("get").as_deref(),
            Some(format!("value-{i}").as_bytes()),
            "acknowledged record {i} lost"
        );
    }
    assert_eq!(
        db.get("later").expect("get"),
        None,
        "a refused write appeared"
    );
    // Whatever else is there was written by us.
    for (k, v) in db.iter().expect("iter") {
        let ok = k == b"after-fault" && v == b"x" || k.starts_with(b"acked-");
        assert!(ok, "unexpected record {:?}", String::from_utf8_lossy(&k));
    }
    // And the reopened database takes writes again.
    db.insert("again", "z").expect("insert after reopen");
    db.flush().expect("flush after reopen");
}

#[test]
fn failed_fsync_reaches_the_waiter_poisons_and_is_never_retried() {
    check_failure_poisons(libc::EIO, |p| p.fail_sync(0, libc::EIO));
}

#[test]
fn failed_write_reaches_the_waiter_and_poisons() {
    check_failure_poisons(libc::EIO, |p| p.fail_write(0, libc::EIO));
}

#[test]
fn disk_full_on_write_reaches_the_waiter_and_poisons() {
    check_failure_poisons(libc::ENOSPC, |p| p.fail_write(0, libc::ENOSPC));
}

#[test]
fn write_through_insert_reports_a_failed_sync() {
    let t = tempfile::tempdir().expect("tempdir");
    let plan = FaultPlan::new();
    let db = Emdb::builder()
        .path(t.path().join("db"))
        .shards(1)
        .flush_policy(emdb::FlushPolicy::WriteThrough)
        .fault_plan(plan.clone())
        .build()
        .expect("open");
    db.insert("first", "1").expect("durable insert");
    plan.fail_sync(0, libc::EIO);
    let err = db
        .insert("second", "2")
        .expect_err("a write-through insert waits for its sync");
    assert!(is_os_error(&err, libc::EIO), "got {err:?}");
    assert!(matches!(
        db.insert("third", "3"),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn failed_sync_with_concurrent_flushers_on_two_shards_fails_them_and_loses_nothing_acknowledged() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let acked: Vec<String> = {
        let db = Emdb::builder()
            .path(&path)
            .shards(2)
            .fault_plan(plan.clone())
            .build()
            .expect("open");
        // Let a few hundred syncs through, then fail one while 8 threads
        // flush concurrently (which takes the shared device-flush path).
        plan.fail_sync(300, libc::EIO);
        let acked = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for th in 0..8 {
                let (db, acked) = (&db, &acked);
                s.spawn(move || {
                    for i in 0..400 {
                        let k = format!("t{th}-{i:04}");
                        if db.insert(k.clone(), k.clone()).is_err() {
                            return;
                        }
                        match db.flush() {
                            Ok(()) => acked.lock().expect("lock").push(k),
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        assert_eq!(plan.faults_injected(), 1, "the fault was reached");
        assert!(
            db.flush().is_err(),
            "no flush reports success after the failure"
        );
        acked.into_inner().expect("lock")
    };
    assert!(!acked.is_empty());
    let db = Emdb::builder()
        .path(&path)
        .shards(2)
        .build()
        .expect("reopen");
    for k in &acked {
        assert_eq!(
            db.get(k).expect("get").as_deref(),
            Some(k.as_bytes()),
            "acknowledged {k} lost"
        );
    }
}

#[test]
fn short_write_reaches_the_waiter_and_the_partial_frame_is_cut_at_reopen() {
    // A write cut short by a full disk: 10 bytes of the chain reach the
    // file (a frame's header, partly), then ENOSPC.
    check_failure_poisons(libc::ENOSPC, |p| p.short_write(0, 10, libc::ENOSPC));
}

fn count_segments(path: &Path) -> usize {
    std::fs::read_dir(path)
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

/// Inserts 1 KiB records with a flush after each until one fails; returns
/// the acknowledged keys and the error.
fn fill_until_error(db: &Emdb, prefix: &str, max: usize) -> (Vec<String>, Option<Error>) {
    let mut acked = Vec::new();
    for i in 0..max {
        let k = format!("{prefix}-{i:05}");
        if let Err(e) = db.insert(k.clone(), vec![b'v'; 1024]) {
            return (acked, Some(e));
        }
        if let Err(e) = db.flush() {
            return (acked, Some(e));
        }
        acked.push(k);
    }
    (acked, None)
}

/// `b` built, under `plan` if one is given.
fn build_with(b: emdb::EmdbBuilder, plan: Option<&FaultPlan>) -> Emdb {
    match plan {
        Some(p) => b.fault_plan(p.clone()),
        None => b,
    }
    .build()
    .expect("open")
}

/// One shard, 64 KiB segments (limits lowered to fit): rotation comes soon.
fn small_segments(path: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(path)
        .shards(1)
        .segment_size(64 * 1024)
        .max_value_len(4096)
        .max_key_len(256)
}

#[test]
fn a_failed_preallocation_is_retried_by_rotation() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let db = small_segments(&path)
        .fault_plan(plan.clone())
        .build()
        .expect("open");
    // The next preallocation (the segment prepared ahead, at half of the
    // first one) fails; rotation then creates the segment itself.
    plan.fail_fallocate(0, libc::EIO);
    let (acked, err) = fill_until_error(&db, "k", 200);
    assert!(
        err.is_none(),
        "a retried preallocation must not surface: {err:?}"
    );
    assert_eq!(plan.faults_injected(), 1);
    assert!(plan.fallocates() >= 2, "rotation tried again");
    drop(db);
    let db = small_segments(&path).build().expect("reopen");
    for k in &acked {
        assert!(db.get(k).expect("get").is_some(), "{k} lost");
    }
}

#[test]
fn no_room_for_a_new_segment_fails_the_write_and_writes_resume_when_space_returns() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let open = |plan: Option<&FaultPlan>| build_with(small_segments(&path), plan);
    let db = open(Some(&plan));
    plan.set_no_space(true);
    let (acked, err) = fill_until_error(&db, "a", 1000);
    let err = err.expect("the disk is full: some write must fail");
    assert!(
        is_os_error(&err, libc::ENOSPC),
        "the caller gets ENOSPC, got {err:?}"
    );
    assert!(!acked.is_empty());
    // The failed segment files are gone: only the first one is there.
    assert_eq!(count_segments(&path), 1, "a failed segment file was left");
    // Nothing was poisoned: reads work, the failed write did not land.
    assert_eq!(db.len().expect("len"), acked.len());
    for k in &acked {
        assert!(db.get(k).expect("get").is_some(), "{k} lost");
    }
    // Space returns: writes go on without a reopen.
    plan.set_no_space(false);
    let (more, err) = fill_until_error(&db, "b", 100);
    assert!(err.is_none(), "writes resume once space returns: {err:?}");
    drop(db);
    let db = open(None);
    for k in acked.iter().chain(&more) {
        assert!(db.get(k).expect("get").is_some(), "{k} lost");
    }
    assert_eq!(db.len().expect("len"), acked.len() + more.len());
}

/// A segment file grows as it fills (1 MiB, then in steps). A file that
/// cannot grow (no space) fails the append that needed the room with
/// ENOSPC, poisons nothing, and writes resume once space returns.
#[test]
fn a_segment_that_cannot_grow_fails_the_write_and_writes_resume_when_space_returns() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let build = |plan: Option<&FaultPlan>| {
        let b = Emdb::builder()
            .path(&path)
            .shards(1)
            .segment_size(8 << 20)
            .max_value_len(4096)
            .max_key_len(256);
        build_with(b, plan)
    };
    let db = build(Some(&plan));
    // The file starts at 1 MiB: fill most of it, then the disk is full.
    let (first, err) = fill_until_error(&db, "a", 600);
    assert!(err.is_none(), "{err:?}");
    let grown_before = plan.fallocates();
    plan.set_no_space(true);
    let (acked, err) = fill_until_error(&db, "b", 8000);
    let err = err.expect("the segment must need to grow, and fail to");
    assert!(
        is_os_error(&err, libc::ENOSPC),
        "the caller gets ENOSPC, got {err:?}"
    );
    assert!(plan.fallocates() > grown_before, "an extension was tried");
    assert_eq!(count_segments(&path), 1, "no rotation happened");
    assert_eq!(db.len().expect("len"), first.len() + acked.len());
    plan.set_no_space(false);
    let (more, err) = fill_until_error(&db, "c", 2000);
    assert!(err.is_none(), "writes resume once space returns: {err:?}");
    drop(db);
    let db = build(None);
    for k in first.iter().chain(&acked).chain(&more) {
        assert!(db.get(k).expect("get").is_some(), "{k} lost");
    }
    let len = std::fs::metadata(path.join("000-00000001.seg"))
        .unwrap()
        .len();
    assert!(
        len > 1 << 20 && len <= 8 << 20,
        "the segment grew past its first MiB: {len}"
    );
}

/// Compaction on a full disk: the moves need a new segment that cannot be
/// created, so `compact()` fails with ENOSPC. Nothing is lost, every
/// segment it had finished is retired (its space given back), reads go on,
/// and once space returns writes and compaction work again.
#[test]
fn compaction_on_a_full_disk_loses_nothing_and_writes_resume() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let build = |plan: Option<&FaultPlan>| {
        build_with(small_segments(&path).background_compaction(false), plan)
    };
    let db = build(Some(&plan));
    let mut model = std::collections::BTreeMap::new();
    // Round 0 writes every key, later rounds only the even ones: the old
    // segments are half dead, and their live half needs new segments.
    for round in 0..4u8 {
        for k in (0..150u32).filter(|k| round == 0 || k % 2 == 0) {
            let v = vec![round; 900 + (k as usize % 100)];
            db.insert(format!("k{k:03}"), v.clone()).expect("insert");
            model.insert(format!("k{k:03}").into_bytes(), v);
        }
    }
    db.flush().expect("flush");
    // Segments in use (`stats`), not files: the next segment is created
    // ahead of need by a background thread, so its file may or may not be
    // there yet (a loaded machine showed both).
    let segments = |db: &Emdb| db.stats().expect("stats").segments as usize;
    let before = segments(&db);
    assert!(before >= 6, "{before} segments");
    plan.set_no_space(true);
    let err = db
        .compact()
        .expect_err("the moves need a segment the disk has no room for");
    assert!(is_os_error(&err, libc::ENOSPC), "{err:?}");
    let after = segments(&db);
    assert!(
        after <= before,
        "a failed compaction left more segments ({before} -> {after})"
    );
    let files = count_segments(&path);
    assert!(
        files <= after + 1,
        "{files} segment files for {after} segments in use and one prepared at most"
    );
    let got: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = db.iter().expect("iter").collect();
    assert_eq!(got, model, "reads after the failed compaction");
    plan.set_no_space(false);
    db.insert("after", "space returned").expect("writes resume");
    db.compact().expect("compaction works again");
    db.flush().expect("flush");
    assert!(segments(&db) < before, "compaction reclaimed space");
    drop(db);
    let db = build(None);
    model.insert(b"after".to_vec(), b"space returned".to_vec());
    let got: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = db.iter().expect("iter").collect();
    assert_eq!(got, model, "after reopen");
}

/// `SyncStrategy::Dsync`: a lone flusher's round is one `RWF_DSYNC` write.
/// What it acknowledged survives a reopen, and an injected sync failure
/// reaches the flusher through that write and poisons the shard.
#[test]
fn dsync_strategy_keeps_acknowledged_writes_and_reports_a_failed_sync() {
    let t = tempfile::tempdir().expect("tempdir");
    let path = t.path().join("db");
    let plan = FaultPlan::new();
    let db = Emdb::builder()
        .path(&path)
        .shards(1)
        .sync_strategy(emdb::SyncStrategy::Dsync)
        .fault_plan(plan.clone())
        .build()
        .expect("open");
    for i in 0..50 {
        db.insert(format!("k{i}"), format!("v{i}")).expect("insert");
        db.flush().expect("flush");
    }
    let syncs = plan.syncs();
    assert!(
        syncs >= 50,
        "each flush made something durable ({syncs} syncs)"
    );
    plan.fail_sync(0, libc::EIO);
    db.insert("late", "x").expect("insert");
    let err = db
        .flush()
        .expect_err("the injected failure reaches the flusher");
    assert!(is_os_error(&err, libc::EIO), "got {err:?}");
    assert!(matches!(
        db.insert("after", "y"),
        Err(Error::Poisoned { .. })
    ));
    drop(db);
    let db = open(&path, None);
    for i in 0..50 {
        assert_eq!(
            db.get(format!("k{i}")).expect("get"),
            Some(format!("v{i}").into_bytes()),
            "k{i}"
        );
    }
}
