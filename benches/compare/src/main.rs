//! emdb-compare: one workload against emdb and the stores users would pick
//! instead, in one process run, printed as tables (plus CSV and plots).
//!
//! `cargo run --release -p emdb-compare -- --records 1000000`
//!
//! Phases 1-13 and 15-16 run per store, in one process, on the same
//! pre-generated records; phase 14 (async durable writers) runs after them on
//! databases of its own. Phases 15 (full ordered scan) and 16 (10,000 prefix
//! scans of the bulk load's 2-byte groups) run right after phase 7, while all
//! N bulk-loaded keys are present; `--help` lists every phase.

mod async_writers;
#[path = "../../common/devstat.rs"]
mod devstat;
mod output;
mod stores;
mod sys;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use output::{Cell, Results};
use stores::{Rec, Res, Store};

const SEED: u64 = 3;
/// Seed of the bulk load's group numbers (a stream of its own, so that every
/// other byte of the workload is what seed 3 gave before groups existed).
const GROUP_SEED: u64 = 4;
/// The bulk load's keys start with a big-endian u16 group number drawn
/// uniformly from 0..GROUPS (N = 1M: about 100 keys per group).
const GROUPS: u16 = 10_000;
const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;
const LOAD_CHUNK: usize = 50_000;
const INDIVIDUAL_WRITES: usize = 1_000;
const BATCHES: usize = 100;
const BATCH_LEN: usize = 1_000;
const NOSYNC_WRITES: usize = 50_000;
const WRITER_POOL: usize = 100_000;

#[derive(Parser, Debug)]
#[command(
    about = "Comparative benchmark: emdb against redb, fjall, sled, LMDB (and RocksDB with --features rocksdb)"
)]
struct Args {
    /// Records bulk-loaded in phase 1 (N).
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Random point reads in phases 6 and 7.
    #[arg(long, default_value_t = 1_000_000)]
    reads: usize,
    /// Stores to run, comma-separated (names as printed; `all` for every one built in).
    #[arg(long, default_value = "all")]
    stores: String,
    /// Phases to run: comma-separated numbers or ranges, e.g. `1-12` or `1,6,13`.
    /// 1 bulk load, 2 individual durable writes, 3 durable batches, 4 writes
    /// without sync, 5 len, 6-7 random reads, 8 remove half, 9 size, 10
    /// compaction, 11 reopen, 12 memory per key, 13 durable writers, 14 async
    /// durable writers, 15 full ordered scan, 16 10,000 prefix scans.
    /// Phases 2-12, 15 and 16 need the bulk load, so phase 1 is added when any of
    /// them is asked. Phases 15 and 16 run right after phase 7 (before phase 8
    /// removes half the keys) and open both emdbs with enable_range_scans(true),
    /// which phase 12 then includes; they are not in the default for that reason.
    /// Phase 14 (async durable writers, emdb and emdb 1.0.3 only) runs on its own
    /// databases after the stores' phases.
    #[arg(long, default_value = "1-14")]
    phases: String,
    /// Thread counts of the concurrent durable writers phase (13).
    #[arg(long, default_value = "1,2,4,8,16,32,64", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Writer counts (tasks; threads for the sync rows, up to 1,000) of the async
    /// durable writers phase (14).
    #[arg(long, default_value = "1,16,256,1000,10000", value_delimiter = ',')]
    tasks: Vec<usize>,
    /// Thread counts of the multi-threaded reads phase (7).
    #[arg(long, default_value = "2,4,8", value_delimiter = ',')]
    read_threads: Vec<usize>,
    /// Thread counts of the raw-device reference row.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    raw_threads: Vec<usize>,
    /// Seconds each (store, T) pair of phase 13, and each row of phase 14, runs.
    #[arg(long, default_value_t = 2.0)]
    writer_secs: f64,
    /// Where the stores keep their files (must be on the disk under test).
    #[arg(long, default_value = "target/emdb-compare-data")]
    data_dir: PathBuf,
    /// Where results.md, results.csv and writers.svg are written.
    #[arg(long, default_value = "target/emdb-compare")]
    out_dir: PathBuf,
}

