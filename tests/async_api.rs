//! The async API (feature `async`): every call on each executor the
//! contract names, thousands of concurrent durable writers on one thread,
//! cancellation at any await point, streams with nothing read ahead, and
//! closing without blocking.

#![cfg(feature = "async")]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use emdb::{AsyncEmdb, Emdb, FlushPolicy};
use futures::{Stream, StreamExt};

#[cfg(feature = "fault-injection")]
#[path = "support/power_cut.rs"]
mod power_cut;

fn value(key: &str, tag: u64) -> Vec<u8> {
    format!("{key}={tag}").into_bytes()
}

/// Every call of the async API on one database directory, checked, then a
/// reopen. Uses no runtime-specific call, so each executor runs it as is.
async fn exercise(path: PathBuf) {
    let db = AsyncEmdb::open(&path).await.expect("open");
    // 200 concurrent durable writers on the one task polling them.
    let writes = (0..200).map(|i| {
        let db = db.clone();
        async move {
            let k = format!("k{i:03}");
            db.insert(k.clone(), value(&k, 1)).await?;
            db.flush().await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.expect("insert + flush");
    }
    assert_eq!(db.len().await.unwrap(), 200);
    assert_eq!(db.get("k007").await.unwrap(), Some(value("k007", 1)));
    assert!(db.contains_key(String::from("k007")).await.unwrap());
    assert_eq!(db.remove("k007").await.unwrap(), Some(value("k007", 1)));
    assert_eq!(db.remove("k007").await.unwrap(), None);
    assert!(!db.contains_key("k007").await.unwrap());
    db.insert_many((0..10u64).map(|i| (format!("b{i}"), value("b", i))))
        .await
        .expect("insert_many");
    assert!(!db.is_empty().await.unwrap());

    let mut all = db.iter().await.unwrap();
    all.sort();
    assert_eq!(all.len(), 209);
    let mut keys = db.keys().await.unwrap();
    keys.sort();
    assert_eq!(keys, all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
    let mut streamed: Vec<_> = db.iter_stream().await.unwrap().collect().await;
    streamed.sort();
    assert_eq!(streamed, all);
    let mut streamed_keys: Vec<_> = db.keys_stream().await.unwrap().collect().await;
    streamed_keys.sort();
    assert_eq!(streamed_keys, keys);

    db.checkpoint().await.expect("checkpoint");
    db.compact().await.expect("compact");
    let backup = path.with_extension("backup");
    db.backup_to(&backup).await.expect("backup_to");
    let st = db.stats().await.unwrap();
    assert_eq!(st.live_records, 209);
    assert_eq!(
        db.sync_handle().get("k001").unwrap(),
        Some(value("k001", 1))
    );
    assert_eq!(db.path(), path.as_path());
    db.close().await.expect("close");

    // close() released the lock before it resolved.
    let db = AsyncEmdb::builder()
        .path(&path)
        .build_async()
        .await
        .expect("reopen");
    let mut again = db.iter().await.unwrap();
    again.sort();
    assert_eq!(again, all, "after reopen");
    db.clear().await.unwrap();
    assert!(db.is_empty().await.unwrap());
    db.close().await.unwrap();

    let copy = AsyncEmdb::open(&backup).await.expect("open the backup");
    let mut copied = copy.iter().await.unwrap();
    copied.sort();
    assert_eq!(copied, all, "backup");
    copy.close().await.unwrap();
}

#[test]
fn runs_on_tokio_multi_thread() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(exercise(dir.path().join("db")));
}

#[test]
fn runs_on_tokio_current_thread() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(exercise(dir.path().join("db")));
}

#[cfg(target_os = "linux")]
#[test]
fn runs_inside_tokio_uring() {
    let dir = tempfile::tempdir().unwrap();
    tokio_uring::start(exercise(dir.path().join("db")));
}

#[test]
fn runs_under_futures_block_on() {
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(exercise(dir.path().join("db")));
}

#[test]
fn futures_and_handles_are_send_static_and_clone() {
    fn send_static<T: Send + 'static>(_: T) {}
    fn handle<T: Send + Sync + Clone + 'static>() {}
    handle::<AsyncEmdb>();
    let db = AsyncEmdb::open_in_memory();
    // Borrowed arguments: the futures own copies of what they need.
    let key = String::from("key");
    send_static(db.insert(key.as_str(), key.as_bytes()));
    send_static(db.get(&key));
    send_static(db.remove(key.as_bytes()));
    send_static(db.insert_many(vec![(key.as_str(), "v")]));
    send_static(db.flush());
    send_static(db.iter_stream());
}

/// Thousands of tasks on one thread, each `insert` then `flush().await`,
/// share a handful of device flushes, and every write is there after a
/// reopen.
#[test]
fn ten_thousand_tasks_on_one_thread_share_device_flushes() {
    const TASKS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = AsyncEmdb::open(&path).await.unwrap();
        db.insert("warm-up", "x").await.unwrap();
        db.flush().await.unwrap();
        let before = db.stats().await.unwrap().device_flushes;
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let k = format!("task-{i:05}");
                    db.insert(k.clone(), value(&k, 7)).await?;
                    db.flush().await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("insert + flush");
        }
        let flushes = db.stats().await.unwrap().device_flushes - before;
        eprintln!("{TASKS} tasks: {flushes} device flushes");
        assert!(flushes >= 1);
        assert!(
            flushes <= (TASKS / 20) as u64,
            "{TASKS} concurrent flushing tasks took {flushes} device flushes (want at most {})",
            TASKS / 20
        );
        db.close().await.unwrap();
        let db = AsyncEmdb::open(&path).await.unwrap();
        for i in 0..TASKS {
            let k = format!("task-{i:05}");
            assert_eq!(db.get(&k).await.unwrap(), Some(value(&k, 7)), "{k}");
        }
        db.close().await.unwrap();
    });
}

