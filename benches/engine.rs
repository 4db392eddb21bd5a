//! emdb engine benchmarks. Every figure is measured next to a baseline run in
//! the same process (or, for memory, in a sibling child process of the same
//! binary), and each disk benchmark runs once per disk backend (io_uring and
//! portable). The harness is hand-rolled (`harness = false`): each figure is
//! the median of several repetitions, and a markdown table is printed at the
//! end.
//!
//! ```text
//! cargo bench --bench engine                      # everything, N = 1_000_000 keys
//! cargo bench --bench engine -- get               # only groups whose id contains "get"
//! cargo bench --bench engine -- flush/uring       # one group, one backend
//! EMDB_BENCH_N=200000 cargo bench --bench engine  # smaller data set
//! ```
//!
//! Group ids (filters match any substring of "<group>/<backend>"):
//!   insert, get, zerocopy, flush, group_commit, reopen, memory
//!
//! Environment:
//!   EMDB_BENCH_N          keys for get/zerocopy/reopen/memory (default 1_000_000)
//!   EMDB_BENCH_REPS       repetitions per figure (default 5; group_commit uses min(reps, 3))
//!   EMDB_BENCH_DIR        parent of the temp dirs (default std::env::temp_dir())
//!   EMDB_BENCH_PHASE_TIMEOUT_S  a phase that runs longer aborts the run, printing
//!                         what was measured so far (default 240)
//!
//! Records: 24-byte random keys, 150-byte random values (fastrand, fixed
//! seeds). The pwrite baselines write 210-byte frames, the size emdb encodes
//! such a record to (36 bytes of frame overhead, src/log/frame.rs, + key + value).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use emdb::{Emdb, FlushPolicy, IoBackend};

#[path = "common/devstat.rs"]
mod devstat;

const KEY_LEN: usize = 24;
const VAL_LEN: usize = 150;
/// Encoded record size: frame header + CRC (36 B, `MIN_FRAME` in src/log/frame.rs) + key + value.
const FRAME_LEN: usize = 36 + KEY_LEN + VAL_LEN;
const HOT_SET: usize = 1000;
const GROUP_THREADS: usize = 32;

const SEED_INSERT: u64 = 0x1115_e127;
const SEED_LOAD: u64 = 0x10ad_0001;
const SEED_FLUSH: u64 = 0xf1f1_0002;
const SEED_GROUP: u64 = 0x6a0e_0003;
const SEED_ACCESS: u64 = 0xacce_0004;
const SEED_MEM: u64 = 0x3e30_0005;

// ---------------------------------------------------------------------------
// configuration, rows, watchdog

struct Cfg {
    n: usize,
    reps: usize,
    parent: PathBuf,
    filters: Vec<String>,
    phase_timeout: Duration,
}

impl Cfg {
    fn selected(&self, id: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| id.contains(f.as_str()))
    }
    fn tempdir(&self) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("emdb-bench-")
            .tempdir_in(&self.parent)
            .expect("create temp dir")
    }
}

#[derive(Clone)]
struct Row {
    order: (u8, u8, u8), // (group letter, sub-row, backend) for sorting
    what: String,
    emdb: String,
    baseline: String,
    ratio: String,
    target: String,
    met: String,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PHASE: Mutex<Option<(String, Instant)>> = Mutex::new(None);
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

fn push_row(r: Row) {
    println!(
        "  => | {} | {} | {} | {} | {} | {} |",
        r.what, r.emdb, r.baseline, r.ratio, r.target, r.met
    );
    ROWS.lock().unwrap().push(r);
}

fn note(s: String) {
    println!("  note: {s}");
    NOTES.lock().unwrap().push(s);
}

fn set_phase(name: &str, timeout: Duration) {
    println!("[{}] {name} (loadavg {})", clock(), loadavg());
    *PHASE.lock().unwrap() = Some((name.to_string(), Instant::now() + timeout));
}

fn clock() -> String {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let s = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    format!("{s:7.1}s")
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn print_table(rows: &[Row]) {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|r| r.order);
    println!();
    println!("ratio = emdb figure / baseline figure (same unit, same process); for timings: the median of the per-repetition ratios, each emdb repetition paired with the baseline repetition run right after it");
    println!();
    println!("| what | emdb | baseline | ratio | target | met? |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.what, r.emdb, r.baseline, r.ratio, r.target, r.met
        );
    }
    let notes = NOTES.lock().map(|n| n.clone()).unwrap_or_default();
    if !notes.is_empty() {
        println!();
        println!("Notes:");
        for n in notes {
            println!("- {n}");
        }
    }
}

fn spawn_watchdog() {
    std::thread::spawn(|| loop {
        std::thread::sleep(Duration::from_millis(500));
        let expired = match PHASE.try_lock() {
            Ok(g) => g
                .as_ref()
                .and_then(|(name, deadline)| (Instant::now() > *deadline).then(|| name.clone())),
            Err(_) => None,
        };
        if let Some(name) = expired {
            let pid = CHILD_PID.load(Ordering::SeqCst);
            if pid > 0 {
                // the child is a process this bench started itself
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            eprintln!("\n!!! TIMEOUT: phase `{name}` exceeded its time budget; aborting the run");
            if let Ok(rows) = ROWS.try_lock() {
                println!("\n(partial results, run aborted in phase `{name}`)");
                print_table(&rows);
            }
            std::process::exit(2);
        }
    });
}

// ---------------------------------------------------------------------------
// data

/// `n` records with random keys and values, stored flat.
struct Data {
    n: usize,
    keys: Vec<u8>,
    vals: Vec<u8>,
}

impl Data {
    fn gen(seed: u64, n: usize) -> Data {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut keys = vec![0u8; n * KEY_LEN];
        let mut vals = vec![0u8; n * VAL_LEN];
        rng.fill(&mut keys);
        rng.fill(&mut vals);
        Data { n, keys, vals }
    }
    #[inline]
    fn key(&self, i: usize) -> &[u8] {
        &self.keys[i * KEY_LEN..(i + 1) * KEY_LEN]
    }
    #[inline]
    fn val(&self, i: usize) -> &[u8] {
        &self.vals[i * VAL_LEN..(i + 1) * VAL_LEN]
    }
    /// FRAME_LEN-byte frames (fake header + key + value + fake CRC), contiguous.
    fn frames(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        let mut out = Vec::with_capacity(range.len() * FRAME_LEN);
        for i in range {
            let mut hdr = [0u8; FRAME_LEN - KEY_LEN - VAL_LEN];
            hdr[..8].copy_from_slice(&(i as u64).to_le_bytes());
            hdr[8..12].copy_from_slice(&(FRAME_LEN as u32).to_le_bytes());
            out.extend_from_slice(&hdr);
            out.extend_from_slice(self.key(i));
            out.extend_from_slice(self.val(i));
        }
        out
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median of the per-repetition ratios a[i] / b[i] (each emdb repetition runs
/// right next to its baseline repetition, so this cancels slow drifts of the
/// machine, e.g. other processes competing for the 2 cores).
fn paired(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&r)
}

fn spread(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v.iter().map(|x| fmt_num(*x)).collect::<Vec<_>>().join(" ")
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn yes(b: bool) -> String {
    if b {
        "yes".into()
    } else {
        "**no**".into()
    }
}

// ---------------------------------------------------------------------------
// backends and helpers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Uring,
    Portable,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Portable => "portable",
        }
    }
    fn io(self) -> IoBackend {
        match self {
            Backend::Uring => IoBackend::Uring,
            Backend::Portable => IoBackend::Portable,
        }
    }
    fn idx(self) -> u8 {
        match self {
            Backend::Uring => 0,
            Backend::Portable => 1,
        }
    }
}

#[allow(unreachable_patterns)]
fn io_name(b: &IoBackend) -> &'static str {
    match b {
        IoBackend::Uring => "uring",
        IoBackend::Portable => "portable",
        IoBackend::Memory => "memory",
        IoBackend::Auto => "auto",
        _ => "other",
    }
}

