//! Writer latency while compaction runs, against the same workload with
//! compaction off, in the same process.
//!
//! ```sh
//! cargo bench --bench compaction                 # default sizes
//! EMDB_BENCH_KEYS=100000 EMDB_BENCH_SECS=2 cargo bench --bench compaction
//! EMDB_IO_BACKEND=portable cargo bench --bench compaction
//! ```
//!
//! Each repetition loads a fresh database (2 shards, 4 MiB segments, 24-byte
//! keys, 150-byte values), overwrites it once so half of every segment is
//! dead, then for `EMDB_BENCH_SECS` seconds runs one timed writer (either
//! `insert` or `insert` + `flush()`, over random keys) beside a churn thread
//! that keeps overwriting (about 20,000 records a second). With compaction on, the background compactor runs
//! and a thread calls `compact()` back to back; with it off, neither. The
//! table gives the median over repetitions of each percentile, and the
//! ratio on/off of the medians.
//!
//! `EMDB_BENCH_THRESHOLDS=0.3,0.4,0.5` runs only a sweep of the compaction
//! threshold instead: per threshold, `EMDB_BENCH_SECS` seconds of random
//! overwrites (200,000 a second) with background compaction, reporting the
//! overwrite rate, the bytes compaction moved per byte written, and file
//! bytes / live bytes.
//!
//! First, a space run (`EMDB_BENCH_SPACE_KEYS`, default 1,000,000, default
//! segments): the records bulk-loaded, every other one removed, then
//! `compact()` timed, and the reopen after it compared with the reopen of
//! the same state after a plain checkpoint.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use emdb::Emdb;

const KEY_LEN: usize = 24;
const VAL_LEN: usize = 150;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn key(i: u64) -> Vec<u8> {
    let mut k = format!("{i:016x}").into_bytes();
    k.resize(KEY_LEN, b'k');
    k
}

fn value(i: u64, round: u64) -> Vec<u8> {
    vec![(i.wrapping_mul(31).wrapping_add(round) % 251) as u8; VAL_LEN]
}

fn open(dir: &Path, compaction: bool) -> Emdb {
    Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(4 << 20)
        .max_value_len(4096)
        .background_compaction(compaction)
        .build()
        .expect("open")
}

/// Percentiles (µs) of one run: p50, p99, p99.9, max.
#[derive(Clone, Copy, Debug, Default)]
struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    ops: usize,
    compactions: u64,
}

fn percentiles(mut v: Vec<Duration>, compactions: u64) -> Lat {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    Lat {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
        ops: v.len(),
        compactions,
    }
}