struct CountingWaker;
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {}
}

/// Polls `fut` up to `polls` times (with a real waker that does nothing),
/// then drops it. Whether it finished.
fn poll_then_drop<F: Future>(fut: F, polls: u32) -> bool {
    let waker = Waker::from(Arc::new(CountingWaker));
    let mut cx = Context::from_waker(&waker);
    let mut fut = Box::pin(fut);
    for _ in 0..polls {
        if Pin::as_mut(&mut fut).poll(&mut cx).is_ready() {
            return true;
        }
    }
    false
}

/// What a write attempt was: a single insert or a batch of keys.
enum Attempt {
    One(String, Vec<u8>),
    Batch(Vec<(String, Vec<u8>)>),
}

/// Checks that each attempt is applied whole or not at all, and returns
/// the keys it finds applied.
fn check_whole(db: &Emdb, attempts: &[Attempt], ctx: &str) -> BTreeSet<String> {
    let mut applied = BTreeSet::new();
    for a in attempts {
        match a {
            Attempt::One(k, v) => {
                if let Some(got) = db.get(k).unwrap() {
                    assert_eq!(&got, v, "{ctx}: {k} has a value it was never given");
                    applied.insert(k.clone());
                }
            }
            Attempt::Batch(pairs) => {
                let present: Vec<bool> = pairs
                    .iter()
                    .map(|(k, v)| match db.get(k).unwrap() {
                        Some(got) => {
                            assert_eq!(&got, v, "{ctx}: {k}");
                            true
                        }
                        None => false,
                    })
                    .collect();
                assert!(
                    present.iter().all(|p| *p) || present.iter().all(|p| !*p),
                    "{ctx}: a dropped batch is partly applied: {present:?}"
                );
                if present[0] {
                    applied.extend(pairs.iter().map(|(k, _)| k.clone()));
                }
            }
        }
    }
    applied
}