type R<T> = Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}
impl<T, E: std::fmt::Debug> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e:?}"))
    }
}

fn open_db(dir: &Path, b: Backend, policy: FlushPolicy) -> R<Emdb> {
    let db = Emdb::builder()
        .path(dir)
        .io_backend(b.io())
        .flush_policy(policy)
        .build()
        .ctx(&format!("open {} ({})", dir.display(), b.name()))?;
    let st = db.stats().ctx("stats")?;
    let used = io_name(&st.io_backend);
    if used != b.name() {
        return Err(format!(
            "asked for io_backend {} but stats().io_backend = {used}",
            b.name()
        ));
    }
    Ok(db)
}

/// Field 16 (flush requests completed) of /sys/block/<dev>/stat for the disk
/// holding `dir`, or why it can't be had.
struct DevFlushes {
    stat: Result<PathBuf, String>,
}

impl DevFlushes {
    fn for_dir(dir: &Path) -> DevFlushes {
        DevFlushes {
            stat: devstat::find_dev_stat(dir),
        }
    }
    fn read(&self) -> Option<u64> {
        devstat::read_flushes(self.stat.as_ref().ok()?)
    }
    fn describe(&self) -> String {
        match &self.stat {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("unavailable ({e})"),
        }
    }
    /// Flush requests per second issued by everything else on this disk,
    /// sampled over `ms` while this bench is idle.
    fn background_rate(&self, ms: u64) -> Option<f64> {
        let a = self.read()?;
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        let b = self.read()?;
        Some((b - a) as f64 / t.elapsed().as_secs_f64())
    }
    /// Starts a counting window: samples the background rate first.
    fn start(&self) -> FlushWindow {
        let bg = self.background_rate(250);
        FlushWindow {
            d0: self.read(),
            bg_per_s: bg,
            t: Instant::now(),
        }
    }
}

