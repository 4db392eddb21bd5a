//! `emdb bench`: T threads, each looping `insert` + `flush()` (a durable
//! write) for S seconds on a scratch database at PATH, the loop of
//! `cargo bench --bench writers`. Live: records/s and records per device
//! flush each second. At the end: the same table row as that bench.

#[path = "../../benches/common/devstat.rs"]
#[allow(dead_code)]
mod devstat;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Args;
use emdb::Emdb;
use serde_json::json;

use crate::fail::{Failure, OTHER};
use crate::fmt::count;

#[derive(Args)]
pub struct BenchArgs {
    /// A new (or empty) directory on the disk to measure; the scratch
    /// database made there is removed afterwards.
    path: PathBuf,
    /// Concurrent durable writers.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// How long to write.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Bytes per value (keys are 24 bytes).
    #[arg(long, default_value_t = 150)]
    value_size: usize,
    /// Shards (default: one per CPU).
    #[arg(long)]
    shards: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The files a database is made of: the only ones the bench removes.
fn database_file(name: &str) -> bool {
    matches!(name, "LOCK" | "MANIFEST" | "MANIFEST.tmp")
        || name.ends_with(".seg")
        || name.ends_with(".hint")
        || name.ends_with(".hint.tmp")
}

/// Where the scratch database goes: a directory that does not exist (the
/// bench makes it and its missing parents, and removes them after) or one
/// that is empty. Anything else is refused: the bench must never write
/// into, or remove, someone's data.
fn scratch(path: &Path) -> Result<Vec<PathBuf>, Failure> {
    let refuse = |why: String| {
        Failure::new(
            OTHER,
            format!(
                "{}: {why}; `emdb bench` makes a scratch database, so give it a new directory \
                 on the disk to measure",
                path.display()
            ),
        )
    };
    match std::fs::read_dir(path) {
        Ok(mut d) => match d.next() {
            None => Ok(Vec::new()),
            Some(_) => Err(refuse("not empty".into())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The directories to make, innermost first.
            let mut made = Vec::new();
            let mut at = Some(path);
            while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
                made.push(p.to_path_buf());
                at = p.parent();
            }
            for p in made.iter().rev() {
                std::fs::create_dir(p).map_err(|e| refuse(format!("cannot create it ({e})")))?;
            }
            Ok(made)
        }
        Err(e) => Err(refuse(format!("cannot be read ({e})"))),
    }
}

/// Removes the scratch database: its files only, then the directories the
/// bench made (each only if empty).
fn clean(path: &Path, made: &[PathBuf]) {
    if let Ok(d) = std::fs::read_dir(path) {
        for e in d.flatten() {
            if e.file_name().to_str().is_some_and(database_file) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    for p in made {
        let _ = std::fs::remove_dir(p);
    }
}

pub fn run(a: &BenchArgs) -> Result<u8, Failure> {
    if a.writers == 0 || a.seconds == 0 {
        return Err(Failure::new(
            2,
            "--writers and --seconds must be at least 1",
        ));
    }
    let made = scratch(&a.path)?;
    let mut b = Emdb::builder()
        .path(&a.path)
        .background_compaction(false)
        .max_value_len(a.value_size.max(1));
    if let Some(s) = a.shards {
        b = b.shards(s);
    }
    let db = match b.build() {
        Ok(db) => Arc::new(db),
        Err(e) => {
            clean(&a.path, &made);
            return Err(Failure::emdb(e, &a.path));
        }
    };
    let result = measure(&db, a);
    let st = db.stats().ok();
    drop(db);
    clean(&a.path, &made);
    let r = result?;
    let st = st.ok_or_else(|| Failure::new(OTHER, "stats failed"))?;
    let backend = format!("{:?}", st.io_backend).to_lowercase();
    let per_flush = r.device_flushes.map(|f| r.records as f64 / f.max(1) as f64);
    if a.json {
        let v = json!({
            "writers": a.writers,
            "seconds": r.elapsed,
            "shards": st.shards,
            "backend": backend,
            "records": r.records,
            "records_per_second": r.records as f64 / r.elapsed,
            "device_flushes": r.device_flushes,
            "records_per_device_flush": per_flush,
            "engine_fdatasyncs": st.device_flushes,
            "records_per_fdatasync": st.records_per_flush,
            "cpu_us_per_record": r.cpu_us,
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
        });
        println!("{v:#}");
        return Ok(0);
    }
    println!(
        "\n{} durable writers x {:.1} s, 24-byte keys, {}-byte values, on {}\n",
        a.writers,
        r.elapsed,
        a.value_size,
        a.path.display()
    );
    println!("| shards | backend | T | records/s | records/device flush | CPU µs/record | p50 µs | p99 µs |");
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {backend} | {} | {:.0} | {} | {:.1} | {:.0} | {:.0} |",
        st.shards,
        a.writers,
        r.records as f64 / r.elapsed,
        per_flush.map_or("n/a".to_string(), |p| format!("{p:.1}")),
        r.cpu_us,
        r.p50_us,
        r.p99_us
    );
    println!(
        "\n{} records; the engine issued {} fdatasyncs ({:.1} records each){}",
        count(r.records),
        count(st.device_flushes),
        st.records_per_flush,
        match r.device_flushes {
            Some(f) => format!("; the device completed {} flushes", count(f)),
            None => "; device flush counts are not available here (no field 16 in \
                     /sys/block/<disk>/stat)"
                .to_string(),
        }
    );
    Ok(0)
}

struct Measured {
    records: u64,
    elapsed: f64,
    device_flushes: Option<u64>,
    cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
}

fn measure(db: &Arc<Emdb>, a: &BenchArgs) -> Result<Measured, Failure> {
    let stat = devstat::find_dev_stat(&a.path).ok();
    let flushes = || stat.as_ref().and_then(|s| devstat::read_flushes(s));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let go = Arc::new(Barrier::new(a.writers + 1));
    let mut handles = Vec::with_capacity(a.writers);
    for t in 0..a.writers {
        let (db, stop, done, go, failed) = (
            db.clone(),
            stop.clone(),
            done.clone(),
            go.clone(),
            failed.clone(),
        );
        let value_size = a.value_size;
        let h = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let value: Vec<u8> = (0..value_size).map(|_| next() as u8).collect();
                let mut lat = Vec::with_capacity(1 << 12);
                go.wait();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut key = [0u8; 24];
                    key[..8].copy_from_slice(&(t as u64).to_le_bytes());
                    key[8..16].copy_from_slice(&i.to_le_bytes());
                    key[16..].copy_from_slice(&next().to_le_bytes());
                    let start = Instant::now();
                    if let Err(e) = db.insert(&key[..], &value[..]).and_then(|()| db.flush()) {
                        let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(e.to_string());
                        break;
                    }
                    lat.push(start.elapsed().as_nanos() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                lat
            })
            .map_err(|e| Failure::io("starting a writer thread", e))?;
        handles.push(h);
    }
    go.wait();
    let flushes0 = flushes();
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let live = std::io::stderr().is_terminal();
    let (mut last_n, mut last_f, mut last_t) = (0u64, flushes0, t0);
    while t0.elapsed() < Duration::from_secs(a.seconds) {
        let left = Duration::from_secs(a.seconds).saturating_sub(t0.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(1)));
        let (n, f, now) = (done.load(Ordering::Relaxed), flushes(), Instant::now());
        let rate = (n - last_n) as f64 / now.duration_since(last_t).as_secs_f64().max(1e-9);
        let per_flush = match (last_f, f) {
            (Some(a0), Some(b0)) if b0 > a0 => {
                format!("{:.1}", (n - last_n) as f64 / (b0 - a0) as f64)
            }
            _ => "n/a".to_string(),
        };
        let line = format!(
            "{:>5.1} s  {:>10} records/s  {:>7} records/device flush  ({} records)",
            t0.elapsed().as_secs_f64(),
            count(rate as u64),
            per_flush,
            count(n)
        );
        if live {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        (last_n, last_f, last_t) = (n, f, now);
    }
    stop.store(true, Ordering::Relaxed);
    if live {
        eprintln!();
    }
    let mut lat: Vec<u64> = Vec::new();
    for h in handles {
        lat.extend(h.join().unwrap_or_default());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    let flushes1 = flushes();
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(Failure::new(OTHER, format!("a writer failed: {e}")));
    }
    if lat.is_empty() {
        return Err(Failure::new(OTHER, "no write completed"));
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let n = lat.len() as u64;
    Ok(Measured {
        records: n,
        elapsed,
        device_flushes: match (flushes0, flushes1) {
            (Some(a0), Some(b0)) => Some(b0.saturating_sub(a0)),
            _ => None,
        },
        cpu_us: cpu * 1e6 / n as f64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    })
}