/// Futures of inserts, batches and flushes dropped after 0 to 5 polls,
/// with small segments (rotations) and a small tail buffer (waits for
/// room): each write is applied whole or not at all, nothing stays locked
/// (later calls complete), and after a close and reopen every write that
/// was applied is there.
#[test]
fn dropped_futures_apply_writes_whole_or_not_at_all() {
    for (round, policy) in [FlushPolicy::OnEachFlush, FlushPolicy::WriteThrough]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = Emdb::builder()
            .path(&path)
            .shards(2)
            .segment_size(16 << 10)
            .max_key_len(64)
            .max_value_len(2048)
            .tail_buffer_bytes(8 << 10)
            .flush_policy(policy)
            .build()
            .unwrap();
        let adb = AsyncEmdb::from_sync(db.clone_handle());
        let mut rng = fastrand::Rng::with_seed(round as u64 + 11);
        let mut attempts = Vec::new();
        let mut finished = Vec::new();
        for i in 0..1500u64 {
            let polls = rng.u32(0..6);
            let done = match rng.u32(0..10) {
                0..=5 => {
                    let k = format!("one-{i:05}");
                    let v = vec![b'a' + (i % 26) as u8; rng.usize(1..900)];
                    attempts.push(Attempt::One(k.clone(), v.clone()));
                    poll_then_drop(adb.insert(k, v), polls)
                }
                6..=8 => {
                    let pairs: Vec<(String, Vec<u8>)> = (0..8)
                        .map(|j| (format!("batch-{i:05}-{j}"), value("batch", i * 8 + j)))
                        .collect();
                    attempts.push(Attempt::Batch(pairs.clone()));
                    poll_then_drop(adb.insert_many(pairs), polls)
                }
                _ => {
                    poll_then_drop(adb.flush(), polls);
                    continue;
                }
            };
            finished.push((attempts.len() - 1, done));
        }
        // Nothing is left locked: every call completes.
        futures::executor::block_on(adb.flush()).expect("flush after the drops");
        futures::executor::block_on(adb.insert("after", "drops")).unwrap();
        let ctx = format!("{policy:?}, before reopen");
        let applied = check_whole(&db, &attempts, &ctx);
        for (a, done) in &finished {
            if *done {
                let k = match &attempts[*a] {
                    Attempt::One(k, _) => k,
                    Attempt::Batch(p) => &p[0].0,
                };
                assert!(applied.contains(k), "{ctx}: {k} completed but is missing");
            }
        }
        // How many apply depends on how fast the cores drain the small
        // tail buffer (a loaded machine applies fewer); some must.
        assert!(
            !applied.is_empty(),
            "{ctx}: nothing applied: the test dropped everything before it ran"
        );
        drop(adb);
        db.close().expect("close");
        let db = Emdb::open(&path).unwrap();
        let ctx = format!("{policy:?}, after reopen");
        let after = check_whole(&db, &attempts, &ctx);
        assert_eq!(
            after, applied,
            "{ctx}: applied writes changed across a close"
        );
        assert_eq!(db.get("after").unwrap(), Some(b"drops".to_vec()));
    }
}

/// A consumer that reads 10 of 1,000,000 records and stalls: the stream
/// has read nothing ahead (its snapshot still holds the rest: memory in
/// flight is the one record handed out), and reads nothing while it stalls.
#[test]
fn a_stalled_stream_reads_nothing_ahead() {
    const N: usize = 1_000_000;
    let db = AsyncEmdb::open_in_memory();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        for chunk in 0..(N / 10_000) {
            let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000)
                .map(|i| {
                    let k = (chunk * 10_000 + i) as u64;
                    (k.to_be_bytes().to_vec(), k.to_le_bytes().to_vec())
                })
                .collect();
            db.insert_many(batch).await.unwrap();
        }
        let mut stream = db.iter_stream().await.unwrap();
        for _ in 0..10 {
            let (k, v) = stream.next().await.expect("a record");
            assert_eq!(
                u64::from_be_bytes(k.try_into().unwrap())
                    .to_le_bytes()
                    .to_vec(),
                v
            );
        }
        assert_eq!(
            stream.size_hint().1,
            Some(N - 10),
            "read ahead of the consumer"
        );
        // Stall while the database takes other writes: a stream with a
        // producer would fill its buffer now; this one reads nothing until
        // it is polled. (Process memory is no measure here: the other tests
        // of this binary run beside it.)
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        db.insert("during the stall", "x").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(stream.size_hint().1, Some(N - 10), "read while stalled");
        // The snapshot is of the moment the stream was made.
        let rest = stream.count().await;
        assert_eq!(rest, N - 10);
    });
}

fn seg_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect()
}

