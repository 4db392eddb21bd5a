//! The durable-writer probe: T threads, each looping `insert` + `flush()` for
//! a fixed time, per shard count and disk backend. It separates what
//! sharding and the backend cost a durable writer.
//!
//! ```sh
//! cargo bench --bench writers
//! EMDB_PROBE_T=1,16,64 EMDB_PROBE_SHARDS=1,2 EMDB_PROBE_BACKENDS=uring,portable \
//!   EMDB_PROBE_STRATEGIES=auto,syscalls,ring EMDB_PROBE_SECS=3 EMDB_PROBE_REPS=3 \
//!   cargo bench --bench writers
//! ```
//!
//! `EMDB_PROBE_BACKENDS=memory` runs the same loop on an in-memory database
//! (its shard count is the CPU count): no device, so its latency and CPU are
//! the commit protocol's own cost (caller -> core -> caller).
//!
//! `EMDB_PROBE_STRATEGIES` picks `SyncStrategy` values for the io_uring rows
//! (`auto`, the default; `syscalls`; `ring`; `dsync`). Portable rows take
//! the first one listed (only `dsync` changes anything there).
//!
//! Per row: records/s, records per device flush (field 16 of
//! `/sys/block/<disk>/stat`), CPU time per durable record (`getrusage`
//! of the whole process: every thread, kernel I/O workers of this process
//! included), and the p50 / p99 latency of one `insert` + `flush()`. With
//! several repetitions each figure is the median over them, and the rows of
//! one repetition run interleaved (every configuration once, then again).
//! The database lives under `target/` (`EMDB_PROBE_DIR` overrides): it must
//! be on the disk under test, not a tmpfs.

#[path = "common/devstat.rs"]
mod devstat;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emdb::{Emdb, IoBackend, SyncStrategy};

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of the whole process.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[derive(Clone, Copy)]
struct Row {
    records_s: f64,
    per_flush: f64,
    cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn backend(name: &str) -> IoBackend {
    match name {
        "memory" => IoBackend::Memory,
        "uring" => IoBackend::Uring,
        "portable" => IoBackend::Portable,
        other => panic!("EMDB_PROBE_BACKENDS: unknown backend {other:?}"),
    }
}

fn strategy(name: &str) -> SyncStrategy {
    match name {
        "auto" => SyncStrategy::Auto,
        "syscalls" => SyncStrategy::Syscalls,
        "ring" => SyncStrategy::RingLinked,
        "dsync" => SyncStrategy::Dsync,
        other => panic!("EMDB_PROBE_STRATEGIES: unknown strategy {other:?}"),
    }
}

fn run_one(
    dir: &Path,
    shards: usize,
    b: IoBackend,
    st: SyncStrategy,
    threads: usize,
    secs: u64,
) -> Row {
    let _ = std::fs::remove_dir_all(dir);
    let db = Arc::new(if b == IoBackend::Memory {
        // No device: what is left is the cost of the commit protocol
        // itself (the hops between callers and cores).
        Emdb::open_in_memory()
    } else {
        Emdb::builder()
            .path(dir)
            .shards(shards)
            .io_backend(b)
            .sync_strategy(st)
            .background_compaction(false)
            .build()
            .expect("open the probe database")
    });
    let stat = devstat::find_dev_stat(dir).ok();
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (db, stop, go) = (db.clone(), stop.clone(), go.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t as u64 + 1);
                    let value: Vec<u8> = (0..150).map(|_| rng.u8(..)).collect();
                    let mut lat = Vec::with_capacity(1 << 12);
                    go.wait();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let mut key = [0u8; 24];
                        key[..8].copy_from_slice(&(t as u64).to_le_bytes());
                        key[8..16].copy_from_slice(&i.to_le_bytes());
                        rng.fill(&mut key[16..]);
                        let start = Instant::now();
                        db.insert(&key[..], &value[..]).expect("insert");
                        db.flush().expect("flush");
                        lat.push(start.elapsed().as_nanos() as u64);
                        i += 1;
                    }
                    lat
                })
                .expect("spawn a writer")
        })
        .collect();
    go.wait();
    let flushes0 = stat.as_ref().and_then(|s| devstat::read_flushes(s));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("writer thread"));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let flushes1 = stat.as_ref().and_then(|s| devstat::read_flushes(s));
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    let n = lat.len() as f64;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let per_flush = match (flushes0, flushes1) {
        (Some(a), Some(b)) if b > a => n / (b - a) as f64,
        _ => f64::NAN,
    };
    Row {
        records_s: n / elapsed,
        per_flush,
        cpu_us: cpu * 1e6 / n,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let threads: Vec<usize> = env_list("EMDB_PROBE_T", "1,16,64")
        .iter()
        .map(|s| s.parse().expect("EMDB_PROBE_T: thread counts"))
        .collect();
    let shards: Vec<usize> = env_list("EMDB_PROBE_SHARDS", "1,2")
        .iter()
        .map(|s| s.parse().expect("EMDB_PROBE_SHARDS: shard counts"))
        .collect();
    let backends = env_list("EMDB_PROBE_BACKENDS", "uring,portable");
    let strategies = env_list("EMDB_PROBE_STRATEGIES", "auto");
    let secs = env_num("EMDB_PROBE_SECS", 3);
    let reps = env_num("EMDB_PROBE_REPS", 1).max(1);
    let dir: PathBuf = std::env::var_os("EMDB_PROBE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/probe-data"));
    std::fs::create_dir_all(&dir).expect("create the probe directory");
    let db_dir = dir.join("db");

    let mut configs = Vec::new();
    for &s in &shards {
        for b in &backends {
            let sts: &[String] = if b == "uring" {
                &strategies
            } else {
                &strategies[..1]
            };
            for st in sts {
                for &t in &threads {
                    let label = if b == "uring" {
                        format!("{b} ({st})")
                    } else {
                        b.clone()
                    };
                    configs.push((s, b.clone(), st.clone(), label, t));
                }
            }
        }
    }
    let mut results: Vec<Vec<Row>> = vec![Vec::new(); configs.len()];
    for rep in 0..reps {
        for (i, (s, b, st, label, t)) in configs.iter().enumerate() {
            let r = run_one(&db_dir, *s, backend(b), strategy(st), *t, secs);
            eprintln!(
                "rep {rep}: {s} shard(s), {label}, T={t}: {:.0} rec/s, {:.1} rec/flush, {:.1} µs CPU/rec",
                r.records_s, r.per_flush, r.cpu_us
            );
            results[i].push(r);
        }
    }
    println!(
        "\n{secs} s per row, median of {reps} repetition(s), {} CPUs\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| shards | backend | T | records/s | records/device flush | CPU µs/record | p50 µs | p99 µs |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for ((s, _, _, b, t), rows) in configs.iter().zip(results) {
        let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
        println!(
            "| {s} | {b} | {t} | {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
            m(|r| r.records_s),
            m(|r| r.per_flush),
            m(|r| r.cpu_us),
            m(|r| r.p50_us),
            m(|r| r.p99_us),
        );
    }
}