fn run(keys: u64, secs: u64, compaction: bool, durable: bool, rep: u64) -> Lat {
    let t = tempfile::tempdir().expect("tempdir");
    let db = open(&t.path().join("db"), compaction);
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        db.insert_many(chunk.iter().map(|&i| (key(i), value(i, 0))))
            .expect("load");
    }
    // Half of every key overwritten: every sealed segment about half dead.
    for i in (0..keys).step_by(2) {
        db.insert(key(i), value(i, 1)).expect("overwrite");
    }
    db.flush().expect("flush");
    let before = db.stats().expect("stats").compactions;
    let stop = AtomicBool::new(false);
    let churned = AtomicU64::new(0);
    let mut lat = Vec::with_capacity(1 << 20);
    std::thread::scope(|s| {
        let (db, stop, churned) = (&db, &stop, &churned);
        s.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(rep ^ 0xc4);
            // About 20,000 overwrites a second: steady dead bytes.
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let i = rng.u64(0..keys);
                db.insert(key(i), value(i, 2)).expect("churn");
                let n = churned.fetch_add(1, Ordering::Relaxed) + 1;
                let due = start + Duration::from_micros(n * 50);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        if compaction {
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    db.compact().expect("compact");
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        let mut rng = fastrand::Rng::with_seed(rep);
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let i = rng.u64(0..keys);
            let (k, v) = (key(i), value(i, 3));
            let t0 = Instant::now();
            db.insert(k, v).expect("insert");
            if durable {
                db.flush().expect("flush");
            }
            lat.push(t0.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
    });
    let after = db.stats().expect("stats").compactions;
    percentiles(lat, after - before)
}

/// One repetition of the space test: `keys` records bulk-loaded, every
/// other one removed, then (a) a checkpoint and a reopen, and on a second
/// copy of the same state (b) `compact()` and a reopen. Returns
/// (compact ms, reopen after checkpoint ms, reopen after compaction ms,
/// MiB on disk after compaction, MiB before).
fn compact_and_reopen(keys: u64) -> (f64, f64, f64, f64, f64) {
    let t = tempfile::tempdir().expect("tempdir");
    let mut out = [0.0f64; 5];
    for (case, compact) in [(0usize, false), (1, true)] {
        let dir = t.path().join(format!("db{case}"));
        let db = Emdb::builder()
            .path(&dir)
            .background_compaction(false)
            .build()
            .expect("open");
        for chunk in (0..keys).collect::<Vec<_>>().chunks(50_000) {
            db.insert_many(chunk.iter().map(|&i| (key(i), value(i, 0))))
                .expect("load");
        }
        for i in (0..keys).step_by(2) {
            db.remove(key(i)).expect("remove");
        }
        db.flush().expect("flush");
        if compact {
            out[4] = disk_mib(&dir);
            let t0 = Instant::now();
            db.compact().expect("compact");
            out[0] = t0.elapsed().as_secs_f64() * 1e3;
            out[3] = disk_mib(&dir);
        } else {
            db.checkpoint().expect("checkpoint");
        }
        drop(db);
        let t0 = Instant::now();
        let db = Emdb::builder()
            .path(&dir)
            .background_compaction(false)
            .build()
            .expect("reopen");
        out[1 + case] = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(db.len().expect("len") as u64, keys / 2);
    }
    (out[0], out[1], out[2], out[3], out[4])
}

/// One threshold of the sweep: `keys` records loaded, then `secs` seconds
/// of random overwrites (200,000 a second) with background compaction at
/// `threshold`. Returns (overwrites/s, bytes moved per byte written, mean
/// and max of file bytes / live bytes, sampled every 50 ms).
fn sweep_one(keys: u64, secs: u64, threshold: f64) -> (f64, f64, f64, f64) {
    let t = tempfile::tempdir().expect("tempdir");
    let db = Emdb::builder()
        .path(t.path().join("db"))
        .shards(2)
        .segment_size(4 << 20)
        .max_value_len(4096)
        .compaction_threshold(threshold)
        .build()
        .expect("open");
    for chunk in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        db.insert_many(chunk.iter().map(|&i| (key(i), value(i, 0))))
            .expect("load");
    }
    db.flush().expect("flush");
    let stop = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let mut amp = Vec::new();
    std::thread::scope(|s| {
        let (db, stop, written) = (&db, &stop, &written);
        s.spawn(move || {
            let mut rng = fastrand::Rng::with_seed(threshold.to_bits());
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let i = rng.u64(0..keys);
                db.insert(key(i), value(i, 1)).expect("overwrite");
                let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                // A steady 200,000 overwrites a second (40 MiB/s of log).
                if n % 100 == 0 {
                    let due = start + Duration::from_micros(n * 5);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            let st = db.stats().expect("stats");
            amp.push(st.file_size_bytes as f64 / st.live_bytes.max(1) as f64);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let n = written.load(Ordering::Relaxed);
    let frame = (36 + KEY_LEN + VAL_LEN) as f64;
    let moved_bytes = db.stats().expect("stats").bytes_moved as f64;
    let mean = amp.iter().sum::<f64>() / amp.len().max(1) as f64;
    let max = amp.iter().cloned().fold(0.0, f64::max);
    (
        n as f64 / secs as f64,
        (moved_bytes / (n as f64 * frame)).max(0.0),
        mean,
        max,
    )
}

fn disk_mib(dir: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    let bytes: u64 = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").blocks() * 512)
        .sum();
    bytes as f64 / (1 << 20) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    let keys = env("EMDB_BENCH_KEYS", 200_000);
    let secs = env("EMDB_BENCH_SECS", 3);
    let reps = env("EMDB_BENCH_REPS", 3);
    println!(
        "compaction bench: {keys} keys, {secs} s per run, {reps} repetitions, backend env {:?}",
        std::env::var("EMDB_IO_BACKEND").ok()
    );
    if let Ok(list) = std::env::var("EMDB_BENCH_THRESHOLDS") {
        println!("| threshold | overwrites/s | bytes moved per byte written | file/live mean | file/live max |");
        println!("|---:|---:|---:|---:|---:|");
        for t in list.split(',').filter_map(|x| x.trim().parse::<f64>().ok()) {
            let runs: Vec<_> = (0..reps).map(|_| sweep_one(keys, secs, t)).collect();
            let m = |f: fn(&(f64, f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
            println!(
                "| {t} | {:.0} | {:.2} | {:.2} | {:.2} |",
                m(|r| r.0),
                m(|r| r.1),
                m(|r| r.2),
                m(|r| r.3)
            );
        }
        return;
    }
    let space_keys = env("EMDB_BENCH_SPACE_KEYS", 1_000_000);
    let runs: Vec<_> = (0..reps).map(|_| compact_and_reopen(space_keys)).collect();
    let m = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| median(runs.iter().map(f).collect());
    println!(
        "space: {space_keys} records, every other removed: on disk {:.1} MiB before compact(), \
         {:.1} MiB after; compact() {:.0} ms; reopen after checkpoint {:.1} ms, after compaction \
         {:.1} ms ({:.2}x; target <= 1x); medians of {reps}",
        m(|r| r.4),
        m(|r| r.3),
        m(|r| r.0),
        m(|r| r.1),
        m(|r| r.2),
        m(|r| r.2) / m(|r| r.1)
    );
    println!(
        "| writer | compaction | p50 µs | p99 µs | p99.9 µs | max µs | ops | compaction runs |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for durable in [false, true] {
        let mut off = Vec::new();
        let mut on = Vec::new();
        // Interleaved, so drift on a shared machine hits both alike.
        for rep in 0..reps {
            off.push(run(keys, secs, false, durable, rep));
            on.push(run(keys, secs, true, durable, rep));
        }
        let writer = if durable { "insert + flush" } else { "insert" };
        let mut p99 = [0.0; 2];
        for (i, (name, runs)) in [("off", &off), ("on", &on)].into_iter().enumerate() {
            let m = |f: fn(&Lat) -> f64| median(runs.iter().map(f).collect());
            p99[i] = m(|l| l.p99);
            println!(
                "| {writer} | {name} | {:.2} | {:.2} | {:.1} | {:.0} | {:.0} | {:.0} |",
                m(|l| l.p50),
                m(|l| l.p99),
                m(|l| l.p999),
                m(|l| l.max),
                m(|l| l.ops as f64),
                m(|l| l.compactions as f64)
            );
        }
        println!(
            "{writer}: p99 with compaction / without = {:.2}x (target <= 2x)",
            p99[1] / p99[0]
        );
    }
}