/// A stream holds the segments of its snapshot: compaction retires them,
/// but their files stay (the stream still reads them) until the stream is
/// dropped, which releases them at once. Another thread of the process
/// staying pinned in the epoch all along (as one descheduled on a loaded
/// machine may be) changes nothing.
#[test]
fn a_dropped_stream_releases_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (pinned_tx, pinned) = std::sync::mpsc::channel::<()>();
    let pinner = std::thread::spawn(move || {
        let _guard = crossbeam_epoch::pin();
        pinned_tx.send(()).unwrap();
        let _ = released.recv();
    });
    pinned.recv().unwrap();
    futures::executor::block_on(async {
        let db = AsyncEmdb::builder()
            .path(&path)
            .shards(1)
            .segment_size(64 << 10)
            .max_key_len(64)
            .max_value_len(2048)
            .background_compaction(false)
            .build_async()
            .await
            .unwrap();
        let old = |i: u32| vec![b'o'; 200 + (i % 7) as usize];
        for i in 0..2000u32 {
            db.insert(format!("key-{i:05}"), old(i)).await.unwrap();
        }
        db.flush().await.unwrap();
        let first = seg_files(&path);
        let mut stream = db.iter_stream().await.unwrap();
        let (k, v) = stream.next().await.unwrap();
        assert!(k.starts_with(b"key-") && v[0] == b'o');
        // Overwrite everything: the old segments become dead.
        for i in 0..2000u32 {
            db.insert(format!("key-{i:05}"), format!("new-{i}"))
                .await
                .unwrap();
        }
        db.flush().await.unwrap();
        db.compact().await.unwrap();
        let retired: Vec<_> = first.difference(&seg_files(&path)).cloned().collect();
        assert!(
            retired.is_empty(),
            "files the stream still reads were removed: {retired:?}"
        );
        // The stream still sees its snapshot, whole.
        let rest: Vec<_> = stream.by_ref().take(50).collect().await;
        assert!(rest.iter().all(|(_, v)| v[0] == b'o'));
        let before_drop = seg_files(&path);
        drop(stream);
        let after_drop = seg_files(&path);
        assert!(
            after_drop.len() < before_drop.len(),
            "dropping the stream removed no segment file"
        );
        let left: Vec<_> = first.intersection(&after_drop).cloned().collect();
        // The segment being written then, and the next one (prepared ahead
        // of need, maybe already there), took new records and stay; every
        // other one the stream held is gone.
        assert!(
            left.len() <= 2 && first.len() >= 5,
            "of {} segments, these are still on disk after the stream was dropped: {left:?}",
            first.len()
        );
        assert_eq!(db.get("key-00001").await.unwrap(), Some(b"new-1".to_vec()));
        db.close().await.unwrap();
    });
    release.send(()).unwrap();
    pinner.join().unwrap();
}

/// Dropping the last async handle inside a task does not block it: the
/// engine closes on a closer thread, writes everything, and an open of the
/// same database right after waits for that close instead of failing
/// with `LockBusy`.
#[test]
fn dropping_the_last_handle_closes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for round in 0..3u64 {
            let db = AsyncEmdb::open(&path).await.expect("open");
            for i in 0..100u64 {
                // Not flushed: the close writes them.
                db.insert(format!("r{round}-{i}"), value("v", i))
                    .await
                    .unwrap();
            }
            drop(db);
            let db = AsyncEmdb::open(&path)
                .await
                .expect("reopen right after the drop");
            for r in 0..=round {
                for i in 0..100u64 {
                    assert_eq!(
                        db.get(format!("r{r}-{i}")).await.unwrap(),
                        Some(value("v", i))
                    );
                }
            }
            drop(db);
        }
    });
    // The blocking API waits the same way.
    let db = Emdb::open(&path).expect("sync open after a background close");
    assert_eq!(db.len().unwrap(), 300);
}

/// `Emdb::close` reports and releases: the lock is free once it returns;
/// with other handles open it only flushes and checkpoints.
#[test]
fn sync_close_releases_the_lock_and_shares_with_other_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Emdb::open(&path).unwrap();
    let other = db.clone_handle();
    db.insert("a", "1").unwrap();
    db.close().expect("close with another handle open");
    assert_eq!(other.get("a").unwrap(), Some(b"1".to_vec()));
    other.insert("b", "2").unwrap();
    other.close().expect("close of the last handle");
    assert!(
        Emdb::lock_holder(&path).unwrap().is_none(),
        "the lock is held after close()"
    );
    let db = Emdb::open(&path).unwrap();
    assert_eq!(db.len().unwrap(), 2);
}

