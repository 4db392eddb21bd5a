//! Several threads on cloned handles: writers of distinct keys, writers that
//! overwrite shared keys, readers, iterators and flush callers at the same
//! time. Every value written encodes its key, a version and a checksum, so a
//! reader can tell a torn value or another key's value from a real one.
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --test concurrency`.

use emdb::{Emdb, FlushPolicy};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `[key len u16][key][version u64][payload len u32][payload][fnv64 of all before]`.
fn encode(key: &[u8], version: u64, payload_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + payload_len + 22);
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&(payload_len as u32).to_le_bytes());
    let seed = fnv(key) ^ version;
    v.extend((0..payload_len).map(|i| {
        (seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> 56) as u8
    }));
    let sum = fnv(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// The version encoded in `value`, if `value` is a whole value written for `key`.
fn decode(key: &[u8], value: &[u8]) -> Result<u64, String> {
    let err = |m: &str| {
        Err(format!(
            "value for {:?} ({} bytes): {m}",
            String::from_utf8_lossy(key),
            value.len()
        ))
    };
    if value.len() < 22 {
        return err("too short");
    }
    let (body, sum) = value.split_at(value.len() - 8);
    if fnv(body).to_le_bytes() != sum {
        return err("checksum mismatch (torn or foreign bytes)");
    }
    let klen = u16::from_le_bytes([body[0], body[1]]) as usize;
    if body.len() < 2 + klen + 12 || &body[2..2 + klen] != key {
        return err("encodes another key");
    }
    let version = u64::from_le_bytes(body[2 + klen..10 + klen].try_into().unwrap());
    let plen = u32::from_le_bytes(body[10 + klen..14 + klen].try_into().unwrap()) as usize;
    if body.len() != 14 + klen + plen {
        return err("length field disagrees");
    }
    if encode(key, version, plen) != value {
        return err("payload differs from the one written");
    }
    Ok(version)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn distinct_key(t: usize, i: usize) -> Vec<u8> {
    format!("t{t}-k{i:05}").into_bytes()
}

fn distinct_value(t: usize, i: usize) -> Vec<u8> {
    encode(
        &distinct_key(t, i),
        (t as u64) << 32 | i as u64,
        16 + (i * 37 + t * 11) % 900,
    )
}

#[test]
fn concurrent_writers_readers_and_flushers_on_distinct_keys() {
    const THREADS: usize = 6;
    const PER: usize = 1500;
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::open(&dir).expect("open");
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(THREADS + 2));
    let mut handles = Vec::new();
    for tid in 0..THREADS {
        let db = db.clone_handle();
        let progress = progress.clone();
        let start = start.clone();
        handles.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(tid as u64);
            start.wait();
            for i in 0..PER {
                db.insert(distinct_key(tid, i), distinct_value(tid, i))
                    .expect("insert");
                progress[tid].store(i as u64 + 1, Ordering::Release);
                // Read back one of our own keys: it must be exactly what we wrote.
                let j = rng.usize(0..=i);
                let got = db.get(distinct_key(tid, j)).expect("get own");
                assert_eq!(
                    got,
                    Some(distinct_value(tid, j)),
                    "thread {tid} lost its own key {j}"
                );
                // Read another thread's key: absent (not yet written) or exact.
                let other = rng.usize(0..THREADS);
                let n = progress[other].load(Ordering::Acquire) as usize;
                let k = rng.usize(0..PER);
                match db
                    .get_zerocopy(distinct_key(other, k))
                    .expect("get_zerocopy other")
                {
                    Some(v) => assert_eq!(
                        v.as_slice(),
                        &distinct_value(other, k)[..],
                        "thread {tid} read a wrong value"
                    ),
                    None => assert!(
                        k >= n,
                        "key t{other}-k{k} vanished after its insert returned (progress {n})"
                    ),
                }
                if i % 150 == 149 {
                    db.flush().expect("flush");
                }
            }
        }));
    }
    // A flusher and an iterating reader alongside the writers.
    {
        let db = db.clone_handle();
        let done = done.clone();
        let start = start.clone();
        handles.push(thread::spawn(move || {
            start.wait();
            while !done.load(Ordering::Acquire) {
                db.flush().expect("flusher flush");
            }
        }));
    }
    let reader = {
        let db = db.clone_handle();
        let done = done.clone();
        thread::spawn(move || {
            let mut scans = 0;
            while !done.load(Ordering::Acquire) || scans == 0 {
                let mut seen = 0usize;
                for (k, v) in db.iter().expect("iter") {
                    if let Err(e) = decode(&k, &v) {
                        panic!("iter yielded a bad pair: {e}");
                    }
                    seen += 1;
                }
                assert!(seen <= THREADS * PER);
                scans += 1;
            }
            scans
        })
    };
    start.wait();
    let writers: Vec<_> = handles.drain(..THREADS).collect();
    for h in writers {
        h.join().expect("writer thread panicked");
    }
    done.store(true, Ordering::Release);
    for h in handles {
        h.join().expect("flusher thread panicked");
    }
    let scans = reader.join().expect("reader thread panicked");
    assert!(scans > 0);

    assert_eq!(db.len().unwrap(), THREADS * PER);
    for tid in 0..THREADS {
        for i in 0..PER {
            assert_eq!(
                db.get(distinct_key(tid, i)).unwrap(),
                Some(distinct_value(tid, i)),
                "t{tid}-k{i}"
            );
        }
    }
    assert_eq!(db.iter().unwrap().count(), THREADS * PER);
    db.flush().unwrap();
    drop(db);

    let db = Emdb::open(&dir).expect("reopen");
    assert_eq!(db.len().unwrap(), THREADS * PER);
    for tid in 0..THREADS {
        for i in 0..PER {
            assert_eq!(
                db.get(distinct_key(tid, i)).unwrap(),
                Some(distinct_value(tid, i)),
                "after reopen t{tid}-k{i}"
            );
        }
    }
}

#[test]
fn concurrent_overwrites_never_expose_torn_or_foreign_values() {
    const WRITERS: u64 = 4;
    const WRITES: u64 = 2500;
    const KEYS: u64 = 64;
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::builder()
        .path(&dir)
        .segment_size(256 * 1024)
        .max_key_len(64)
        .max_value_len(8 * 1024)
        .build()
        .expect("open");
    let done = Arc::new(AtomicBool::new(false));
    let key = |k: u64| format!("shared-{k:02}").into_bytes();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let db = db.clone_handle();
        writers.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(100 + w);
            // Last version this writer wrote for each key.
            let mut last: HashMap<u64, u64> = HashMap::new();
            for seq in 0..WRITES {
                let k = rng.u64(0..KEYS);
                let version = w << 32 | seq;
                let len = if rng.u8(0..10) == 0 {
                    rng.usize(2000..6000)
                } else {
                    rng.usize(0..300)
                };
                db.insert(key(k), encode(&key(k), version, len))
                    .expect("insert");
                last.insert(k, version);
                if seq % 500 == 499 {
                    db.flush().expect("flush");
                }
            }
            last
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let db = db.clone_handle();
        let done = done.clone();
        readers.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(200 + r);
            // Per (key, writer): the highest sequence seen. A later read may not
            // show an older write of the same writer.
            let mut high: HashMap<(u64, u64), u64> = HashMap::new();
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let k = rng.u64(0..KEYS);
                let value = match rng.u8(0..4) {
                    0 => db.get_zerocopy(key(k)).expect("get_zerocopy").map(|v| v.to_vec()),
                    1 => {
                        for (kk, v) in db.iter().expect("iter") {
                            decode(&kk, &v).unwrap_or_else(|e| panic!("iter: {e}"));
                        }
                        None
                    }
                    _ => db.get(key(k)).expect("get"),
                };
                if let Some(v) = value {
                    let version = decode(&key(k), &v).unwrap_or_else(|e| panic!("reader {r}: {e}"));
                    let (w, seq) = (version >> 32, version & 0xffff_ffff);
                    assert!(w < WRITERS && seq < WRITES, "impossible version {version:#x}");
                    let h = high.entry((k, w)).or_insert(seq);
                    assert!(seq >= *h, "key {k}: read writer {w} seq {seq} after having read seq {h}: went back in time");
                    *h = seq;
                }
                reads += 1;
            }
            reads
        }));
    }
    let lasts: Vec<HashMap<u64, u64>> = writers
        .into_iter()
        .map(|h| h.join().expect("writer panicked"))
        .collect();
    done.store(true, Ordering::Release);
    for h in readers {
        assert!(h.join().expect("reader panicked") > 0);
    }

    let mut final_state = BTreeMap::new();
    for k in 0..KEYS {
        let candidates: Vec<u64> = lasts.iter().filter_map(|m| m.get(&k).copied()).collect();
        let got = db.get(key(k)).unwrap();
        if candidates.is_empty() {
            assert_eq!(got, None, "key {k} was never written");
            continue;
        }
        let v = got.unwrap_or_else(|| panic!("key {k} missing"));
        let version = decode(&key(k), &v).unwrap();
        assert!(
            candidates.contains(&version),
            "key {k}: final version {version:#x} is not the last write of any writer {candidates:x?}"
        );
        final_state.insert(key(k), v);
    }
    let len_before = db.len().unwrap();
    let iter_before = db.iter().unwrap().count();
    drop(db);
    let db = Emdb::open(&dir).expect("reopen");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = db.iter().unwrap().collect();
    let after: BTreeMap<Vec<u8>, Vec<u8>> = pairs.iter().cloned().collect();
    let get_wrong = final_state
        .iter()
        .filter(|(k, v)| db.get(k).unwrap().as_ref() != Some(*v))
        .count();
    assert!(
        len_before == final_state.len()
            && iter_before == final_state.len()
            && after == final_state
            && pairs.len() == final_state.len()
            && get_wrong == 0,
        "before close: len() {len_before}, iter() {iter_before} pairs for {} keys; \
         after reopen: iter yielded {} pairs \
         ({} distinct keys, {} with another value), len() {}, get() wrong for {get_wrong}",
        final_state.len(),
        pairs.len(),
        after.len(),
        final_state
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .count(),
        db.len().unwrap()
    );
}

#[test]
fn concurrent_insert_many_and_removes_keep_len_consistent() {
    const THREADS: usize = 4;
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::open(&dir).expect("open");
    let mut handles = Vec::new();
    for tid in 0..THREADS {
        let db = db.clone_handle();
        handles.push(thread::spawn(move || {
            let mut kept = Vec::new();
            for round in 0..60 {
                let batch: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
                    .map(|j| {
                        let k = format!("b{tid}-{round}-{j}").into_bytes();
                        let v = encode(&k, round as u64, j * 13);
                        (k, v)
                    })
                    .collect();
                db.insert_many(batch.clone()).expect("insert_many");
                // Remove every other key of the batch just written.
                for (j, (k, v)) in batch.into_iter().enumerate() {
                    if j % 2 == 0 {
                        assert_eq!(
                            db.remove(&k).expect("remove"),
                            Some(v),
                            "remove returned the wrong prior value"
                        );
                    } else {
                        kept.push((k, v));
                    }
                }
            }
            kept
        }));
    }
    let mut expected = BTreeMap::new();
    for h in handles {
        expected.extend(h.join().expect("thread panicked"));
    }
    assert_eq!(db.len().unwrap(), expected.len());
    let got: BTreeMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().collect();
    assert!(
        got == expected,
        "contents differ after concurrent batches and removes"
    );
    drop(db);
    let db = Emdb::open(&dir).expect("reopen");
    let got: BTreeMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().collect();
    assert!(got == expected, "contents differ after reopen");
}

#[test]
fn concurrent_writers_under_group_and_write_through_policies() {
    for policy in [FlushPolicy::Group, FlushPolicy::WriteThrough] {
        let t = tmp();
        let dir = t.path().join("db");
        let db = Emdb::builder()
            .path(&dir)
            .flush_policy(policy)
            .build()
            .expect("open");
        let handles: Vec<_> = (0..4)
            .map(|tid| {
                let db = db.clone_handle();
                thread::spawn(move || {
                    for i in 0..150 {
                        db.insert(distinct_key(tid, i), distinct_value(tid, i))
                            .expect("insert");
                        if i % 10 == 0 {
                            db.flush().expect("flush");
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread panicked");
        }
        let flushes = db.stats().unwrap().device_flushes;
        assert!(
            flushes > 0,
            "{policy:?}: flushes were requested but device_flushes is 0"
        );
        drop(db);
        let db = Emdb::open(&dir).expect("reopen");
        assert_eq!(db.len().unwrap(), 600, "{policy:?}");
        for tid in 0..4 {
            for i in 0..150 {
                assert_eq!(
                    db.get(distinct_key(tid, i)).unwrap(),
                    Some(distinct_value(tid, i))
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Flushed writes from several threads survive kill -9 of the process.

const CHILD_ROLE: &str = "EMDB_CONCURRENCY_CHILD";
const CHILD_DIR: &str = "EMDB_CONCURRENCY_DIR";

fn child_dir() -> Option<PathBuf> {
    std::env::var(CHILD_ROLE).ok()?;
    Some(PathBuf::from(std::env::var(CHILD_DIR).expect("child dir")))
}

fn child_workload(dir: &Path) {
    let db = Emdb::open(dir).expect("child open");
    println!("EMDB_CHILD opened");
    let handles: Vec<_> = (0..4)
        .map(|tid| {
            let db = db.clone_handle();
            thread::spawn(move || {
                for i in 0..1_000_000 {
                    db.insert(distinct_key(tid, i), distinct_value(tid, i))
                        .expect("insert");
                    if i % 25 == 24 {
                        db.flush().expect("flush");
                        // Printed only after flush returned Ok: keys 0..=i of this thread are durable.
                        println!("EMDB_CHILD durable {tid} {i}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

#[test]
fn flushed_writes_from_concurrent_threads_survive_kill_9() {
    const NAME: &str = "flushed_writes_from_concurrent_threads_survive_kill_9";
    if let Some(dir) = child_dir() {
        child_workload(&dir);
        return;
    }
    let t = tmp();
    let dir = t.path().join("db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "workload")
        .env(CHILD_DIR, &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut durable: HashMap<usize, usize> = HashMap::new();
    let mut reports = 0;
    // Hang guard only: the child reports long before this.
    while reports < 60 {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some(rest) = after_marker(&line, "EMDB_CHILD durable ") {
                    let mut it = rest.split(' ').map(|s| s.parse::<usize>().unwrap());
                    let (tid, i) = (it.next().unwrap(), it.next().unwrap());
                    let e = durable.entry(tid).or_insert(0);
                    *e = (*e).max(i + 1);
                    reports += 1;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "child stopped reporting: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    child.kill().expect("kill -9 child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "child should have been killed");
    // Lines the child printed before it died also count.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        if let Some(rest) = after_marker(&line, "EMDB_CHILD durable ") {
            let mut it = rest.split(' ').map(|s| s.parse::<usize>().unwrap());
            let (tid, i) = (it.next().unwrap(), it.next().unwrap());
            let e = durable.entry(tid).or_insert(0);
            *e = (*e).max(i + 1);
        }
    }

    let db = Emdb::open(&dir).expect("open after kill -9");
    for (tid, n) in &durable {
        for i in 0..*n {
            assert_eq!(
                db.get(distinct_key(*tid, i)).unwrap(),
                Some(distinct_value(*tid, i)),
                "t{tid}-k{i} was flushed before the kill but is not there"
            );
        }
    }
    // Whatever else survived is whole and belongs to its key.
    let mut total = 0;
    for (k, v) in db.iter().unwrap() {
        decode(&k, &v).unwrap_or_else(|e| panic!("after kill: {e}"));
        total += 1;
    }
    let flushed: usize = durable.values().sum();
    assert!(
        total >= flushed,
        "{total} records after reopen, {flushed} were flushed"
    );
    assert_eq!(db.len().unwrap(), total);
}

#[test]
fn lock_is_held_until_the_last_handle_on_any_thread_is_dropped() {
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::open(&dir).expect("open");
    let mut clones: Vec<Emdb> = (0..4).map(|_| db.clone_handle()).collect();
    drop(db);
    let last = clones.pop().expect("a clone");
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let keeper = thread::spawn(move || {
        last.insert("c-last", "v").expect("insert");
        go_rx.recv().expect("go signal");
        drop(last);
    });
    let others: Vec<_> = clones
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            thread::spawn(move || {
                h.insert(format!("c{i}"), "v").expect("insert");
                drop(h);
            })
        })
        .collect();
    for h in others {
        h.join().unwrap();
    }
    // Three handles are gone, one lives on the keeper thread.
    let r = Emdb::open(&dir);
    assert!(
        matches!(r, Err(emdb::Error::LockBusy { .. })),
        "open while a handle lives: {:?}",
        r.as_ref().err()
    );
    drop(r);
    go_tx.send(()).unwrap();
    keeper.join().unwrap();
    let db = Emdb::open(&dir).expect("open after the last handle dropped");
    assert_eq!(db.len().unwrap(), 4);
}

/// The text after `marker` in a line of child output. libtest may print
/// `test NAME ... ` in front of the child's first line, so the marker is
/// searched anywhere in the line.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// Readers never miss a key that exists while writers rotate segments
/// constantly: 4 KiB segments, every write an overwrite of a key that is
/// never removed. A reader that loaded the segment table before reading
/// the key's slot could meet a slot pointing into a segment published after
/// its table (new segment, then the key overwritten into it) and report the
/// key missing.
#[test]
fn readers_find_every_key_while_segments_rotate() {
    let dir = tmp();
    let db = Emdb::builder()
        .path(dir.path().join("db"))
        .shards(1)
        .segment_size(4096)
        .max_key_len(16)
        .max_value_len(128)
        .build()
        .unwrap();
    const KEYS: usize = 16;
    let key = |i: usize| format!("key-{i:02}").into_bytes();
    for i in 0..KEYS {
        db.insert(key(i), encode(&key(i), 0, 40)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    // Segment files ever created, in bytes: those there plus those that
    // background compaction retired (it runs here too, retiring segments
    // under the readers).
    let created = || {
        let st = db.stats().unwrap();
        st.file_size_bytes + st.bytes_reclaimed
    };
    let rotations_before = created();
    thread::scope(|s| {
        for w in 0..2 {
            let (db, stop) = (&db, &stop);
            s.spawn(move || {
                let mut version = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in (w..KEYS).step_by(2) {
                        db.insert(key(i), encode(&key(i), version, 40)).unwrap();
                    }
                    version += 1;
                }
            });
        }
        for r in 0..2 {
            let (db, stop, reads) = (&db, &stop, &reads);
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (n as usize * 7 + r) % KEYS;
                    match db.get(key(i)).unwrap() {
                        Some(v) => {
                            decode(&key(i), &v).unwrap();
                        }
                        None => panic!(
                            "key-{i:02} reported missing after {n} reads; it is never removed"
                        ),
                    }
                    let zc = db.get_zerocopy(key(i)).unwrap();
                    assert!(zc.is_some(), "get_zerocopy missed key-{i:02}");
                    n += 1;
                }
                reads.fetch_add(n, Ordering::Relaxed);
            });
        }
        // Until 800 segments were added (each holds a descriptor and two
        // mappings) or 10 s passed.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_secs(10) && created() - rotations_before < 800 * 4096 {
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let grown = created() - rotations_before;
    assert!(
        grown >= 100 * 4096,
        "the test must rotate constantly; only {} segments were added",
        grown / 4096
    );
    eprintln!(
        "{} reads, {} segments added, no key missed",
        reads.load(Ordering::Relaxed),
        grown / 4096
    );
}

/// Checkpoints called from several threads at once, while writers go on,
/// all succeed (they write hint files of the same names), and the database
/// reopens with everything.
#[test]
fn concurrent_checkpoints_all_succeed() {
    let dir = tmp();
    let path = dir.path().join("db");
    let db = Emdb::builder()
        .path(&path)
        .shards(2)
        .segment_size(64 * 1024)
        .max_key_len(64)
        .max_value_len(1024)
        .build()
        .unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..4000u32 {
                db.insert(format!("k{i:05}"), encode(&i.to_le_bytes(), 0, 100))
                    .unwrap();
            }
        });
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..40 {
                    db.checkpoint().expect("a concurrent checkpoint failed");
                }
            });
        }
    });
    db.checkpoint().unwrap();
    drop(db);
    let db = Emdb::open(&path).unwrap();
    assert_eq!(db.len().unwrap(), 4000);
    for i in (0..4000u32).step_by(97) {
        let v = db.get(format!("k{i:05}")).unwrap().unwrap();
        decode(&i.to_le_bytes(), &v).unwrap();
    }
}

/// A thousand threads, each inserting a record and flushing once, all
/// released together over two shards: every flush succeeds, every record
/// is there after a reopen, and the flushes share device flushes (one
/// commit generation serves every flusher that joined it, whatever shards
/// its records went to). The bound is loose on purpose: on a loaded machine
/// the flushers arrive more spread out, and a generation per flusher would
/// still be 1,000.
#[test]
fn a_thousand_concurrent_flushers_share_device_flushes() {
    const THREADS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = Emdb::builder().path(&path).shards(2).build().unwrap();
    // Warm up: the first generation may zero-fill ahead of each tail.
    db.insert(b"warm-up", b"x").unwrap();
    db.flush().unwrap();
    let before = db.stats().unwrap().device_flushes;
    let go = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (db, go) = (db.clone_handle(), go.clone());
            thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    go.wait();
                    let k = format!("flusher-{i:04}");
                    db.insert(k.as_bytes(), encode(k.as_bytes(), 1, 64))
                        .unwrap();
                    db.flush().unwrap();
                })
                .unwrap()
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let flushes = db.stats().unwrap().device_flushes - before;
    eprintln!("{THREADS} concurrent flushers: {flushes} device flushes");
    assert!(
        flushes >= 1,
        "1,000 flushes of new records needed a device flush"
    );
    assert!(
        flushes <= (THREADS / 4) as u64,
        "1,000 concurrent flushers took {flushes} device flushes (want at most {})",
        THREADS / 4
    );
    drop(db);
    let db = Emdb::open(&path).unwrap();
    for i in 0..THREADS {
        let k = format!("flusher-{i:04}");
        assert_eq!(
            db.get(k.as_bytes()).unwrap(),
            Some(encode(k.as_bytes(), 1, 64)),
            "{k} after reopen"
        );
    }
}