fn parse_phases(spec: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad phase {part:?}"))?;
        let b: u32 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad phase {part:?}"))?;
        if a < 1 || b > 16 || a > b {
            return Err(format!("phase out of 1-16: {part:?}"));
        }
        out.extend(a..=b);
    }
    if out.iter().any(|p| matches!(p, 2..=12 | 15 | 16)) {
        out.push(1);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Everything the workload writes or reads, generated before any store runs.
/// Keys are 24 bytes, values 150 random bytes. The bulk load's keys (`load`)
/// start with a group number (big-endian u16 in 0..GROUPS, drawn from a
/// stream seeded GROUP_SEED), then 22 random bytes; the other key sets stay
/// 24 random bytes (so a few of them fall in a group too: see `in_groups`).
struct Workload {
    load: Vec<Rec>,
    individual: Vec<Rec>,
    batches: Vec<Rec>,
    nosync: Vec<Rec>,
    /// The pool of phases 13 and 14 (shared with phase 14's tasks).
    writers: Arc<[Rec]>,
    reads: Vec<u32>,
}

impl Workload {
    fn generate(n: usize, reads: usize) -> Workload {
        let mut rng = fastrand::Rng::with_seed(SEED);
        let mut gen = |count: usize| -> Vec<Rec> {
            (0..count)
                .map(|_| {
                    let mut k = vec![0u8; KEY_LEN];
                    let mut v = vec![0u8; VALUE_LEN];
                    rng.fill(&mut k);
                    rng.fill(&mut v);
                    (k, v)
                })
                .collect()
        };
        let mut load = gen(n);
        let mut groups = fastrand::Rng::with_seed(GROUP_SEED);
        for (k, _) in &mut load {
            k[..2].copy_from_slice(&groups.u16(0..GROUPS).to_be_bytes());
        }
        let individual = gen(INDIVIDUAL_WRITES);
        let batches = gen(BATCHES * BATCH_LEN);
        let nosync = gen(NOSYNC_WRITES);
        let writers = gen(WRITER_POOL).into();
        let reads = (0..reads).map(|_| rng.u32(0..n.max(1) as u32)).collect();
        Workload {
            load,
            individual,
            batches,
            nosync,
            writers,
            reads,
        }
    }
}

/// Keys of `recs` whose first two bytes name a group (< GROUPS): what the
/// prefix scans of phase 16 find of them.
fn in_groups(recs: &[Rec]) -> u64 {
    recs.iter()
        .filter(|(k, _)| u16::from_be_bytes([k[0], k[1]]) < GROUPS)
        .count() as u64
}

fn bar(len: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("  {msg:<34} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Multi-threaded random reads over `threads` threads; returns elapsed and hits.
fn reads(store: &dyn Store, w: &Workload, threads: usize) -> Res<(Duration, u64)> {
    let per = w.reads.len().div_ceil(threads.max(1));
    let pb = bar(w.reads.len() as u64, format!("reads, {threads} thread(s)"));
    let hits = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = w
            .reads
            .chunks(per.max(1))
            .map(|part| {
                let (pb, hits) = (&pb, &hits);
                s.spawn(move || -> Res<()> {
                    let mut r = store.reader()?;
                    let mut found = 0u64;
                    for (i, &idx) in part.iter().enumerate() {
                        let key = &w.load[idx as usize].0;
                        if r.get(key)? == Some(VALUE_LEN) {
                            found += 1;
                        }
                        if i % 10_000 == 9_999 {
                            pb.inc(10_000);
                        }
                    }
                    hits.fetch_add(found, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "reader thread panicked")??;
        }
        Ok(())
    })?;
    let el = start.elapsed();
    pb.finish_and_clear();
    Ok((el, hits.load(Ordering::Relaxed)))
}

/// Phase 13 for one T: threads repeat {insert one record; make it durable}.
fn writers(
    store: &dyn Store,
    w: &Workload,
    threads: usize,
    secs: f64,
    dev: Option<&sys::Device>,
) -> Res<sys::LoopResult> {
    let stop = AtomicBool::new(false);
    let next = AtomicU64::new(0);
    let pb = ProgressBar::new_spinner();
    pb.set_message(format!("durable writers, T={threads}"));
    pb.enable_steady_tick(Duration::from_millis(200));
    let before = dev.map(sys::Device::flushes).unwrap_or(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, next) = (&stop, &next);
                s.spawn(move || -> Res<()> {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize % w.writers.len();
                        let (k, v) = &w.writers[i];
                        store.put_durable(k, v)?;
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let after = dev.map(sys::Device::flushes).unwrap_or(0);
    pb.finish_and_clear();
    Ok(sys::LoopResult {
        ops: next.load(Ordering::Relaxed),
        secs,
        device_flushes: after.saturating_sub(before),
    })
}

struct Ctx<'a> {
    /// The store under test.
    name: &'static str,
    args: &'a Args,
    phases: &'a [u32],
    w: &'a Workload,
    dev: Option<&'a sys::Device>,
    res: &'a mut Results,
}

impl Ctx<'_> {
    fn has(&self, p: u32) -> bool {
        self.phases.contains(&p)
    }
}

fn run_store(cx: &mut Ctx, kind: &stores::Kind, dir: &Path) -> Res<()> {
    let name = cx.name;
    let n = cx.args.records;
    let w = cx.w;
    eprintln!("== {name}");
    malloc_trim();
    let rss0 = sys::rss_bytes();
    let t = Instant::now();
    let mut store = (kind.open)(dir)?;
    cx.res
        .note(name, format!("open (fresh): {:.1} ms", ms(t.elapsed())));
    let mut expected_len = 0u64;
    // Live keys that phase 16's prefix scans should find.
    let mut expected_grouped = 0u64;

    if cx.has(1) {
        let pb = bar(n as u64, "1 bulk load".into());
        store.set_nosync(true)?;
        let t = Instant::now();
        for chunk in w.load.chunks(LOAD_CHUNK) {
            store.load_chunk(chunk)?;
            pb.inc(chunk.len() as u64);
        }
        store.set_nosync(false)?;
        store.sync()?;
        let el = t.elapsed();
        pb.finish_and_clear();
        expected_len += n as u64;
        expected_grouped += n as u64;
        cx.res.set("1", name, Cell::ms(el));
        let rss1 = sys::rss_bytes();
        if cx.has(12) {
            let per_key = rss1.saturating_sub(rss0) as f64 / n.max(1) as f64;
            cx.res.set("12", name, Cell::Val(per_key));
        }
    }
    if cx.has(2) {
        let pb = bar(
            INDIVIDUAL_WRITES as u64,
            "2 individual durable writes".into(),
        );
        let t = Instant::now();
        for (k, v) in &w.individual {
            store.put_durable(k, v)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        cx.res.set("2", name, Cell::ms(t.elapsed()));
        expected_len += INDIVIDUAL_WRITES as u64;
        expected_grouped += in_groups(&w.individual);
    }
    if cx.has(3) {
        let pb = bar(BATCHES as u64, "3 durable batches".into());
        let t = Instant::now();
        for b in w.batches.chunks(BATCH_LEN) {
            store.batch_durable(b)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        cx.res.set("3", name, Cell::ms(t.elapsed()));
        expected_len += (BATCHES * BATCH_LEN) as u64;
        expected_grouped += in_groups(&w.batches);
    }
    if cx.has(4) {
        let pb = bar(NOSYNC_WRITES as u64, "4 writes without sync".into());
        store.set_nosync(true)?;
        let t = Instant::now();
        for (i, (k, v)) in w.nosync.iter().enumerate() {
            store.put_nosync(k, v)?;
            if i % 1000 == 999 {
                pb.inc(1000);
            }
        }
        let el = t.elapsed();
        store.set_nosync(false)?;
        pb.finish_and_clear();
        cx.res.set("4", name, Cell::ms(el));
        expected_len += NOSYNC_WRITES as u64;
        expected_grouped += in_groups(&w.nosync);
    }
    if cx.has(5) {
        let t = Instant::now();
        let len = store.len()?;
        cx.res.set("5", name, Cell::ms(t.elapsed()));
        if len != expected_len {
            cx.res
                .note(name, format!("len returned {len}, expected {expected_len}"));
        }
    }
    if cx.has(6) {
        let (el, hits) = reads(&*store, w, 1)?;
        cx.res.set("6", name, Cell::ms(el));
        if hits != w.reads.len() as u64 {
            cx.res.note(
                name,
                format!("1-thread reads found {hits} of {}", w.reads.len()),
            );
        }
    }
    if cx.has(7) {
        for &t in &cx.args.read_threads {
            let (el, hits) = reads(&*store, w, t)?;
            cx.res.set(&format!("7/{t}"), name, Cell::ms(el));
            if hits != w.reads.len() as u64 {
                cx.res.note(
                    name,
                    format!("{t}-thread reads found {hits} of {}", w.reads.len()),
                );
            }
        }
    }
    // Phases 15 and 16 run here, with every key of phases 1-4 present.
    if cx.has(15) {
        full_scan(cx, &*store, expected_len)?;
    }
    if cx.has(16) {
        prefix_scans(cx, &*store, expected_grouped)?;
    }
    if cx.has(8) {
        let keys: Vec<&[u8]> = w
            .load
            .iter()
            .step_by(2)
            .map(|(k, _)| k.as_slice())
            .collect();
        let pb = bar(keys.len() as u64, "8 remove half".into());
        store.set_nosync(true)?;
        let t = Instant::now();
        for chunk in keys.chunks(LOAD_CHUNK) {
            store.remove_chunk(chunk)?;
            pb.inc(chunk.len() as u64);
        }
        store.set_nosync(false)?;
        store.sync()?;
        let el = t.elapsed();
        pb.finish_and_clear();
        cx.res.set("8", name, Cell::ms(el));
        expected_len -= keys.len() as u64;
    }
    if cx.has(9) {
        cx.res.set(
            "9",
            name,
            Cell::Val(sys::disk_usage(dir) as f64 / (1 << 20) as f64),
        );
    }
    if cx.has(10) {
        let t = Instant::now();
        match store.compact() {
            Err(reason) => {
                cx.res.set("10", name, Cell::Na(reason.clone()));
                cx.res.set("10s", name, Cell::Na(reason));
            }
            Ok(r) => {
                r?;
                cx.res.set("10", name, Cell::ms(t.elapsed()));
                let size = store
                    .compacted_size()
                    .unwrap_or_else(|| sys::disk_usage(dir));
                cx.res
                    .set("10s", name, Cell::Val(size as f64 / (1 << 20) as f64));
            }
        }
    }
    if cx.has(11) {
        let t = Instant::now();
        if store.checkpoint()? {
            cx.res.note(
                name,
                format!("checkpoint before reopen: {:.1} ms", ms(t.elapsed())),
            );
        }
        let t = Instant::now();
        drop(store);
        cx.res
            .note(name, format!("close (drop): {:.1} ms", ms(t.elapsed())));
        malloc_trim();
        let t = Instant::now();
        store = (kind.open)(dir)?;
        cx.res.set("11", name, Cell::ms(t.elapsed()));
        let len = store.len()?;
        if len != expected_len {
            cx.res.note(
                name,
                format!("after reopen len = {len}, expected {expected_len}"),
            );
        }
    }
    if cx.has(13) {
        for &t in &cx.args.threads {
            let before = store.flush_stats();
            let r = writers(&*store, w, t, cx.args.writer_secs, cx.dev)?;
            let rate = r.ops as f64 / r.secs;
            cx.res.set(&format!("13/{t}"), name, Cell::Val(rate));
            if cx.dev.is_some() {
                let per = if r.device_flushes == 0 {
                    Cell::Na("no device flush counted".into())
                } else {
                    Cell::Val(r.ops as f64 / r.device_flushes as f64)
                };
                cx.res.set(&format!("13f/{t}"), name, per);
            }
            let mut note = format!(
                "T={t}: {} durable writes in {:.2} s, {} device flushes",
                r.ops, r.secs, r.device_flushes
            );
            if let (Some(b), Some(a)) = (before, store.flush_stats()) {
                note += &format!(", {} fdatasyncs issued by the store", a.0 - b.0);
            }
            cx.res.note(name, note);
            eprintln!(
                "   T={t}: {rate:.0} records/s, {} device flushes",
                r.device_flushes
            );
        }
    }
    drop(store);
    Ok(())
}

/// Phase 15: one pass over every key in ascending order; checks the count and
/// the order.
fn full_scan(cx: &mut Ctx, store: &dyn Store, expected: u64) -> Res<()> {
    let name = cx.name;
    let pb = ProgressBar::new_spinner();
    pb.set_message("15 full ordered scan");
    pb.enable_steady_tick(Duration::from_millis(200));
    let (mut count, mut bytes, mut disorder) = (0u64, 0u64, 0u64);
    let mut prev: Vec<u8> = Vec::with_capacity(KEY_LEN);
    let t = Instant::now();
    let r = store.scan(&[], &mut |k, v| {
        if count > 0 && k <= prev.as_slice() {
            disorder += 1;
        }
        prev.clear();
        prev.extend_from_slice(k);
        count += 1;
        bytes += v.len() as u64;
    });
    let el = t.elapsed();
    pb.finish_and_clear();
    match r {
        Err(reason) => cx.res.set("15", name, Cell::Na(reason)),
        Ok(r) => {
            r?;
            std::hint::black_box(bytes);
            eprintln!("   15: {count} keys in {:.1} ms", ms(el));
            let checks = ScanChecks {
                what: "full scan",
                count,
                expected,
                bad: disorder,
                bad_means: "keys not above the key before them",
            };
            scan_result(cx, "15", el, checks);
        }
    }
    Ok(())
}

/// What a scan phase counted, against what it should have.
struct ScanChecks {
    what: &'static str,
    count: u64,
    expected: u64,
    /// Keys that broke the phase's rule, and what that rule is.
    bad: u64,
    bad_means: &'static str,
}

/// Records a scan phase's time in `row`, and a note for each check that
/// failed.
fn scan_result(cx: &mut Ctx, row: &str, el: Duration, c: ScanChecks) {
    let name = cx.name;
    cx.res.set(row, name, Cell::ms(el));
    if c.count != c.expected {
        let note = format!(
            "{} visited {} keys, expected {}",
            c.what, c.count, c.expected
        );
        cx.res.note(name, note);
    }
    if c.bad > 0 {
        cx.res
            .note(name, format!("{}: {} {}", c.what, c.bad, c.bad_means));
    }
}

/// Phase 16: a prefix scan of each group, in a fixed shuffled order; checks
/// that the counts add up to the keys in groups and that every key has its
/// prefix.
fn prefix_scans(cx: &mut Ctx, store: &dyn Store, expected: u64) -> Res<()> {
    let name = cx.name;
    let mut order: Vec<u16> = (0..GROUPS).collect();
    fastrand::Rng::with_seed(SEED).shuffle(&mut order);
    let pb = bar(order.len() as u64, "16 prefix scans".into());
    let (mut count, mut bytes, mut stray) = (0u64, 0u64, 0u64);
    let t = Instant::now();
    for (i, g) in order.iter().enumerate() {
        let p = g.to_be_bytes();
        let r = store.scan(&p, &mut |k, v| {
            if !k.starts_with(&p) {
                stray += 1;
            }
            count += 1;
            bytes += v.len() as u64;
        });
        match r {
            Err(reason) => {
                pb.finish_and_clear();
                cx.res.set("16", name, Cell::Na(reason));
                return Ok(());
            }
            Ok(r) => r?,
        }
        if i % 100 == 99 {
            pb.inc(100);
        }
    }
    let el = t.elapsed();
    pb.finish_and_clear();
    std::hint::black_box(bytes);
    eprintln!(
        "   16: {} scans, {count} keys in {:.1} ms",
        order.len(),
        ms(el)
    );
    let checks = ScanChecks {
        what: "prefix scans",
        count,
        expected,
        bad: stray,
        bad_means: "keys without the scanned prefix",
    };
    scan_result(cx, "16", el, checks);
    Ok(())
}

/// Phase 14: for every N of `--tasks`, every configuration of the wanted
/// stores, so that the rows compared at one N run seconds apart.
fn async_phase(
    args: &Args,
    wanted: &[&stores::Kind],
    w: &Workload,
    dev: Option<&sys::Device>,
    res: &mut Results,
) {
    let configs: Vec<async_writers::Config> = async_writers::Config::ALL
        .into_iter()
        .filter(|c| wanted.iter().any(|k| k.name == c.store()))
        .collect();
    for c in &configs {
        res.async_configs
            .push((c.name().to_string(), c.settings().to_string()));
    }
    for &n in &args.tasks {
        for &c in configs.iter().filter(|c| c.runs_at(n)) {
            eprintln!("== 14 {}, N={n}", c.name());
            let outcome =
                async_writers::run(c, n, &args.data_dir, &w.writers, args.writer_secs, dev);
            match &outcome {
                Ok(f) => eprintln!(
                    "   {:.0} records/s, {} records, {:?} device flushes",
                    f.records as f64 / f.secs,
                    f.records,
                    f.device_flushes
                ),
                Err(e) => eprintln!("   failed: {e}"),
            }
            res.async_rows.push(output::AsyncRow {
                config: c.name(),
                n,
                outcome: outcome.map_err(|e| e.to_string()),
            });
        }
    }
}

fn main() -> Res<()> {
    let args = Args::parse();
    let phases = parse_phases(&args.phases)?;
    let scans = phases.contains(&15) || phases.contains(&16);
    // Before any store opens: both emdbs need their ordered index to scan.
    stores::RANGE_SCANS.store(scans, Ordering::Relaxed);
    let all = stores::kinds();
    let wanted: Vec<&stores::Kind> = if args.stores == "all" {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for name in args.stores.split(',').map(str::trim) {
            match all.iter().find(|k| k.name.eq_ignore_ascii_case(name)) {
                Some(k) => v.push(k),
                None => {
                    let names: Vec<_> = all.iter().map(|k| k.name).collect();
                    return Err(
                        format!("unknown store {name:?}; built in: {}", names.join(", ")).into(),
                    );
                }
            }
        }
        v
    };
    std::fs::create_dir_all(&args.data_dir)?;
    std::fs::create_dir_all(&args.out_dir)?;
    let dev = sys::Device::of_dir(&args.data_dir);
    let total = Instant::now();

    eprintln!(
        "generating {} records (seed {SEED}) ...",
        args.records + 151_000 + WRITER_POOL
    );
    let w = Workload::generate(args.records, args.reads);

    let mut res = Results::new(&args.threads, &args.read_threads, &args.raw_threads);
    res.env = output::Env {
        date: output::today(),
        kernel: sys::kernel(),
        cpu: sys::cpu_model(),
        disk: dev
            .as_ref()
            .map(sys::disk_model)
            .unwrap_or_else(|| "unknown".into()),
        filesystem: sys::filesystem(&args.data_dir),
        command: format!(
            "cargo run --release -p emdb-compare{} -- {}",
            if cfg!(feature = "rocksdb") {
                " --features rocksdb"
            } else {
                ""
            },
            std::env::args().skip(1).collect::<Vec<_>>().join(" ")
        ),
        records: args.records,
        phases: phases.clone(),
    };
    for k in &wanted {
        let mut set = k.settings.to_string();
        if scans {
            set = format!("{set}; {}", k.scan);
        }
        res.stores.push((k.name.to_string(), set));
    }

    if phases.contains(&13) || phases.contains(&14) {
        if let Some(d) = dev.as_ref() {
            // Device flushes other work on the machine issues while we idle:
            // the noise floor of every flush count below.
            let before = d.flushes();
            std::thread::sleep(Duration::from_secs(2));
            res.idle_flushes_per_sec = Some(d.flushes().saturating_sub(before) as f64 / 2.0);
        }
    }
    if phases.contains(&13) {
        for &t in &args.raw_threads {
            eprintln!("== raw device, {t} thread(s)");
            let r = sys::raw_device_loop(
                &args.data_dir,
                t,
                Duration::from_secs_f64(args.writer_secs),
                dev.as_ref(),
            )?;
            res.raw
                .push((t, r.ops as f64 / r.secs, r.ops, r.device_flushes));
        }
    }

    // Phase 14 opens databases of its own: asked alone, it leaves the stores'
    // loop nothing to do.
    let store_phases = phases.iter().any(|&p| p != 14);
    for kind in wanted.iter().filter(|_| store_phases) {
        let dir = args.data_dir.join(kind.name.replace([' ', '.'], "_"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cx = Ctx {
            name: kind.name,
            args: &args,
            phases: &phases,
            w: &w,
            dev: dev.as_ref(),
            res: &mut res,
        };
        let t = Instant::now();
        if let Err(e) = run_store(&mut cx, kind, &dir) {
            eprintln!("   {} failed: {e}", kind.name);
            res.fail(kind.name, &format!("failed: {e}"));
        }
        res.note(
            kind.name,
            format!("all phases: {:.1} s", t.elapsed().as_secs_f64()),
        );
        let _ = std::fs::remove_dir_all(&dir);
        malloc_trim();
    }
    if phases.contains(&14) {
        async_phase(&args, &wanted, &w, dev.as_ref(), &mut res);
    }
    res.total_secs = total.elapsed().as_secs_f64();

    let md = res.markdown();
    println!("{md}");
    std::fs::write(args.out_dir.join("results.md"), &md)?;
    std::fs::write(args.out_dir.join("results.csv"), res.csv())?;
    let mut written = vec!["results.md", "results.csv"];
    if phases.contains(&13) {
        output::plot(&res, &args.out_dir.join("writers.svg"))?;
        written.push("writers.svg");
    }
    if phases.contains(&14) {
        output::plot_async(&res, &args.out_dir.join("async-writers.svg"))?;
        written.push("async-writers.svg");
    }
    eprintln!(
        "wrote {} to {}; total {:.1} s",
        written.join(", "),
        args.out_dir.display(),
        res.total_secs
    );
    Ok(())
}