/// Writers on many tasks across a 2-worker runtime, with rotations every
/// few records (each rotation waits for the prepared segment without a
/// lock) and one handle in write-through mode: every acknowledged write is
/// there after a reopen.
#[test]
fn concurrent_async_writers_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    rt.block_on(async {
        let db = AsyncEmdb::builder()
            .path(&path)
            .segment_size(8 << 10)
            .max_key_len(64)
            .max_value_len(2048)
            .flush_policy(FlushPolicy::WriteThrough)
            .build_async()
            .await
            .unwrap();
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (db, acked) = (db.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0..40u64 {
                        let k = format!("t{t:02}-{i:02}");
                        let v = vec![b'a' + (i % 26) as u8; 300 + (t as usize * 7) % 500];
                        db.insert(k.clone(), v.clone()).await.unwrap();
                        acked.lock().unwrap().insert(k, v);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let st = db.stats().await.unwrap();
        assert!(
            st.segments > 10,
            "only {} segments: no rotations",
            st.segments
        );
        db.close().await.unwrap();
    });
    let db = Emdb::open(&path).unwrap();
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 64 * 40);
    for (k, v) in acked.iter() {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{k}");
    }
}

/// Tasks insert (single records and batches) and flush with a timeout that
/// cancels many flushes part-way; some tasks are aborted at a random
/// point. Then the power goes off. Every write a completed flush
/// acknowledged is in the durable image; no cancellation loses one.
#[cfg(feature = "fault-injection")]
#[test]
fn cancelled_futures_never_lose_acknowledged_writes_across_a_power_cut() {
    use power_cut::{image_policy, reopen_image, tracked};
    use std::time::Duration;

    type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    for cycle in 0..6u64 {
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
        let adb = AsyncEmdb::from_sync(db.clone_handle());
        let acked: Acked = Arc::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = (0..32u64)
                .map(|task| {
                    let (db, acked) = (adb.clone(), acked.clone());
                    tokio::spawn(async move {
                        let mut rng = fastrand::Rng::with_seed(cycle * 1000 + task);
                        let mut pending = Vec::new();
                        for i in 0..60u64 {
                            let k = format!("c{cycle}-t{task:02}-{i:02}");
                            if rng.u32(0..4) == 0 {
                                let pairs: Vec<(String, Vec<u8>)> =
                                    (0..4).map(|j| (format!("{k}-{j}"), value(&k, j))).collect();
                                db.insert_many(pairs.clone()).await.unwrap();
                                pending.extend(pairs);
                            } else {
                                let v = vec![b'a' + (i % 26) as u8; rng.usize(10..1500)];
                                db.insert(k.clone(), v.clone()).await.unwrap();
                                pending.push((k, v));
                            }
                            if rng.u32(0..3) == 0 {
                                let limit = Duration::from_micros(rng.u64(0..2000));
                                if let Ok(r) = tokio::time::timeout(limit, db.flush()).await {
                                    r.unwrap();
                                    acked.lock().unwrap().append(&mut pending);
                                }
                            }
                        }
                    })
                })
                .collect();
            let mut rng = fastrand::Rng::with_seed(cycle);
            for t in &tasks {
                if rng.u32(0..4) == 0 {
                    tokio::time::sleep(Duration::from_micros(rng.u64(0..3000))).await;
                    t.abort();
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        plan.power_off();
        drop(adb);
        drop(db);
        let policy = image_policy(cycle % 2 == 0);
        let (db, image) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        let acked = acked.lock().unwrap();
        assert!(!acked.is_empty(), "cycle {cycle}: no flush completed");
        eprintln!("cycle {cycle}: {} acknowledged writes checked", acked.len());
        let lost: Vec<_> = acked
            .iter()
            .filter(|(k, v)| db.get(k).unwrap().as_ref() != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle} ({image}): {} of {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
    }
}

/// Writers and flushes in flight when the power goes off all end: each
/// write or flush returns (an error once the power is off), none waits for
/// ever, on the async API and the blocking one alike, whatever the moment
/// of the cut and the shard count. A flush after the cut fails, unless it
/// has nothing to make durable: when every writer stopped on a write that
/// failed before appending (a segment file that could not be created) and
/// everything appended was already synced, it succeeds, and then every
/// accepted write is in the durable image.
#[cfg(feature = "fault-injection")]
#[test]
fn writes_and_flushes_in_flight_at_a_power_cut_all_return() {
    use power_cut::{reopen_image, tracked};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    const PATIENCE: Duration = Duration::from_secs(30);
    let mut flushes_refused = 0;
    for cycle in 0..12u64 {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(1 + (cycle % 3) as usize)
                .segment_size(64 << 10)
                .max_key_len(64)
                .max_value_len(2048),
        );
        let adb = AsyncEmdb::from_sync(db.clone_handle());
        let flushed = Arc::new(AtomicU64::new(0));
        // Every key whose insert returned `Ok`.
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let off = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        // Blocking writers on threads of their own.
        let threads: Vec<_> = (0..4u64)
            .map(|w| {
                let (db, flushed, accepted) =
                    (db.clone_handle(), flushed.clone(), accepted.clone());
                std::thread::spawn(move || {
                    for i in 0u64.. {
                        let k = format!("s{w}-{i}");
                        if db.insert(k.as_str(), vec![7u8; 100]).is_err() {
                            return;
                        }
                        accepted.lock().unwrap().push(k);
                        if db.flush().is_err() {
                            return;
                        }
                        flushed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let ended = rt.block_on(async {
            let tasks: Vec<_> = (0..24u64)
                .map(|task| {
                    let (db, flushed, accepted) = (adb.clone(), flushed.clone(), accepted.clone());
                    tokio::spawn(async move {
                        for i in 0u64.. {
                            let k = format!("a{task}-{i}");
                            if db.insert(k.clone(), vec![9u8; 100]).await.is_err() {
                                return;
                            }
                            accepted.lock().unwrap().push(k);
                            if db.flush().await.is_err() {
                                return;
                            }
                            flushed.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let mut rng = fastrand::Rng::with_seed(cycle);
            tokio::time::sleep(Duration::from_micros(rng.u64(500..20_000))).await;
            plan.power_off();
            off.store(true, Ordering::Relaxed);
            let mut ended = 0;
            for t in tasks {
                if tokio::time::timeout(PATIENCE, t).await.is_ok() {
                    ended += 1;
                }
            }
            ended
        });
        assert_eq!(
            ended,
            24,
            "cycle {cycle}: {} of 24 async writers still waited {PATIENCE:?} after the power cut",
            24 - ended
        );
        let deadline = std::time::Instant::now() + PATIENCE;
        for th in threads {
            while !th.is_finished() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "cycle {cycle}: a blocking writer still waits {PATIENCE:?} after the power cut"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            th.join().unwrap();
        }
        assert!(off.load(Ordering::Relaxed));
        let refused = db.flush().is_err();
        eprintln!(
            "cycle {cycle}: {} flushes before the cut, every writer returned, \
             the flush after it {}",
            flushed.load(Ordering::Relaxed),
            if refused { "failed" } else { "succeeded" }
        );
        if refused {
            flushes_refused += 1;
            continue;
        }
        // It succeeded: it claims every accepted write durable.
        drop(adb);
        drop(db);
        let (db, image) = reopen_image(
            &plan,
            &live,
            &t.path().join("image"),
            emdb::ImagePolicy::DurableOnly,
            cycle,
        );
        let accepted = accepted.lock().unwrap();
        let lost: Vec<_> = accepted
            .iter()
            .filter(|k| db.get(k.as_str()).unwrap().is_none())
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle} ({image}): a flush after the cut succeeded, yet {} of {} accepted \
             writes are not in the durable image, e.g. {:?}",
            lost.len(),
            accepted.len(),
            &lost[..lost.len().min(5)]
        );
    }
    // The usual case: some write was in flight, and it poisoned the log.
    assert!(
        flushes_refused > 0,
        "no flush after a power cut failed in 12 cycles"
    );
}