/// Device flush requests counted over a measured section, corrected for the
/// background rate measured just before it.
struct FlushWindow {
    d0: Option<u64>,
    bg_per_s: Option<f64>,
    t: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Counted {
    raw: u64,
    background: f64,
    /// raw minus the expected background, at least 0
    corrected: f64,
    /// the background is small next to what was counted
    reliable: bool,
}

impl FlushWindow {
    fn end(&self, dev: &DevFlushes) -> Option<Counted> {
        let el = self.t.elapsed().as_secs_f64();
        let d1 = dev.read()?;
        let raw = d1.checked_sub(self.d0?)?;
        let background = self.bg_per_s? * el;
        Some(Counted {
            raw,
            background,
            corrected: (raw as f64 - background).max(0.0),
            reliable: background <= 0.1 * raw as f64 + 2.0,
        })
    }
}

fn count_files(dir: &Path, ext: &str) -> usize {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().map(|x| x == ext).unwrap_or(false))
                .count()
        })
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn load_chunked(db: &Emdb, data: &Data, range: std::ops::Range<usize>) -> R<()> {
    const CHUNK: usize = 10_000;
    let mut i = range.start;
    while i < range.end {
        let end = (i + CHUNK).min(range.end);
        db.insert_many((i..end).map(|j| (data.key(j), data.val(j))))
            .ctx("insert_many")?;
        i = end;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// a. insert without durability vs a pwrite loop

fn bench_insert(cfg: &Cfg, b: Backend) -> R<()> {
    let m = cfg.n.min(250_000);
    let data = Data::gen(SEED_INSERT, m);
    let frames = data.frames(0..m);
    let (mut e_ns, mut e_fl_ns, mut b_ns, mut b_fl_ns) = (vec![], vec![], vec![], vec![]);
    let mut bytes_per_rec = 0.0;
    for rep in 0..cfg.reps {
        // emdb
        let dir = cfg.tempdir();
        let db = open_db(dir.path(), b, FlushPolicy::OnEachFlush)?;
        let t = Instant::now();
        for i in 0..m {
            db.insert(data.key(i), data.val(i)).ctx("insert")?;
        }
        let e = t.elapsed();
        db.flush().ctx("flush")?;
        let e2 = t.elapsed();
        let st = db.stats().ctx("stats")?;
        bytes_per_rec = st.logical_size_bytes as f64 / m as f64;
        if rep == 0 && st.live_records != m as u64 {
            note(format!(
                "insert/{}: live_records = {} after {m} inserts of distinct keys",
                b.name(),
                st.live_records
            ));
        }
        drop(db);
        drop(dir);
        // baseline: pwrite loop appending to a fresh file in the same temp dir
        let dir = cfg.tempdir();
        let f = File::create(dir.path().join("baseline.log")).ctx("create")?;
        let t = Instant::now();
        let mut off = 0u64;
        for i in 0..m {
            f.write_all_at(&frames[i * FRAME_LEN..(i + 1) * FRAME_LEN], off)
                .ctx("pwrite")?;
            off += FRAME_LEN as u64;
        }
        let bl = t.elapsed();
        f.sync_data().ctx("fdatasync")?;
        let bl2 = t.elapsed();
        drop(f);
        drop(dir);
        e_ns.push(e.as_nanos() as f64 / m as f64);
        e_fl_ns.push(e2.as_nanos() as f64 / m as f64);
        b_ns.push(bl.as_nanos() as f64 / m as f64);
        b_fl_ns.push(bl2.as_nanos() as f64 / m as f64);
    }
    println!(
        "  insert/{}: emdb ns/rec [{}], pwrite ns/rec [{}]; incl. final flush: emdb [{}], pwrite+fdatasync [{}]",
        b.name(),
        spread(&e_ns),
        spread(&b_ns),
        spread(&e_fl_ns),
        spread(&b_fl_ns)
    );
    note(format!(
        "insert/{}: {m} inserts per repetition; emdb logical_size_bytes / record = {bytes_per_rec:.1} (baseline frame = {FRAME_LEN} B)",
        b.name()
    ));
    let (e, bl, ratio) = (median(&e_ns), median(&b_ns), paired(&e_ns, &b_ns));
    push_row(Row {
        order: (b'a', 0, b.idx()),
        what: format!(
            "a. insert, no durability, ns/record ({}, {m} recs)",
            b.name()
        ),
        emdb: format!("{} ns", fmt_num(e)),
        baseline: format!("{} ns (pwrite {FRAME_LEN} B append)", fmt_num(bl)),
        ratio: format!("{ratio:.3}"),
        target: "ratio ≤ 0.333 (3x faster)".into(),
        met: yes(ratio <= 1.0 / 3.0),
    });
    let (e2, b2) = (median(&e_fl_ns), median(&b_fl_ns));
    push_row(Row {
        order: (b'a', 1, b.idx()),
        what: format!("a'. same, incl. one final flush() ({}) [info]", b.name()),
        emdb: format!("{} ns", fmt_num(e2)),
        baseline: format!("{} ns (pwrites + 1 fdatasync)", fmt_num(b2)),
        ratio: format!("{:.3}", paired(&e_fl_ns, &b_fl_ns)),
        target: "-".into(),
        met: "-".into(),
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// b/c. hot get and get_zerocopy over N resident keys

struct Fixture {
    dir: tempfile::TempDir,
    db: Option<Emdb>,
}

fn load_fixture(cfg: &Cfg, b: Backend, data: &Data) -> R<Fixture> {
    let dir = cfg.tempdir();
    let db = open_db(dir.path(), b, FlushPolicy::OnEachFlush)?;
    let t = Instant::now();
    load_chunked(&db, data, 0..data.n)?;
    let t_load = t.elapsed();
    db.flush().ctx("flush")?;
    let t_flush = t.elapsed();
    let len = db.len().ctx("len")?;
    println!(
        "  loaded {} records ({}) via insert_many chunks of 10k in {:.2}s (+flush: {:.2}s); len() = {len}; dir = {} MB",
        data.n,
        b.name(),
        t_load.as_secs_f64(),
        t_flush.as_secs_f64(),
        dir_bytes(dir.path()) / 1_000_000
    );
    if len != data.n {
        note(format!(
            "load/{}: len() = {len} after loading {} distinct keys",
            b.name(),
            data.n
        ));
    }
    Ok(Fixture { dir, db: Some(db) })
}

fn check_values(db: &Emdb, data: &Data, b: Backend) -> R<()> {
    let mut rng = fastrand::Rng::with_seed(99);
    let mut bad = 0;
    let mut first = String::new();
    for _ in 0..2000 {
        let i = rng.usize(0..data.n);
        let g = db.get(data.key(i)).ctx("get")?;
        let z = db
            .get_zerocopy(data.key(i))
            .ctx("get_zerocopy")?
            .map(|v| v.to_vec());
        if g.as_deref() != Some(data.val(i)) || z.as_deref() != Some(data.val(i)) {
            bad += 1;
            if first.is_empty() {
                first = format!(
                    "key #{i}: get -> {:?} bytes, get_zerocopy -> {:?} bytes, expected 150 bytes (equal: get {}, zc {})",
                    g.as_ref().map(|v| v.len()),
                    z.as_ref().map(|v| v.len()),
                    g.as_deref() == Some(data.val(i)),
                    z.as_deref() == Some(data.val(i))
                );
            }
        }
    }
    if bad > 0 {
        note(format!(
            "get/{}: {bad}/2000 sampled keys read back wrong; first: {first}",
            b.name()
        ));
    }
    Ok(())
}

/// Lookup sequences. The keys are copied out in access order, so the
/// harness itself reads them sequentially and adds no cache miss of its own
/// to each lookup (for emdb or the baseline).
struct Access {
    random: Vec<u8>,
    hot: Vec<u8>,
}

fn access_patterns(data: &Data) -> Access {
    let n = data.n;
    let lookups = 1_000_000usize.min(n.max(200_000));
    let mut rng = fastrand::Rng::with_seed(SEED_ACCESS);
    let mut random = Vec::with_capacity(lookups * KEY_LEN);
    for _ in 0..lookups {
        random.extend_from_slice(data.key(rng.usize(0..n)));
    }
    let hot_keys: Vec<usize> = (0..HOT_SET.min(n)).map(|_| rng.usize(0..n)).collect();
    let mut hot = Vec::with_capacity(lookups * KEY_LEN);
    for _ in 0..lookups {
        hot.extend_from_slice(data.key(hot_keys[rng.usize(0..hot_keys.len())]));
    }
    Access { random, hot }
}

fn time_per_op(keys: &[u8], mut f: impl FnMut(&[u8])) -> f64 {
    let t = Instant::now();
    for k in keys.chunks_exact(KEY_LEN) {
        f(k);
    }
    t.elapsed().as_nanos() as f64 / (keys.len() / KEY_LEN) as f64
}

fn bench_get(
    cfg: &Cfg,
    b: Backend,
    db: &Emdb,
    data: &Data,
    map: &HashMap<Vec<u8>, Vec<u8>>,
    acc: &Access,
) -> R<()> {
    check_values(db, data, b)?;
    // warm-up: touch every key once (page faults on the mapping, caches)
    let mut miss = 0usize;
    for i in 0..data.n {
        if db.get(data.key(i)).ctx("get")?.is_none() {
            miss += 1;
        }
    }
    if miss > 0 {
        note(format!(
            "get/{}: {miss} of {} loaded keys returned None",
            b.name(),
            data.n
        ));
    }
    let mut err: Option<String> = None;
    let (mut er, mut br, mut eh, mut bh) = (vec![], vec![], vec![], vec![]);
    for _ in 0..cfg.reps {
        er.push(time_per_op(&acc.random, |k| match db.get(k) {
            Ok(v) => {
                black_box(v);
            }
            Err(e) => err = Some(format!("{e:?}")),
        }));
        br.push(time_per_op(&acc.random, |k| {
            black_box(map.get(k).cloned());
        }));
        eh.push(time_per_op(&acc.hot, |k| match db.get(k) {
            Ok(v) => {
                black_box(v);
            }
            Err(e) => err = Some(format!("{e:?}")),
        }));
        bh.push(time_per_op(&acc.hot, |k| {
            black_box(map.get(k).cloned());
        }));
    }
    if let Some(e) = err {
        return Err(format!("get: {e}"));
    }
    println!(
        "  get/{}: random emdb [{}] map [{}]; hot emdb [{}] map [{}] (ns/op)",
        b.name(),
        spread(&er),
        spread(&br),
        spread(&eh),
        spread(&bh)
    );
    for (sub, label, e, bl, ratio) in [
        (
            0u8,
            format!("random keys of {}", data.n),
            median(&er),
            median(&br),
            paired(&er, &br),
        ),
        (
            1,
            format!("hot set of {HOT_SET}"),
            median(&eh),
            median(&bh),
            paired(&eh, &bh),
        ),
    ] {
        push_row(Row {
            order: (b'b', sub, b.idx()),
            what: format!("b. get, {label} ({})", b.name()),
            emdb: format!("{} ns", fmt_num(e)),
            baseline: format!("{} ns (HashMap get+clone)", fmt_num(bl)),
            ratio: format!("{ratio:.2}"),
            target: "emdb < 100 ns".into(),
            met: yes(e < 100.0),
        });
    }
    Ok(())
}

fn bench_zerocopy(
    cfg: &Cfg,
    b: Backend,
    db: &Emdb,
    data: &Data,
    map: &HashMap<Vec<u8>, Vec<u8>>,
    acc: &Access,
) -> R<()> {
    // warm-up
    for i in 0..data.n.min(200_000) {
        black_box(
            db.get_zerocopy(data.key(i))
                .ctx("get_zerocopy")?
                .map(|v| v.len()),
        );
    }
    let mut err: Option<String> = None;
    let (mut er, mut br, mut eh, mut bh) = (vec![], vec![], vec![], vec![]);
    // each lookup reads the value's first byte, as a caller would
    for _ in 0..cfg.reps {
        er.push(time_per_op(&acc.random, |k| match db.get_zerocopy(k) {
            Ok(Some(v)) => {
                black_box(v[0]);
                black_box(&v);
            }
            Ok(None) => {}
            Err(e) => err = Some(format!("{e:?}")),
        }));
        br.push(time_per_op(&acc.random, |k| {
            if let Some(v) = map.get(k) {
                black_box(v[0]);
                black_box(v);
            }
        }));
        eh.push(time_per_op(&acc.hot, |k| match db.get_zerocopy(k) {
            Ok(Some(v)) => {
                black_box(v[0]);
                black_box(&v);
            }
            Ok(None) => {}
            Err(e) => err = Some(format!("{e:?}")),
        }));
        bh.push(time_per_op(&acc.hot, |k| {
            if let Some(v) = map.get(k) {
                black_box(v[0]);
                black_box(v);
            }
        }));
    }
    if let Some(e) = err {
        return Err(format!("get_zerocopy: {e}"));
    }
    println!(
        "  zerocopy/{}: random emdb [{}] map [{}]; hot emdb [{}] map [{}] (ns/op)",
        b.name(),
        spread(&er),
        spread(&br),
        spread(&eh),
        spread(&bh)
    );
    for (sub, label, e, bl, ratio) in [
        (
            0u8,
            format!("random keys of {}", data.n),
            median(&er),
            median(&br),
            paired(&er, &br),
        ),
        (
            1,
            format!("hot set of {HOT_SET}"),
            median(&eh),
            median(&bh),
            paired(&eh, &bh),
        ),
    ] {
        push_row(Row {
            order: (b'c', sub, b.idx()),
            what: format!("c. get_zerocopy, {label} ({})", b.name()),
            emdb: format!("{} ns", fmt_num(e)),
            baseline: format!("{} ns (HashMap get, by ref)", fmt_num(bl)),
            ratio: format!("{ratio:.2}"),
            target: "emdb < 60 ns".into(),
            met: yes(e < 60.0),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// d. one thread: insert + flush() vs pwrite + fdatasync

fn bench_flush(cfg: &Cfg, b: Backend) -> R<()> {
    let iters = 1000usize;
    let warm = 50usize;
    let data = Data::gen(SEED_FLUSH, warm + iters * cfg.reps);
    let frames = data.frames(0..data.n);
    let dir = cfg.tempdir();
    let dev = DevFlushes::for_dir(dir.path());
    let db = open_db(&dir.path().join("db"), b, FlushPolicy::OnEachFlush)?;
    for i in 0..warm {
        db.insert(data.key(i), data.val(i)).ctx("insert")?;
        db.flush().ctx("flush")?;
    }
    // baseline 1: append to a growing file
    let fa = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("baseline-append.log"))
        .ctx("create")?;
    // baseline 2 [info]: overwrite a preallocated file already written with zeros
    let zero_len = (iters * FRAME_LEN) as u64;
    let fz = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.path().join("baseline-prezeroed.log"))
        .ctx("create")?;
    fz.write_all_at(&vec![0u8; zero_len as usize], 0)
        .ctx("zero")?;
    fz.sync_all().ctx("fsync")?;

    let (mut e_us, mut a_us, mut z_us) = (vec![], vec![], vec![]);
    let (mut e_dev, mut a_dev, mut z_dev, mut e_eng) = (vec![], vec![], vec![], vec![]);
    let mut unreliable = false;
    let mut append_off = 0u64;
    for rep in 0..cfg.reps {
        let base = warm + rep * iters;
        // emdb
        let w = dev.start();
        let s0 = db.stats().ctx("stats")?.device_flushes;
        let t = Instant::now();
        for j in 0..iters {
            db.insert(data.key(base + j), data.val(base + j))
                .ctx("insert")?;
            db.flush().ctx("flush")?;
        }
        let e = t.elapsed();
        let c = w.end(&dev);
        let s1 = db.stats().ctx("stats")?.device_flushes;
        e_us.push(e.as_secs_f64() * 1e6 / iters as f64);
        e_eng.push((s1 - s0) as f64 / iters as f64);
        if let Some(c) = c {
            e_dev.push(c.corrected / iters as f64);
            unreliable |= !c.reliable;
        }
        // baseline append
        let w = dev.start();
        let t = Instant::now();
        for j in 0..iters {
            let i = base + j;
            fa.write_all_at(&frames[i * FRAME_LEN..(i + 1) * FRAME_LEN], append_off)
                .ctx("pwrite")?;
            append_off += FRAME_LEN as u64;
            fa.sync_data().ctx("fdatasync")?;
        }
        let bl = t.elapsed();
        let c = w.end(&dev);
        a_us.push(bl.as_secs_f64() * 1e6 / iters as f64);
        if let Some(c) = c {
            a_dev.push(c.corrected / iters as f64);
            unreliable |= !c.reliable;
        }
        // baseline pre-zeroed overwrite
        let w = dev.start();
        let t = Instant::now();
        for j in 0..iters {
            let i = base + j;
            fz.write_all_at(
                &frames[i * FRAME_LEN..(i + 1) * FRAME_LEN],
                (j * FRAME_LEN) as u64,
            )
            .ctx("pwrite")?;
            fz.sync_data().ctx("fdatasync")?;
        }
        z_us.push(t.elapsed().as_secs_f64() * 1e6 / iters as f64);
        if let Some(c) = w.end(&dev) {
            z_dev.push(c.corrected / iters as f64);
            unreliable |= !c.reliable;
        }
    }
    drop(db);
    println!(
        "  flush/{}: emdb us/op [{}], pwrite+fdatasync append [{}], pre-zeroed overwrite [{}]",
        b.name(),
        spread(&e_us),
        spread(&a_us),
        spread(&z_us)
    );
    note(format!(
        "flush/{}: device flush requests (sysfs field 16, background subtracted{}) per operation: emdb insert+flush() {} (engine's own count of fdatasyncs: {}); baseline pwrite+fdatasync appending {}, overwriting a pre-zeroed file {}; sysfs = {}",
        b.name(),
        if unreliable { "; UNRELIABLE, other processes flushed the disk meanwhile" } else { "" },
        fmt_num(median(&e_dev)),
        fmt_num(median(&e_eng)),
        fmt_num(median(&a_dev)),
        fmt_num(median(&z_dev)),
        dev.describe()
    ));
    if e_eng.iter().any(|&x| x < 0.9) || (!unreliable && e_dev.iter().any(|&x| x < 0.9)) {
        note(format!(
            "flush/{}: fewer than one device flush per insert+flush(): sysfs [{}], engine count [{}] per call; flush() may return before the data is on the device",
            b.name(),
            spread(&e_dev),
            spread(&e_eng)
        ));
    }
    let (e, a, z) = (median(&e_us), median(&a_us), median(&z_us));
    let (ra, rz) = (paired(&e_us, &a_us), paired(&e_us, &z_us));
    push_row(Row {
        order: (b'd', 0, b.idx()),
        what: format!("d. insert+flush(), 1 thread, us/op ({})", b.name()),
        emdb: format!("{} us", fmt_num(e)),
        baseline: format!("{} us (pwrite+fdatasync, append)", fmt_num(a)),
        ratio: format!("{ra:.2}"),
        target: "ratio ≤ 1.15".into(),
        met: yes(ra <= 1.15),
    });
    push_row(Row {
        order: (b'd', 1, b.idx()),
        what: format!(
            "d'. same vs overwrite of a pre-zeroed file ({}) [info]",
            b.name()
        ),
        emdb: format!("{} us", fmt_num(e)),
        baseline: format!("{} us (pwrite+fdatasync, pre-zeroed)", fmt_num(z)),
        ratio: format!("{rz:.2}"),
        target: "-".into(),
        met: "-".into(),
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// e. 32 threads, insert + flush() each, FlushPolicy::Group

fn bench_group(cfg: &Cfg, b: Backend) -> R<()> {
    let per_thread = 200usize;
    let reps = cfg.reps.min(3);
    let warm = 5usize;
    let per_rep = GROUP_THREADS * per_thread;
    let data = Data::gen(SEED_GROUP, GROUP_THREADS * warm + per_rep * reps);
    let frames = data.frames(0..data.n);
    let dir = cfg.tempdir();
    let dev = DevFlushes::for_dir(dir.path());
    let have_dev = dev.read().is_some();
    if !have_dev {
        note(format!(
            "group_commit/{}: field 16 of /sys/block/<dev>/stat unavailable: {}; using stats().device_flushes instead",
            b.name(),
            dev.describe()
        ));
    }
    let db = open_db(&dir.path().join("db"), b, FlushPolicy::Group)?;
    // warm-up
    run_threads(GROUP_THREADS, |t| {
        for j in 0..warm {
            let i = t * warm + j;
            db.insert(data.key(i), data.val(i)).ctx("insert")?;
            db.flush().ctx("flush")?;
        }
        Ok(())
    })?;
    let start = GROUP_THREADS * warm;

    let (mut e_rpf_dev, mut e_rpf_eng, mut e_rate) = (vec![], vec![], vec![]);
    let (mut b_rpf_dev, mut b_rate) = (vec![], vec![]);
    let base_file = File::create(dir.path().join("baseline.log")).ctx("create")?;
    let base_off = AtomicU64::new(0);
    let mut last_stats = None;
    let mut zero_flush_reps = 0;
    let mut sysfs_ok = have_dev;
    for rep in 0..reps {
        let base = start + rep * per_rep;
        // emdb
        let w = dev.start();
        let st0 = db.stats().ctx("stats")?;
        let t = Instant::now();
        run_threads(GROUP_THREADS, |th| {
            for j in 0..per_thread {
                let i = base + th * per_thread + j;
                db.insert(data.key(i), data.val(i)).ctx("insert")?;
                db.flush().ctx("flush")?;
            }
            Ok(())
        })?;
        let el = t.elapsed();
        let st1 = db.stats().ctx("stats")?;
        let c = w.end(&dev);
        let eng = st1.device_flushes.saturating_sub(st0.device_flushes);
        e_rpf_eng.push(per_rep as f64 / eng.max(1) as f64);
        if let Some(c) = c {
            if c.raw == 0 {
                zero_flush_reps += 1;
            }
            sysfs_ok &= c.reliable;
            e_rpf_dev.push(per_rep as f64 / c.corrected.max(1.0));
        }
        if eng == 0 {
            zero_flush_reps += 1;
        }
        e_rate.push(per_rep as f64 / el.as_secs_f64());
        println!(
            "  group_commit/{} rep {rep}: {per_rep} records in {:.3}s; device flushes: sysfs {}, engine {eng}; durable_records +{}",
            b.name(),
            el.as_secs_f64(),
            c.map(|c| format!(
                "{} counted - {:.0} background = {:.0}{}",
                c.raw,
                c.background,
                c.corrected,
                if c.reliable { "" } else { " (UNRELIABLE)" }
            ))
            .unwrap_or_else(|| "n/a".into()),
            st1.durable_records.saturating_sub(st0.durable_records)
        );
        last_stats = Some(st1);
        // baseline: the same 32 threads doing pwrite + fdatasync on one shared file
        let w = dev.start();
        let t = Instant::now();
        run_threads(GROUP_THREADS, |th| {
            for j in 0..per_thread {
                let i = base + th * per_thread + j;
                let off = base_off.fetch_add(FRAME_LEN as u64, Ordering::SeqCst);
                base_file
                    .write_all_at(&frames[i * FRAME_LEN..(i + 1) * FRAME_LEN], off)
                    .ctx("pwrite")?;
                base_file.sync_data().ctx("fdatasync")?;
            }
            Ok(())
        })?;
        let el = t.elapsed();
        let c = w.end(&dev);
        b_rate.push(per_rep as f64 / el.as_secs_f64());
        if let Some(c) = c {
            sysfs_ok &= c.reliable;
            b_rpf_dev.push(per_rep as f64 / c.corrected.max(1.0));
        }
    }
    let st = last_stats.unwrap();
    drop(db);
    let (rpf, base_rpf, src) = if sysfs_ok {
        (
            median(&e_rpf_dev),
            median(&b_rpf_dev),
            "sysfs field 16".to_string(),
        )
    } else {
        if have_dev {
            note(format!(
                "group_commit/{}: other processes flushed the disk during the measurement (background subtracted, still > 10% of the count): sysfs records/flush emdb [{}], baseline [{}] are unreliable; the table uses stats().device_flushes",
                b.name(),
                spread(&e_rpf_dev),
                spread(&b_rpf_dev)
            ));
        }
        // the baseline issues exactly one fdatasync per record
        (
            median(&e_rpf_eng),
            1.0,
            "fdatasyncs counted by stats().device_flushes (fallback)".to_string(),
        )
    };
    note(format!(
        "group_commit/{}: {GROUP_THREADS} threads x {per_thread} insert+flush() per repetition, {reps} repetitions; sysfs = {}; records/flush per rep: sysfs [{}], engine count [{}]; cumulative stats(): device_flushes {}, durable_records {}, records_per_flush {:.2}",
        b.name(),
        dev.describe(),
        spread(&e_rpf_dev),
        spread(&e_rpf_eng),
        st.device_flushes,
        st.durable_records,
        st.records_per_flush
    ));
    if zero_flush_reps > 0 {
        note(format!(
            "group_commit/{}: {zero_flush_reps} repetition counter(s) saw NO device flush for {per_rep} insert+flush() calls: flush() returned without flushing the device",
            b.name()
        ));
    }
    push_row(Row {
        order: (b'e', 0, b.idx()),
        what: format!(
            "e. {GROUP_THREADS} threads insert+flush(), records per device flush, {src} ({})",
            b.name()
        ),
        emdb: fmt_num(rpf),
        baseline: format!(
            "{} (32 threads pwrite+fdatasync{})",
            fmt_num(base_rpf),
            if sysfs_ok {
                ""
            } else {
                ", 1 fdatasync per record"
            }
        ),
        ratio: format!("{:.2}", rpf / base_rpf),
        target: "emdb ≥ 16".into(),
        met: if zero_flush_reps > 0 {
            "**no** (no device flush seen)".into()
        } else {
            yes(rpf >= 16.0)
        },
    });
    push_row(Row {
        order: (b'e', 1, b.idx()),
        what: format!(
            "e'. same, stats().records_per_flush (cumulative) ({})",
            b.name()
        ),
        emdb: format!("{:.2}", st.records_per_flush),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "≥ 16 [info]".into(),
        met: yes(st.records_per_flush >= 16.0),
    });
    let (er, br) = (median(&e_rate), median(&b_rate));
    push_row(Row {
        order: (b'e', 2, b.idx()),
        what: format!("e''. same, throughput records/s ({}) [info]", b.name()),
        emdb: fmt_num(er),
        baseline: format!("{} (32 threads pwrite+fdatasync)", fmt_num(br)),
        ratio: format!("{:.2}", paired(&e_rate, &b_rate)),
        target: "-".into(),
        met: "-".into(),
    });
    Ok(())
}

fn run_threads<F>(n: usize, f: F) -> R<()>
where
    F: Fn(usize) -> R<()> + Sync,
{
    let barrier = Barrier::new(n);
    let results: Vec<R<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|t| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    f(t)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    results.into_iter().collect()
}

// ---------------------------------------------------------------------------
// f. reopen after checkpoint vs full replay

fn remove_hints(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().extension().map(|x| x == "hint").unwrap_or(false)
                && fs::remove_file(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

fn timed_open(path: &Path, b: Backend, data: &Data, probe: usize) -> R<(f64, usize, bool)> {
    let t = Instant::now();
    let db = open_db(path, b, FlushPolicy::OnEachFlush)?;
    let len = db.len().ctx("len")?;
    let ok = db.get(data.key(probe)).ctx("get")?.as_deref() == Some(data.val(probe));
    let el = t.elapsed().as_secs_f64();
    drop(db);
    Ok((el, len, ok))
}

fn bench_reopen(cfg: &Cfg, b: Backend, fx: &mut Fixture, data: &Data) -> R<()> {
    let db = fx.db.take().ok_or("fixture db already taken")?;
    let t = Instant::now();
    db.checkpoint().ctx("checkpoint")?;
    let t_ck = t.elapsed();
    let t = Instant::now();
    drop(db);
    let t_drop = t.elapsed();
    let orig = fx.dir.path();
    let hints = count_files(orig, "hint");
    let segs = count_files(orig, "seg");
    note(format!(
        "reopen/{}: checkpoint() {:.2}s, drop {:.2}s; {segs} .seg and {hints} .hint files",
        b.name(),
        t_ck.as_secs_f64(),
        t_drop.as_secs_f64()
    ));
    if hints == 0 {
        note(format!(
            "reopen/{}: checkpoint() left no *.hint files in {}",
            b.name(),
            orig.display()
        ));
    }
    // the copy: every file but LOCK, then no hint files
    let copy = cfg.tempdir();
    for e in fs::read_dir(orig).ctx("read_dir")?.flatten() {
        let name = e.file_name();
        if name == "LOCK" || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        fs::copy(e.path(), copy.path().join(&name)).ctx("copy")?;
    }
    remove_hints(copy.path());
    let mut rng = fastrand::Rng::with_seed(3);
    let (mut th, mut tr) = (vec![], vec![]);
    let mut problems = vec![];
    for rep in 0..cfg.reps {
        let probe = rng.usize(0..data.n);
        let (el, len, ok) = timed_open(orig, b, data, probe)?;
        th.push(el);
        if len != data.n || !ok {
            problems.push(format!("rep {rep} with hints: len {len}, probe ok {ok}"));
        }
        remove_hints(copy.path()); // dropping the previous replay may have written some
        let (el, len, ok) = timed_open(copy.path(), b, data, probe)?;
        tr.push(el);
        if len != data.n || !ok {
            problems.push(format!("rep {rep} full replay: len {len}, probe ok {ok}"));
        }
    }
    if !problems.is_empty() {
        note(format!(
            "reopen/{}: wrong contents after reopen: {}",
            b.name(),
            problems.join("; ")
        ));
    }
    println!(
        "  reopen/{}: with hints [{}] s, full replay [{}] s (open + len() + one get)",
        b.name(),
        spread(&th),
        spread(&tr)
    );
    let (h, r, ratio) = (median(&th), median(&tr), paired(&th, &tr));
    push_row(Row {
        order: (b'f', 0, b.idx()),
        what: format!(
            "f. reopen {} records after checkpoint(), ms ({})",
            data.n,
            b.name()
        ),
        emdb: format!("{} ms", fmt_num(h * 1e3)),
        baseline: format!("{} ms (same db, *.hint deleted)", fmt_num(r * 1e3)),
        ratio: format!("{ratio:.3}"),
        target: "ratio ≤ 0.20".into(),
        met: yes(ratio <= 0.2),
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// g. memory per live key (child processes)

fn status_kb(field: &str) -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs in a child process: `--emdb-child-mem <uring|portable|hashmap> <n> <dir>`.
/// Prints `EMDB_MEM <anon_before_kb> <anon_after_kb> <file_after_kb> <len>`.
fn child_mem(args: &[String]) -> R<()> {
    let kind = args.first().ok_or("kind")?.as_str();
    let n: usize = args.get(1).ok_or("n")?.parse().ctx("n")?;
    let parent = PathBuf::from(args.get(2).ok_or("dir")?);
    const CHUNK: usize = 10_000;
    let mut rng = fastrand::Rng::with_seed(SEED_MEM);
    let mut kbuf = vec![0u8; CHUNK * KEY_LEN];
    let mut vbuf = vec![0u8; CHUNK * VAL_LEN];
    let dir = tempfile::Builder::new()
        .prefix("emdb-bench-mem-")
        .tempdir_in(parent)
        .ctx("tempdir")?;
    match kind {
        "uring" | "portable" => {
            let b = if kind == "uring" {
                Backend::Uring
            } else {
                Backend::Portable
            };
            let db = open_db(dir.path(), b, FlushPolicy::OnEachFlush)?;
            trim();
            let a0 = status_kb("RssAnon:");
            let mut i = 0;
            while i < n {
                let c = CHUNK.min(n - i);
                rng.fill(&mut kbuf);
                rng.fill(&mut vbuf);
                db.insert_many((0..c).map(|j| {
                    (
                        &kbuf[j * KEY_LEN..(j + 1) * KEY_LEN],
                        &vbuf[j * VAL_LEN..(j + 1) * VAL_LEN],
                    )
                }))
                .ctx("insert_many")?;
                i += c;
            }
            db.flush().ctx("flush")?;
            std::thread::sleep(Duration::from_millis(200));
            trim();
            let a1 = status_kb("RssAnon:");
            let f1 = status_kb("RssFile:");
            let len = db.len().ctx("len")?;
            println!("EMDB_MEM {a0} {a1} {f1} {len}");
            drop(db);
        }
        "hashmap" => {
            // a naive keydir: key -> u64 location
            trim();
            let a0 = status_kb("RssAnon:");
            let mut m: HashMap<Vec<u8>, u64> = HashMap::new();
            let mut i = 0;
            while i < n {
                let c = CHUNK.min(n - i);
                rng.fill(&mut kbuf);
                rng.fill(&mut vbuf);
                for j in 0..c {
                    m.insert(
                        kbuf[j * KEY_LEN..(j + 1) * KEY_LEN].to_vec(),
                        ((i + j) * FRAME_LEN) as u64,
                    );
                }
                i += c;
            }
            trim();
            let a1 = status_kb("RssAnon:");
            let f1 = status_kb("RssFile:");
            println!("EMDB_MEM {a0} {a1} {f1} {}", m.len());
            black_box(&m);
        }
        _ => return Err(format!("unknown kind {kind}")),
    }
    Ok(())
}

struct MemResult {
    bytes_per_key: f64,
    anon_delta_kb: u64,
    file_kb: u64,
    len: usize,
}

fn run_child_mem(cfg: &Cfg, kind: &str) -> R<MemResult> {
    let exe = std::env::current_exe().ctx("current_exe")?;
    let child = Command::new(exe)
        .arg("--emdb-child-mem")
        .arg(kind)
        .arg(cfg.n.to_string())
        .arg(&cfg.parent)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ctx("spawn child")?;
    CHILD_PID.store(child.id() as i32, Ordering::SeqCst);
    let out = child.wait_with_output().ctx("wait child")?;
    CHILD_PID.store(0, Ordering::SeqCst);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("EMDB_MEM "))
        .ok_or_else(|| {
            format!(
                "child {kind} failed ({}): {}{}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() != 4 {
        return Err(format!("bad child line {line}"));
    }
    let delta = f[1].saturating_sub(f[0]);
    Ok(MemResult {
        bytes_per_key: delta as f64 * 1024.0 / cfg.n as f64,
        anon_delta_kb: delta,
        file_kb: f[2],
        len: f[3] as usize,
    })
}

fn bench_memory(cfg: &Cfg, backends: &[Backend]) -> R<()> {
    let base = run_child_mem(cfg, "hashmap")?;
    println!(
        "  memory/hashmap: RssAnon +{} kB for {} keys = {:.1} B/key",
        base.anon_delta_kb, base.len, base.bytes_per_key
    );
    for &b in backends {
        set_phase(&format!("memory/{}", b.name()), cfg.phase_timeout);
        let m = match run_child_mem(cfg, b.name()) {
            Ok(m) => m,
            Err(e) => {
                error_row(b'g', b, &format!("memory/{}", b.name()), &e);
                continue;
            }
        };
        println!(
            "  memory/{}: RssAnon +{} kB for {} keys = {:.1} B/key; RssFile after = {} kB; len() = {}",
            b.name(),
            m.anon_delta_kb,
            cfg.n,
            m.bytes_per_key,
            m.file_kb,
            m.len
        );
        if m.len != cfg.n {
            note(format!(
                "memory/{}: len() = {} after loading {} keys",
                b.name(),
                m.len,
                cfg.n
            ));
        }
        push_row(Row {
            order: (b'g', 0, b.idx()),
            what: format!(
                "g. memory per live key, RssAnon delta after load+flush of {} keys ({})",
                cfg.n,
                b.name()
            ),
            emdb: format!("{:.1} B", m.bytes_per_key),
            baseline: format!("{:.1} B (HashMap<Vec<u8>,u64>)", base.bytes_per_key),
            ratio: format!("{:.2}", m.bytes_per_key / base.bytes_per_key),
            target: "emdb ≤ 40 B".into(),
            met: yes(m.bytes_per_key <= 40.0),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn error_row(group: u8, b: Backend, id: &str, e: &str) {
    eprintln!("  ERROR in {id}: {e}");
    push_row(Row {
        order: (group, 9, b.idx()),
        what: format!("{}. {id}", group as char),
        emdb: format!("ERROR: {}", e.replace('|', "/").replace('\n', " ")),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "-".into(),
        met: "**no**".into(),
    });
}

/// Runs one group, turning errors and panics into table rows.
fn guarded(cfg: &Cfg, group: u8, b: Backend, id: &str, f: impl FnOnce() -> R<()>) {
    set_phase(id, cfg.phase_timeout);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error_row(group, b, id, &e),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            error_row(group, b, id, &format!("PANIC: {msg}"));
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .first()
        .map(|a| a == "--emdb-child-mem")
        .unwrap_or(false)
    {
        if let Err(e) = child_mem(&args[1..]) {
            eprintln!("child error: {e}");
            std::process::exit(1);
        }
        return;
    }
    let cfg = Cfg {
        n: env_usize("EMDB_BENCH_N", 1_000_000).max(1000),
        reps: env_usize("EMDB_BENCH_REPS", 5).max(1),
        parent: std::env::var_os("EMDB_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
        filters: args.into_iter().filter(|a| !a.starts_with("--")).collect(),
        phase_timeout: Duration::from_secs(env_usize("EMDB_BENCH_PHASE_TIMEOUT_S", 240) as u64),
    };
    clock();
    spawn_watchdog();
    let dev = DevFlushes::for_dir(&cfg.parent);
    let bg = dev.background_rate(1000);
    println!(
        "emdb engine bench: N = {}, reps = {}, temp parent = {} (device stat: {}), filters = {:?}, cpus = {}",
        cfg.n,
        cfg.reps,
        cfg.parent.display(),
        dev.describe(),
        cfg.filters,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "machine: loadavg {}; background device flush requests: {}",
        loadavg(),
        bg.map(|r| format!("{r:.1}/s"))
            .unwrap_or_else(|| "n/a".into())
    );
    if bg.map(|r| r > 5.0).unwrap_or(false) {
        println!("WARNING: other processes are flushing the disk; sysfs flush counts will be corrected for that rate, and figures that stay unreliable say so");
    }
    let backends = [Backend::Uring, Backend::Portable];
    let any = |g: &str| {
        backends
            .iter()
            .any(|b| cfg.selected(&format!("{g}/{}", b.name())))
    };

    // shared data and baseline map for get/zerocopy/reopen
    let need_fixture = any("get") || any("zerocopy") || any("reopen");
    let data = if need_fixture {
        set_phase("generate data", cfg.phase_timeout);
        Some(Data::gen(SEED_LOAD, cfg.n))
    } else {
        None
    };
    let mut map: Option<HashMap<Vec<u8>, Vec<u8>>> = None;
    let acc = match &data {
        Some(d) if any("get") || any("zerocopy") => Some(access_patterns(d)),
        _ => None,
    };

    for b in backends {
        let id = |g: &str| format!("{g}/{}", b.name());
        if cfg.selected(&id("insert")) {
            guarded(&cfg, b'a', b, &id("insert"), || bench_insert(&cfg, b));
        }
        if cfg.selected(&id("flush")) {
            guarded(&cfg, b'd', b, &id("flush"), || bench_flush(&cfg, b));
        }
        if cfg.selected(&id("group_commit")) {
            guarded(&cfg, b'e', b, &id("group_commit"), || bench_group(&cfg, b));
        }
        let (sg, sz, sr) = (
            cfg.selected(&id("get")),
            cfg.selected(&id("zerocopy")),
            cfg.selected(&id("reopen")),
        );
        if sg || sz || sr {
            let data = data.as_ref().unwrap();
            set_phase(&id("load"), cfg.phase_timeout);
            let mut fx = match catch_unwind(AssertUnwindSafe(|| load_fixture(&cfg, b, data))) {
                Ok(Ok(fx)) => fx,
                Ok(Err(e)) => {
                    error_row(b'b', b, &id("load"), &e);
                    continue;
                }
                Err(_) => {
                    error_row(b'b', b, &id("load"), "PANIC while loading");
                    continue;
                }
            };
            if (sg || sz) && map.is_none() {
                set_phase("build HashMap baseline", cfg.phase_timeout);
                let mut m = HashMap::with_capacity(data.n);
                for i in 0..data.n {
                    m.insert(data.key(i).to_vec(), data.val(i).to_vec());
                }
                map = Some(m);
            }
            if sg {
                let db = fx.db.as_ref().unwrap();
                guarded(&cfg, b'b', b, &id("get"), || {
                    bench_get(
                        &cfg,
                        b,
                        db,
                        data,
                        map.as_ref().unwrap(),
                        acc.as_ref().unwrap(),
                    )
                });
            }
            if sz {
                let db = fx.db.as_ref().unwrap();
                guarded(&cfg, b'c', b, &id("zerocopy"), || {
                    bench_zerocopy(
                        &cfg,
                        b,
                        db,
                        data,
                        map.as_ref().unwrap(),
                        acc.as_ref().unwrap(),
                    )
                });
            }
            if sr {
                guarded(&cfg, b'f', b, &id("reopen"), || {
                    bench_reopen(&cfg, b, &mut fx, data)
                });
            }
            set_phase(&id("cleanup"), cfg.phase_timeout);
            drop(fx);
        }
    }
    drop(map);
    drop(data);

    let mem_backends: Vec<Backend> = backends
        .iter()
        .copied()
        .filter(|b| cfg.selected(&format!("memory/{}", b.name())))
        .collect();
    if !mem_backends.is_empty() {
        guarded(&cfg, b'g', Backend::Uring, "memory", || {
            bench_memory(&cfg, &mem_backends)
        });
    }

    *PHASE.lock().unwrap() = None;
    println!(
        "\nfinished in {}; loadavg at the end: {}",
        clock().trim(),
        loadavg()
    );
    print_table(&ROWS.lock().unwrap());
}
