//! Recovery from damaged files: torn and truncated segments, flipped and
//! overwritten bytes, batches cut in the middle, missing, damaged and stale
//! hint files, and a damaged MANIFEST.
//!
//! What may come back (ARCHITECTURE.md, Invariants 2, 3, 4, 7):
//! - never a panic or a crash, never bytes that were not written as that key's value;
//! - a tail cut off a shard's log leaves a prefix of that shard's writes, in order;
//! - damage before the last record is reported as `Error::Corrupted`, not skipped;
//! - a batch is all there or not there.
//!
//! The sweeps run in a child process (this binary re-executed for one test) so
//! that a crash such as SIGBUS on a truncated mapping fails that one test with
//! the case that caused it, instead of killing the whole test binary.
//!
//! Knobs: `EMDB_RECOVERY_STEP=<n>` forces the offset step of every sweep
//! (1 = every offset); `EMDB_IO_BACKEND=uring|portable` picks the backend.

use emdb::{Emdb, EmdbBuilder, Error};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

// ---------------------------------------------------------------------------
// Isolation in a child process

const ISOLATED_ENV: &str = "EMDB_RECOVERY_ISOLATED";

/// Runs `body` in a re-executed copy of this test binary and asserts it
/// finished cleanly. Its stderr (case summaries) is forwarded.
fn isolated(name: &str, body: impl FnOnce()) {
    if std::env::var(ISOLATED_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().expect("current_exe"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ISOLATED_ENV, name)
        .stdin(Stdio::null())
        .output()
        .expect("spawn isolated child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("sweep ") || l.starts_with("note "))
        .collect();
    eprintln!(
        "{name}: {:.1} s in child, {}\n{}",
        start.elapsed().as_secs_f64(),
        out.status,
        summary.join("\n")
    );
    if !out.status.success() {
        // From the child's first panic (the violation list), else the tail.
        let excerpt = |s: &str| -> String {
            let lines: Vec<&str> = s.lines().collect();
            let from = lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .unwrap_or(lines.len().saturating_sub(60));
            lines[from..lines.len().min(from + 60)].join("\n")
        };
        panic!(
            "{name} failed in its child process ({:?}).\n--- child stderr ---\n{}\n--- child stdout ---\n{}",
            out.status,
            excerpt(&stderr),
            excerpt(&stdout)
        );
    }
}

// ---------------------------------------------------------------------------
// Fixtures: a database built from a known list of operations

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Batch(Vec<(Vec<u8>, Vec<u8>)>),
}

struct Fixture {
    dir: PathBuf,
    shards: usize,
    segment_size: u64,
    ops: Vec<Op>,
    /// `states[p]` is the database after the first `p` operations.
    states: Vec<Map>,
    keys: BTreeSet<Vec<u8>>,
    written: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
}

impl Fixture {
    fn full(&self) -> &Map {
        self.states.last().expect("states")
    }
    fn builder(&self, dir: &Path) -> EmdbBuilder {
        limits(
            Emdb::builder()
                .path(dir)
                .shards(self.shards)
                .segment_size(self.segment_size),
        )
    }
}

/// Key and value limits small enough for 4 KiB segments (the engine refuses a
/// segment_size that cannot hold the largest frame the limits allow).
fn limits(b: EmdbBuilder) -> EmdbBuilder {
    b.max_key_len(64).max_value_len(1024)
}

fn apply(db: &Emdb, op: &Op) {
    match op {
        Op::Insert(k, v) => db.insert(k.clone(), v.clone()).expect("fixture insert"),
        Op::Remove(k) => {
            db.remove(k).expect("fixture remove");
        }
        Op::Batch(items) => db.insert_many(items.clone()).expect("fixture insert_many"),
    }
}

fn model_after(ops: &[Op]) -> Vec<Map> {
    let mut states = vec![Map::new()];
    let mut m = Map::new();
    for op in ops {
        match op {
            Op::Insert(k, v) => {
                m.insert(k.clone(), v.clone());
            }
            Op::Remove(k) => {
                m.remove(k);
            }
            Op::Batch(items) => {
                for (k, v) in items {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        states.push(m.clone());
    }
    states
}

/// The fixture's model, for a database that `ops` were (or will be) applied to.
fn describe(dir: PathBuf, shards: usize, segment_size: u64, ops: Vec<Op>) -> Fixture {
    let states = model_after(&ops);
    let mut keys = BTreeSet::new();
    let mut written: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    for op in &ops {
        match op {
            Op::Insert(k, v) => {
                keys.insert(k.clone());
                written.entry(k.clone()).or_default().insert(v.clone());
            }
            Op::Remove(k) => {
                keys.insert(k.clone());
            }
            Op::Batch(items) => {
                for (k, v) in items {
                    keys.insert(k.clone());
                    written.entry(k.clone()).or_default().insert(v.clone());
                }
            }
        }
    }
    Fixture {
        dir,
        shards,
        segment_size,
        ops,
        states,
        keys,
        written,
    }
}

/// Builds a database from `ops`, flushes and closes it.
fn make_fixture(dir: PathBuf, shards: usize, segment_size: u64, ops: Vec<Op>) -> Fixture {
    let fx = describe(dir, shards, segment_size, ops);
    let db = fx.builder(&fx.dir).build().expect("build fixture database");
    for op in &fx.ops {
        apply(&db, op);
    }
    db.flush().expect("flush fixture");
    drop(db);
    fx
}

/// A value that occurs once in the whole database (so it can be found in a file).
fn unique_value(rng: &mut fastrand::Rng, tag: &str, min: usize, max: usize) -> Vec<u8> {
    let mut v = format!("<{tag}>").into_bytes();
    let n = rng.usize(min..=max);
    v.extend((0..n).map(|_| rng.lowercase() as u8));
    v
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:02}").into_bytes()
}

/// About 40 records for one shard: inserts, overwrites, removes and two
/// batches, ending with two plain inserts.
fn small_ops(seed: u64, min_len: usize, max_len: usize) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0usize;
    let mut val = |rng: &mut fastrand::Rng| {
        n += 1;
        unique_value(rng, &format!("v{n:03}"), min_len, max_len)
    };
    let mut ops = Vec::new();
    for i in 0..28 {
        ops.push(Op::Insert(key(i), val(&mut rng)));
    }
    ops.push(Op::Batch(vec![
        (key(28), val(&mut rng)),
        (key(29), val(&mut rng)),
        (key(30), val(&mut rng)),
        (key(3), val(&mut rng)),
    ]));
    ops.push(Op::Insert(key(5), val(&mut rng)));
    ops.push(Op::Remove(key(7)));
    ops.push(Op::Insert(key(31), val(&mut rng)));
    ops.push(Op::Remove(key(10)));
    ops.push(Op::Insert(key(12), val(&mut rng)));
    ops.push(Op::Batch(vec![
        (key(32), val(&mut rng)),
        (key(10), val(&mut rng)),
    ]));
    ops.push(Op::Insert(key(33), val(&mut rng)));
    ops.push(Op::Insert(key(34), val(&mut rng)));
    ops
}

// ---------------------------------------------------------------------------
// Files

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Clone, Debug)]
struct SegInfo {
    name: String,
    shard: Option<u32>,
    len: u64,
    /// One past the last non-zero byte.
    data_end: u64,
    bytes: Vec<u8>,
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().map(|x| x == ext).unwrap_or(false))
        .collect();
    v.sort();
    v
}

fn segments(dir: &Path) -> Vec<SegInfo> {
    files_with_ext(dir, "seg")
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).expect("read segment");
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            let data_end = bytes
                .iter()
                .rposition(|b| *b != 0)
                .map(|i| i as u64 + 1)
                .unwrap_or(0);
            let shard = name.get(0..3).and_then(|s| s.parse().ok());
            SegInfo {
                name,
                shard,
                len: bytes.len() as u64,
                data_end,
                bytes,
            }
        })
        .collect()
}

#[derive(Clone)]
enum Hints {
    /// Copy no hint files: recovery replays the segments.
    Drop,
    /// Copy the hint files the fixture has (written at its last checkpoint/close).
    Keep,
}

fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) {
    fs::create_dir_all(to).expect("create dir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let p = e.path();
        if skip(&p) {
            continue;
        }
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&p, &dest, skip);
        } else {
            fs::copy(&p, &dest).expect("copy file");
        }
    }
}

/// Lays a fresh copy of the fixture at `work`, without the LOCK file.
fn restore(fx: &Fixture, work: &Path, hints: &Hints) {
    if work.exists() {
        fs::remove_dir_all(work).expect("remove work dir");
    }
    let is_hint = |p: &Path| p.extension().map(|x| x == "hint").unwrap_or(false);
    let is_lock = |p: &Path| p.file_name().map(|n| n == "LOCK").unwrap_or(false);
    match hints {
        Hints::Keep => copy_tree(&fx.dir, work, &|p| is_lock(p)),
        Hints::Drop => copy_tree(&fx.dir, work, &|p| is_lock(p) || is_hint(p)),
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate(u64),
    /// Zeroes every byte from the offset to the end of the file's data: a torn
    /// write into preallocated space.
    ZeroFrom(u64),
    FlipBit(u64, u8),
    SetByte(u64, u8),
    /// Replaces the whole file with pseudo-random bytes of the same length.
    Garbage,
    AppendGarbage,
    Delete,
}

fn damage(path: &Path, d: Damage) {
    match d {
        Damage::Truncate(o) => {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open for truncate");
            f.set_len(o).expect("truncate");
        }
        Damage::ZeroFrom(o) => {
            let mut b = fs::read(path).expect("read");
            let end = b.iter().rposition(|x| *x != 0).map(|i| i + 1).unwrap_or(0);
            for x in b.iter_mut().take(end).skip(o as usize) {
                *x = 0;
            }
            fs::write(path, b).expect("write");
        }
        Damage::FlipBit(o, bit) => {
            let mut b = fs::read(path).expect("read");
            b[o as usize] ^= 1 << bit;
            fs::write(path, b).expect("write");
        }
        Damage::SetByte(o, v) => {
            let mut b = fs::read(path).expect("read");
            b[o as usize] = v;
            fs::write(path, b).expect("write");
        }
        Damage::Garbage => {
            let n = fs::metadata(path).expect("metadata").len() as usize;
            let mut rng = fastrand::Rng::with_seed(n as u64);
            fs::write(path, (0..n).map(|_| rng.u8(..)).collect::<Vec<u8>>()).expect("write");
        }
        Damage::AppendGarbage => {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(path)
                .expect("open for append");
            let mut rng = fastrand::Rng::with_seed(99);
            f.write_all(&(0..97).map(|_| rng.u8(..)).collect::<Vec<u8>>())
                .expect("append");
        }
        Damage::Delete => fs::remove_file(path).expect("delete"),
    }
}

// ---------------------------------------------------------------------------
// Observation and the rules a case must satisfy

struct Observed {
    state: Map,
    read_errors: Vec<(Vec<u8>, Error)>,
    iter: Result<Pairs, Error>,
    len: Result<usize, Error>,
}

enum Outcome {
    OpenErr(Error),
    Opened(Observed),
}

fn observe(fx: &Fixture, dir: &Path) -> Outcome {
    let db = match fx.builder(dir).build() {
        Err(e) => return Outcome::OpenErr(e),
        Ok(db) => db,
    };
    let mut state = Map::new();
    let mut read_errors = Vec::new();
    for k in &fx.keys {
        match db.get(k) {
            Ok(Some(v)) => {
                state.insert(k.clone(), v);
            }
            Ok(None) => {}
            Err(e) => read_errors.push((k.clone(), e)),
        }
    }
    let iter = db.iter().map(|it| it.collect());
    let len = db.len();
    drop(db);
    Outcome::Opened(Observed {
        state,
        read_errors,
        iter,
        len,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OpenErrs {
    /// Only `Error::Corrupted`.
    Corrupted,
    /// `Corrupted`, `MagicMismatch` or `VersionMismatch`.
    Damage,
    /// Any error.
    Any,
    /// None: the database must open.
    None,
}

fn open_err_allowed(k: OpenErrs, e: &Error) -> bool {
    match k {
        OpenErrs::Corrupted => matches!(e, Error::Corrupted { .. }),
        OpenErrs::Damage => matches!(
            e,
            Error::Corrupted { .. } | Error::MagicMismatch | Error::VersionMismatch { .. }
        ),
        OpenErrs::Any => true,
        OpenErrs::None => false,
    }
}

#[derive(Clone, Copy, Debug)]
struct Rules {
    open_errs: OpenErrs,
    /// `Err(Corrupted)` from a read after a successful open is tolerated (the
    /// key then counts as unknown); otherwise any read error is a violation.
    read_errs_ok: bool,
    /// The readable state must equal the state after some prefix of the writes.
    prefix: bool,
    /// A successful open must show the complete state (damage before the last
    /// record must be reported, not skipped).
    require_full: bool,
    /// A `Corrupted` error must name the damaged file.
    corrupted_names_file: bool,
    /// A successful open must keep at least this many writes (what was flushed).
    min_prefix: usize,
}

fn short(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 24 {
        format!("{:?}..", s.chars().take(24).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// Returns the violations of `rules` (empty when the case is fine) and, when
/// the database opened, the prefix lengths its state matches.
fn check(
    fx: &Fixture,
    out: &Outcome,
    rules: &Rules,
    damaged: &str,
) -> (Vec<String>, Option<Vec<usize>>) {
    let mut v = Vec::new();
    match out {
        Outcome::OpenErr(e) => {
            if !open_err_allowed(rules.open_errs, e) {
                v.push(format!(
                    "open returned {e:?}; allowed: {:?}",
                    rules.open_errs
                ));
            }
            if rules.corrupted_names_file {
                if let Error::Corrupted { file, .. } = e {
                    if file
                        .file_name()
                        .map(|n| n.to_string_lossy() != damaged)
                        .unwrap_or(true)
                    {
                        v.push(format!(
                            "Corrupted names {} but {damaged} was damaged",
                            file.display()
                        ));
                    }
                }
            }
            (v, None)
        }
        Outcome::Opened(o) => {
            let err_keys: HashSet<&Vec<u8>> = o.read_errors.iter().map(|(k, _)| k).collect();
            for (k, e) in &o.read_errors {
                if !rules.read_errs_ok || !matches!(e, Error::Corrupted { .. }) {
                    v.push(format!(
                        "get {} returned {e:?} after a successful open",
                        short(k)
                    ));
                }
            }
            // Invariant 2: never bytes that were not written as that key's value.
            for (k, val) in &o.state {
                if !fx.written.get(k).map(|s| s.contains(val)).unwrap_or(false) {
                    v.push(format!(
                        "WRONG VALUE: get {} returned {} never written for it",
                        short(k),
                        short(val)
                    ));
                }
            }
            match &o.iter {
                Err(e) => {
                    if !rules.read_errs_ok || !matches!(e, Error::Corrupted { .. }) {
                        v.push(format!("iter() returned {e:?}"));
                    }
                }
                Ok(pairs) => {
                    let mut seen = Map::new();
                    for (k, val) in pairs {
                        if !fx.keys.contains(k) {
                            v.push(format!(
                                "WRONG KEY: iter yielded {} never written",
                                short(k)
                            ));
                        } else if !fx.written.get(k).map(|s| s.contains(val)).unwrap_or(false) {
                            v.push(format!(
                                "WRONG VALUE: iter yielded {} = {} never written for it",
                                short(k),
                                short(val)
                            ));
                        }
                        if seen.insert(k.clone(), val.clone()).is_some() {
                            v.push(format!("iter yielded {} twice", short(k)));
                        }
                    }
                    for k in &fx.keys {
                        if !err_keys.contains(k) && seen.get(k) != o.state.get(k) {
                            v.push(format!("iter and get disagree on {}", short(k)));
                        }
                    }
                }
            }
            match &o.len {
                Ok(n) if o.read_errors.is_empty() && *n != o.state.len() => v.push(format!(
                    "len() = {n} but {} keys are readable",
                    o.state.len()
                )),
                Err(e) => v.push(format!("len() returned {e:?}")),
                _ => {}
            }
            let prefixes: Vec<usize> = (0..fx.states.len())
                .filter(|p| {
                    fx.keys
                        .iter()
                        .all(|k| err_keys.contains(k) || fx.states[*p].get(k) == o.state.get(k))
                })
                .collect();
            if rules.prefix && prefixes.is_empty() {
                let full = fx.full();
                let missing: Vec<String> = full
                    .keys()
                    .filter(|k| !o.state.contains_key(*k) && !err_keys.contains(k))
                    .map(|k| short(k))
                    .collect();
                let stale: Vec<String> = o
                    .state
                    .iter()
                    .filter(|(k, val)| full.get(*k) != Some(*val))
                    .map(|(k, _)| short(k))
                    .collect();
                v.push(format!(
                    "NOT A PREFIX of the write order: {} keys readable; missing vs final state: [{}]; differing/resurrected: [{}]",
                    o.state.len(),
                    missing.join(","),
                    stale.join(",")
                ));
            }
            if rules.min_prefix > 0
                && !prefixes.is_empty()
                && prefixes.iter().all(|p| *p < rules.min_prefix)
            {
                v.push(format!(
                    "FLUSHED DATA LOST: only the first {} writes survived, {} were flushed",
                    prefixes.last().copied().unwrap_or(0),
                    rules.min_prefix
                ));
            }
            let n = fx.ops.len();
            if rules.require_full && !prefixes.is_empty() && !prefixes.contains(&n) {
                v.push(format!(
                    "SILENT LOSS: damage before the last record opened Ok with only the first {} of {n} writes",
                    prefixes.last().copied().unwrap_or(0)
                ));
            }
            (v, Some(prefixes))
        }
    }
}

struct Report {
    name: String,
    cases: usize,
    ok_full: usize,
    ok_partial: usize,
    read_error_cases: usize,
    errs: BTreeMap<String, usize>,
    violations: Vec<String>,
    n_violations: usize,
    bad_cases: usize,
    start: Instant,
}

impl Report {
    fn new(name: &str) -> Report {
        Report {
            name: name.to_string(),
            cases: 0,
            ok_full: 0,
            ok_partial: 0,
            read_error_cases: 0,
            errs: BTreeMap::new(),
            violations: Vec::new(),
            n_violations: 0,
            bad_cases: 0,
            start: Instant::now(),
        }
    }

    fn record(
        &mut self,
        fx: &Fixture,
        case: &str,
        out: &Outcome,
        found: (Vec<String>, Option<Vec<usize>>),
    ) {
        self.cases += 1;
        match out {
            Outcome::OpenErr(e) => {
                let kind = format!("{e:?}");
                let kind = kind
                    .split([' ', '(', '{'])
                    .next()
                    .unwrap_or("?")
                    .to_string();
                *self.errs.entry(kind).or_default() += 1;
            }
            Outcome::Opened(o) => {
                if !o.read_errors.is_empty() {
                    self.read_error_cases += 1;
                }
                match &found.1 {
                    Some(p) if p.contains(&fx.ops.len()) => self.ok_full += 1,
                    _ => self.ok_partial += 1,
                }
            }
        }
        if !found.0.is_empty() {
            self.bad_cases += 1;
        }
        for msg in found.0 {
            self.n_violations += 1;
            if self.violations.len() < 40 {
                self.violations.push(format!("[{case}] {msg}"));
            }
        }
    }

    fn finish(self) {
        eprintln!(
            "sweep {}: {} cases in {:.1} s: Ok full {}, Ok partial {}, Ok with read errors {}, open errors {:?}, violations {} in {} cases",
            self.name,
            self.cases,
            self.start.elapsed().as_secs_f64(),
            self.ok_full,
            self.ok_partial,
            self.read_error_cases,
            self.errs,
            self.n_violations,
            self.bad_cases
        );
        assert!(self.cases > 0, "{}: no cases ran", self.name);
        assert!(
            self.n_violations == 0,
            "{}: {} of {} cases violated the recovery rules ({} violations; backend env {:?}); first ones:\n{}",
            self.name,
            self.bad_cases,
            self.cases,
            self.n_violations,
            std::env::var("EMDB_IO_BACKEND").ok(),
            self.violations.join("\n")
        );
    }
}

fn step(default: u64) -> u64 {
    std::env::var("EMDB_RECOVERY_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(default)
}

/// Runs `cases` (file name, damage, rules) against fresh copies of the fixture.
fn sweep(
    name: &str,
    fx: &Fixture,
    work: &Path,
    hints: &Hints,
    cases: Vec<(String, Damage, Rules)>,
) {
    let mut report = Report::new(name);
    for (file, d, rules) in cases {
        restore(fx, work, hints);
        damage(&work.join(&file), d);
        let out = observe(fx, work);
        let found = check(fx, &out, &rules, &file);
        report.record(fx, &format!("{file} {d:?}"), &out, found);
    }
    report.finish();
}

fn offsets(lo: u64, hi_inclusive: u64, step: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (lo..=hi_inclusive).step_by(step as usize).collect();
    if v.last() != Some(&hi_inclusive) && hi_inclusive >= lo {
        v.push(hi_inclusive);
    }
    v
}

/// The one-shard, one-segment database of (a) and (b): 64 KiB segments, about
/// 40 records, flushed and closed.
fn small_fixture(root: &Path) -> (Fixture, SegInfo) {
    let fx = make_fixture(root.join("pristine"), 1, 64 * 1024, small_ops(1, 8, 40));
    let segs: Vec<SegInfo> = segments(&fx.dir);
    assert!(!segs.is_empty(), "no *.seg file in {}", fx.dir.display());
    let with_data: Vec<&SegInfo> = segs
        .iter()
        .filter(|s| fx.full().values().any(|v| find(&s.bytes, v).is_some()))
        .collect();
    assert_eq!(
        with_data.len(),
        1,
        "expected all 40 small records in one segment: {segs:?}"
    );
    eprintln!(
        "note fixture: segments {:?}",
        segs.iter()
            .map(|s| format!("{} len {} data_end {}", s.name, s.len, s.data_end))
            .collect::<Vec<_>>()
    );
    let seg = with_data[0].clone();
    (fx, seg)
}

/// Offset of the first record's key or value, and the end of the
/// second-to-last record's value, in a one-shard segment.
fn first_record_and_penultimate_end(fx: &Fixture, seg: &SegInfo) -> (u64, u64) {
    let (k0, v0) = match &fx.ops[0] {
        Op::Insert(k, v) => (k.clone(), v.clone()),
        _ => unreachable!(),
    };
    let first = [find(&seg.bytes, &k0), find(&seg.bytes, &v0)]
        .into_iter()
        .flatten()
        .min()
        .expect("first record in file");
    let pen = match &fx.ops[fx.ops.len() - 2] {
        Op::Insert(_, v) => v.clone(),
        _ => unreachable!(),
    };
    let pen_end = find(&seg.bytes, &pen).expect("penultimate record in file") + pen.len();
    (first as u64, pen_end as u64)
}

// ---------------------------------------------------------------------------
// (a) truncation

#[test]
fn truncated_segment_reopens_to_a_prefix_or_corrupted() {
    isolated("truncated_segment_reopens_to_a_prefix_or_corrupted", || {
        let t = tempfile::tempdir().unwrap();
        let (fx, _) = small_fixture(t.path());
        let rules = Rules {
            open_errs: OpenErrs::Corrupted,
            read_errs_ok: false,
            prefix: true,
            require_full: false,
            corrupted_names_file: true,
            min_prefix: 0,
        };
        let mut cases = Vec::new();
        for s in segments(&fx.dir) {
            for o in offsets(0, s.data_end, step(1)) {
                cases.push((s.name.clone(), Damage::Truncate(o), rules));
            }
        }
        sweep(
            "truncate/no-hints",
            &fx,
            &t.path().join("work"),
            &Hints::Drop,
            cases,
        );
    });
}

#[test]
fn truncated_segment_with_hint_files_never_returns_wrong_values() {
    isolated(
        "truncated_segment_with_hint_files_never_returns_wrong_values",
        || {
            let t = tempfile::tempdir().unwrap();
            let (fx, _) = small_fixture(t.path());
            assert!(
                !files_with_ext(&fx.dir, "hint").is_empty(),
                "closing the database wrote no hint files"
            );
            let rules = Rules {
                open_errs: OpenErrs::Corrupted,
                read_errs_ok: true,
                prefix: true,
                require_full: false,
                corrupted_names_file: false,
                min_prefix: 0,
            };
            let mut cases = Vec::new();
            for s in segments(&fx.dir) {
                for o in offsets(0, s.data_end, step(1)) {
                    cases.push((s.name.clone(), Damage::Truncate(o), rules));
                }
            }
            sweep(
                "truncate/with-hints",
                &fx,
                &t.path().join("work"),
                &Hints::Keep,
                cases,
            );
        },
    );
}

#[test]
fn torn_tail_of_zeros_reopens_to_a_prefix() {
    isolated("torn_tail_of_zeros_reopens_to_a_prefix", || {
        let t = tempfile::tempdir().unwrap();
        let (fx, seg) = small_fixture(t.path());
        let (first, _) = first_record_and_penultimate_end(&fx, &seg);
        let mut cases = Vec::new();
        for o in offsets(0, seg.data_end, step(1)) {
            // A cleanly closed database marked all of this durable, so refusing
            // it as Corrupted is allowed; past the header only Corrupted is.
            let open_errs = if o >= first {
                OpenErrs::Corrupted
            } else {
                OpenErrs::Damage
            };
            let rules = Rules {
                open_errs,
                read_errs_ok: false,
                prefix: true,
                require_full: false,
                corrupted_names_file: true,
                min_prefix: 0,
            };
            cases.push((seg.name.clone(), Damage::ZeroFrom(o), rules));
        }
        sweep(
            "zero-tail/no-hints",
            &fx,
            &t.path().join("work"),
            &Hints::Drop,
            cases,
        );
    });
}

#[test]
fn torn_tail_of_zeros_with_hint_files_never_returns_wrong_values() {
    isolated(
        "torn_tail_of_zeros_with_hint_files_never_returns_wrong_values",
        || {
            let t = tempfile::tempdir().unwrap();
            let (fx, seg) = small_fixture(t.path());
            let rules = Rules {
                open_errs: OpenErrs::Damage,
                read_errs_ok: true,
                prefix: true,
                require_full: false,
                corrupted_names_file: false,
                min_prefix: 0,
            };
            let cases = offsets(0, seg.data_end, step(2))
                .into_iter()
                .map(|o| (seg.name.clone(), Damage::ZeroFrom(o), rules))
                .collect();
            sweep(
                "zero-tail/with-hints",
                &fx,
                &t.path().join("work"),
                &Hints::Keep,
                cases,
            );
        },
    );
}

/// Several segments per shard: cutting or zeroing a sealed (not the last)
/// segment is damage in the middle of the log, which must be reported.
#[test]
fn damage_to_a_sealed_segment_is_reported_not_skipped() {
    isolated("damage_to_a_sealed_segment_is_reported_not_skipped", || {
        sealed_segment_sweep("sealed-segment/no-hints", small_ops(2, 150, 400));
    });
}

/// The same when every segment was written by one round of the core: a
/// batch spanning several 4 KiB segments, then a few inserts. The core's
/// round then syncs each sealed segment before writing the next, but only
/// the last sync is recorded by a periodic sync marker; the marker each new
/// segment starts with is what records that the sealed one was durable
/// whole. Without it, a sealed segment cut at a frame boundary looks like
/// one that simply ended there, and recovery would read on past the gap.
#[test]
fn damage_to_sealed_segments_written_in_one_round_is_reported() {
    isolated(
        "damage_to_sealed_segments_written_in_one_round_is_reported",
        || {
            let mut rng = fastrand::Rng::with_seed(3);
            let mut ops = vec![Op::Batch(
                (0..24)
                    .map(|i| {
                        (
                            key(i),
                            unique_value(&mut rng, &format!("b{i:03}"), 250, 400),
                        )
                    })
                    .collect(),
            )];
            for i in 24..30 {
                ops.push(Op::Insert(
                    key(i),
                    unique_value(&mut rng, &format!("v{i:03}"), 20, 60),
                ));
            }
            sealed_segment_sweep("sealed-one-round/no-hints", ops);
        },
    );
}

/// Builds a one-shard fixture of 4 KiB segments from `ops` and sweeps
/// truncations and zeroed tails over every segment with data.
fn sealed_segment_sweep(name: &str, ops: Vec<Op>) {
    {
        let t = tempfile::tempdir().unwrap();
        let fx = make_fixture(t.path().join("pristine"), 1, 4096, ops);
        let segs = segments(&fx.dir);
        let with_data: Vec<&SegInfo> = segs
            .iter()
            .filter(|s| {
                fx.written
                    .values()
                    .flatten()
                    .any(|v| find(&s.bytes, v).is_some())
            })
            .collect();
        assert!(
            with_data.len() >= 3,
            "expected rotation into 3+ segments of 4 KiB, got {}",
            with_data.len()
        );
        let last = with_data
            .iter()
            .map(|s| s.name.clone())
            .max()
            .expect("last segment");
        eprintln!(
            "note sealed fixture: {} segments with data, last {last}",
            with_data.len()
        );
        let mut cases = Vec::new();
        for s in &with_data {
            let sealed = s.name != last;
            let rules = Rules {
                open_errs: OpenErrs::Damage,
                read_errs_ok: false,
                prefix: true,
                require_full: sealed,
                corrupted_names_file: false,
                min_prefix: 0,
            };
            // A stepped sweep, plus the bytes just past every record's value:
            // cuts at frame boundaries leave no torn frame behind, only a gap.
            let mut at: BTreeSet<u64> = offsets(0, s.data_end.saturating_sub(1), step(7))
                .into_iter()
                .collect();
            for v in fx.written.values().flatten() {
                if let Some(p) = find(&s.bytes, v) {
                    let end = (p + v.len()) as u64;
                    at.extend((end..end + 9).filter(|o| *o < s.data_end));
                }
            }
            for o in at {
                cases.push((s.name.clone(), Damage::Truncate(o), rules));
                cases.push((s.name.clone(), Damage::ZeroFrom(o), rules));
            }
        }
        sweep(name, &fx, &t.path().join("work"), &Hints::Drop, cases);
    }
}

#[test]
fn writes_after_recovering_a_torn_tail_survive_reopen() {
    let t = tempfile::tempdir().unwrap();
    let (fx, seg) = small_fixture(t.path());
    let (first, _) = first_record_and_penultimate_end(&fx, &seg);
    let work = t.path().join("work");
    let mut opened = 0;
    let mut i = 0;
    for o in offsets(first, seg.data_end, (seg.data_end - first) / 17 + 1) {
        for d in [Damage::ZeroFrom(o), Damage::Truncate(o)] {
            i += 1;
            restore(&fx, &work, &Hints::Drop);
            damage(&work.join(&seg.name), d);
            let db = match fx.builder(&work).build() {
                Ok(db) => db,
                Err(Error::Corrupted { .. }) if matches!(d, Damage::Truncate(_)) => continue,
                Err(e) => panic!("{d:?}: open failed: {e:?}"),
            };
            opened += 1;
            let mut state: Map = db.iter().expect("iter").collect();
            let k = format!("after-recovery-{i}").into_bytes();
            db.insert(k.clone(), b"new".to_vec())
                .expect("insert after recovery");
            state.insert(k, b"new".to_vec());
            db.insert(key(0), format!("overwrite-{i}"))
                .expect("overwrite after recovery");
            state.insert(key(0), format!("overwrite-{i}").into_bytes());
            db.flush().expect("flush after recovery");
            drop(db);
            let db = fx
                .builder(&work)
                .build()
                .unwrap_or_else(|e| panic!("{d:?}: second open failed: {e:?}"));
            let again: Map = db.iter().expect("iter").collect();
            assert!(
                again == state,
                "{d:?}: writes after recovery were not kept across reopen ({} vs {} keys)",
                again.len(),
                state.len()
            );
            drop(db);
            let db = fx
                .builder(&work)
                .build()
                .unwrap_or_else(|e| panic!("{d:?}: third open failed: {e:?}"));
            let third: Map = db.iter().expect("iter").collect();
            assert!(third == state, "{d:?}: state changed on the third open");
        }
    }
    assert!(opened > 0, "no damaged case opened");
}

// ---------------------------------------------------------------------------
// (b) flipped and overwritten bytes

#[test]
fn bit_flips_in_a_segment_never_return_wrong_values() {
    isolated("bit_flips_in_a_segment_never_return_wrong_values", || {
        let t = tempfile::tempdir().unwrap();
        let (fx, seg) = small_fixture(t.path());
        let (_, pen_end) = first_record_and_penultimate_end(&fx, &seg);
        let mut cases = Vec::new();
        let hi = (seg.data_end + 32).min(seg.len) - 1;
        for o in offsets(0, hi, step(1)) {
            let rules = Rules {
                open_errs: OpenErrs::Damage,
                read_errs_ok: true,
                prefix: true,
                require_full: o < pen_end,
                corrupted_names_file: false,
                min_prefix: 0,
            };
            cases.push((seg.name.clone(), Damage::FlipBit(o, (o % 8) as u8), rules));
        }
        sweep(
            "bit-flip/no-hints",
            &fx,
            &t.path().join("work"),
            &Hints::Drop,
            cases,
        );
    });
}

#[test]
fn overwritten_bytes_in_a_segment_never_return_wrong_values() {
    isolated(
        "overwritten_bytes_in_a_segment_never_return_wrong_values",
        || {
            let t = tempfile::tempdir().unwrap();
            let (fx, seg) = small_fixture(t.path());
            let (_, pen_end) = first_record_and_penultimate_end(&fx, &seg);
            let mut cases = Vec::new();
            for o in offsets(0, seg.data_end - 1, step(1)) {
                let rules = Rules {
                    open_errs: OpenErrs::Damage,
                    read_errs_ok: true,
                    prefix: true,
                    require_full: o < pen_end,
                    corrupted_names_file: false,
                    min_prefix: 0,
                };
                for v in [0x00u8, 0xff] {
                    if seg.bytes[o as usize] != v {
                        cases.push((seg.name.clone(), Damage::SetByte(o, v), rules));
                    }
                }
            }
            sweep(
                "set-byte/no-hints",
                &fx,
                &t.path().join("work"),
                &Hints::Drop,
                cases,
            );
        },
    );
}

#[test]
fn bit_flips_with_hint_files_never_return_wrong_values() {
    isolated(
        "bit_flips_with_hint_files_never_return_wrong_values",
        || {
            let t = tempfile::tempdir().unwrap();
            let (fx, seg) = small_fixture(t.path());
            let rules = Rules {
                open_errs: OpenErrs::Damage,
                read_errs_ok: true,
                prefix: true,
                require_full: false,
                corrupted_names_file: false,
                min_prefix: 0,
            };
            let cases = offsets(0, seg.data_end - 1, step(1))
                .into_iter()
                .map(|o| (seg.name.clone(), Damage::FlipBit(o, (o % 8) as u8), rules))
                .collect();
            sweep(
                "bit-flip/with-hints",
                &fx,
                &t.path().join("work"),
                &Hints::Keep,
                cases,
            );
        },
    );
}

// ---------------------------------------------------------------------------
// Crash states: a child process writes, then is killed with SIGKILL, so the
// files are exactly what a crash leaves (no close-time checkpoint or marker).

const ROLE_ENV: &str = "EMDB_RECOVERY_CRASH_ROLE";
const DIR_ENV: &str = "EMDB_RECOVERY_CRASH_DIR";

fn crash_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some((
        role,
        PathBuf::from(std::env::var(DIR_ENV).expect("crash dir env")),
    ))
}

fn child_report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "EMDB_CHILD {line}").unwrap();
    out.flush().unwrap();
}

/// Waits until every value is in some segment file of `dir` (the shard cores
/// drain behind the writers without being asked). Hang guard: 60 s.
fn wait_until_in_files(dir: &Path, values: &[Vec<u8>]) {
    let start = Instant::now();
    loop {
        let segs = segments(dir);
        if values
            .iter()
            .all(|v| segs.iter().any(|s| find(&s.bytes, v).is_some()))
        {
            return;
        }
        assert!(
            start.elapsed().as_secs() < 60,
            "written records never reached the segment files"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs this test's binary as `role` against `dir`, waits for its `ready`
/// report and kills it with SIGKILL. Returns what followed `ready`.
fn run_and_kill(test_name: &str, role: &str, dir: &Path) -> String {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crash child");
    let stdout = child.stdout.take().unwrap();
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = after_marker(&line, "EMDB_CHILD ready") {
            ready = Some(rest.trim().to_string());
            break;
        }
    }
    let _ = child.kill();
    let status = child.wait().expect("wait crash child");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match ready {
        Some(r) => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "crash child was not killed by SIGKILL: {status:?}"
            );
            r
        }
        None => panic!("crash child ({role}) failed before it was ready: {status:?}\n{err}"),
    }
}

fn torn_ops() -> (Vec<Op>, usize) {
    let mut ops = small_ops(8, 8, 40);
    let n1 = ops.len();
    let mut rng = fastrand::Rng::with_seed(88);
    for i in 0..12 {
        ops.push(Op::Insert(
            format!("late-{i:02}").into_bytes(),
            unique_value(&mut rng, &format!("L{i:02}"), 8, 40),
        ));
    }
    ops.push(Op::Insert(key(1), unique_value(&mut rng, "L-over", 8, 40)));
    ops.push(Op::Remove(key(2)));
    ops.push(Op::Batch(vec![
        (b"late-b1".to_vec(), unique_value(&mut rng, "LB1", 8, 40)),
        (b"late-b2".to_vec(), unique_value(&mut rng, "LB2", 8, 40)),
    ]));
    ops.push(Op::Insert(
        b"late-last".to_vec(),
        unique_value(&mut rng, "L-last", 8, 40),
    ));
    (ops, n1)
}

fn values_of(ops: &[Op]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for op in ops {
        match op {
            Op::Insert(_, val) => v.push(val.clone()),
            Op::Batch(items) => v.extend(items.iter().map(|(_, val)| val.clone())),
            Op::Remove(_) => {}
        }
    }
    v
}

/// Child: the first writes flushed, the rest written but not flushed; ready
/// once the unflushed records reached the file. Reports whether the engine
/// issued a device flush on its own meanwhile.
fn torn_child(dir: &Path) {
    let (ops, n1) = torn_ops();
    let fx = describe(dir.to_path_buf(), 1, 64 * 1024, ops);
    let db = fx.builder(dir).build().expect("child open");
    for op in &fx.ops[..n1] {
        apply(&db, op);
    }
    db.flush().expect("child flush");
    let d1 = db.stats().expect("stats").device_flushes;
    for op in &fx.ops[n1..] {
        apply(&db, op);
    }
    wait_until_in_files(dir, &values_of(&fx.ops[n1..]));
    let d2 = db.stats().expect("stats").device_flushes;
    child_report(&format!("ready synced_after_flush={}", d2 != d1));
    std::thread::sleep(std::time::Duration::from_secs(300));
    std::process::exit(3);
}

/// A crash leaves records written after the last flush in the file, not yet
/// durable. Cutting or zeroing them anywhere is a torn tail: the database
/// opens, keeps everything flushed and a prefix of the rest.
#[test]
fn torn_tail_after_a_crash_is_cut_back_to_a_prefix_keeping_flushed_data() {
    const NAME: &str = "torn_tail_after_a_crash_is_cut_back_to_a_prefix_keeping_flushed_data";
    if let Some((_, dir)) = crash_role() {
        torn_child(&dir);
        return;
    }
    isolated(NAME, || {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("crashed");
        let ready = run_and_kill(NAME, "torn", &dir);
        let synced = ready.contains("synced_after_flush=true");
        eprintln!("note torn-tail child: {ready}");
        let (ops, n1) = torn_ops();
        let fx = describe(dir, 1, 64 * 1024, ops);
        let segs = segments(&fx.dir);
        let late = values_of(&fx.ops[n1..]);
        let seg = segs
            .iter()
            .find(|s| find(&s.bytes, &late[0]).is_some())
            .expect("unflushed records in a segment")
            .clone();
        let first_late_key = find(&seg.bytes, b"late-00").expect("first unflushed key") as u64;
        let lo = first_late_key.saturating_sub(32);

        // Every case must keep all flushed writes and a prefix of the rest.
        let mut cases = vec![];
        let strict = |d: Damage| Rules {
            open_errs: match d {
                Damage::ZeroFrom(_) if !synced => OpenErrs::None,
                _ => OpenErrs::Corrupted,
            },
            read_errs_ok: false,
            prefix: true,
            require_full: false,
            corrupted_names_file: true,
            min_prefix: n1,
        };
        for o in offsets(lo, seg.data_end, step(1)) {
            cases.push((
                seg.name.clone(),
                Damage::ZeroFrom(o),
                strict(Damage::ZeroFrom(o)),
            ));
            cases.push((
                seg.name.clone(),
                Damage::Truncate(o),
                strict(Damage::Truncate(o)),
            ));
        }
        for o in offsets(lo, seg.data_end - 1, step(2)) {
            cases.push((
                seg.name.clone(),
                Damage::FlipBit(o, (o % 8) as u8),
                strict(Damage::FlipBit(o, 0)),
            ));
        }
        // The crash state itself (zeroing past the end changes nothing): every
        // record reached the file, so all of them are there.
        cases.push((
            seg.name.clone(),
            Damage::ZeroFrom(seg.len),
            Rules {
                open_errs: OpenErrs::None,
                require_full: true,
                ..strict(Damage::ZeroFrom(0))
            },
        ));
        sweep(
            "torn-tail-after-crash",
            &fx,
            &t.path().join("work"),
            &Hints::Keep,
            cases,
        );
    });
}

fn batch_parts() -> (Pairs, Pairs) {
    let mut rng = fastrand::Rng::with_seed(3);
    let base = (0..30)
        .map(|i| {
            (
                format!("base-{i:02}").into_bytes(),
                unique_value(&mut rng, &format!("b{i:02}"), 10, 40),
            )
        })
        .collect();
    let batch = (0..24)
        .map(|i| {
            (
                format!("batch-{i:02}").into_bytes(),
                unique_value(&mut rng, &format!("B{i:02}"), 10, 40),
            )
        })
        .collect();
    (base, batch)
}

/// Child: base records, flush, checkpoint, then one insert_many that is not
/// flushed; ready once its records reached both shards' files.
fn batch_child(dir: &Path) {
    let (base, batch) = batch_parts();
    let db = limits(Emdb::builder().path(dir).shards(2).segment_size(64 * 1024))
        .build()
        .expect("child open");
    for (k, v) in &base {
        db.insert(k.clone(), v.clone()).expect("insert");
    }
    db.flush().expect("flush");
    db.checkpoint().expect("checkpoint");
    let d1 = db.stats().expect("stats").device_flushes;
    db.insert_many(batch.clone()).expect("insert_many");
    let vals: Vec<Vec<u8>> = batch.iter().map(|(_, v)| v.clone()).collect();
    wait_until_in_files(dir, &vals);
    let d2 = db.stats().expect("stats").device_flushes;
    child_report(&format!("ready synced_after_flush={}", d2 != d1));
    std::thread::sleep(std::time::Duration::from_secs(300));
    std::process::exit(3);
}

#[test]
fn insert_many_across_shards_is_all_or_nothing_after_a_torn_tail() {
    const NAME: &str = "insert_many_across_shards_is_all_or_nothing_after_a_torn_tail";
    if let Some((_, dir)) = crash_role() {
        batch_child(&dir);
        return;
    }
    isolated(NAME, || {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("crashed");
        let ready = run_and_kill(NAME, "batch", &dir);
        let synced = ready.contains("synced_after_flush=true");
        eprintln!("note batch child: {ready}");
        let (base, batch) = batch_parts();
        let mut ops: Vec<Op> = base
            .iter()
            .map(|(k, v)| Op::Insert(k.clone(), v.clone()))
            .collect();
        ops.push(Op::Batch(batch.clone()));
        let fx = describe(dir, 2, 64 * 1024, ops);

        // Where the batch's records sit in each shard's segment.
        let segs = segments(&fx.dir);
        let mut spans = Vec::new();
        for s in &segs {
            let pos: Vec<usize> = batch
                .iter()
                .filter_map(|(k, _)| find(&s.bytes, k))
                .collect();
            if !pos.is_empty() {
                spans.push((s.clone(), *pos.iter().min().unwrap() as u64, pos.len()));
            }
        }
        let shards_hit: BTreeSet<Option<u32>> = spans.iter().map(|(s, _, _)| s.shard).collect();
        eprintln!(
            "note batch spans: {:?}",
            spans
                .iter()
                .map(|(s, lo, n)| format!(
                    "{} holds {n} batch keys from {lo}, data_end {}",
                    s.name, s.data_end
                ))
                .collect::<Vec<_>>()
        );
        assert!(
            shards_hit.len() >= 2,
            "the 24-key batch did not span both shards: {shards_hit:?}"
        );
        let found: usize = spans.iter().map(|(_, _, n)| n).sum();
        assert_eq!(
            found,
            batch.len(),
            "every batch key should appear once in the segment files"
        );

        let work = t.path().join("work");
        for (mode, hints) in [("checkpoint-hints", Hints::Keep), ("no-hints", Hints::Drop)] {
            let mut report = Report::new(&format!("batch-atomicity/{mode}"));
            let mut all = 0;
            let mut none = 0;
            for (s, lo, _) in &spans {
                // The batch's first frame starts 32 bytes (its header) before its key.
                for o in offsets(lo.saturating_sub(32), s.data_end, step(1)) {
                    for d in [Damage::Truncate(o), Damage::ZeroFrom(o)] {
                        restore(&fx, &work, &hints);
                        damage(&work.join(&s.name), d);
                        let out = observe(&fx, &work);
                        let rules = Rules {
                            open_errs: if matches!(d, Damage::ZeroFrom(_)) && !synced {
                                OpenErrs::None
                            } else {
                                OpenErrs::Corrupted
                            },
                            read_errs_ok: false,
                            prefix: false,
                            require_full: false,
                            corrupted_names_file: false,
                            min_prefix: 0,
                        };
                        let (mut v, p) = check(&fx, &out, &rules, &s.name);
                        if let Outcome::Opened(obs) = &out {
                            let present = batch
                                .iter()
                                .filter(|(k, _)| obs.state.contains_key(k))
                                .count();
                            if present == batch.len() {
                                all += 1;
                            } else if present == 0 {
                                none += 1;
                            } else {
                                v.push(format!(
                                    "BATCH TORN: {present} of {} batch keys present after reopen",
                                    batch.len()
                                ));
                            }
                            for (k, val) in &base {
                                if obs.state.get(k) != Some(val) {
                                    v.push(format!(
                                        "flushed base record {} lost or changed",
                                        short(k)
                                    ));
                                }
                            }
                        }
                        report.record(&fx, &format!("{} {d:?}", s.name), &out, (v, p));
                    }
                }
            }
            eprintln!(
                "note batch-atomicity/{mode}: batch all present in {all} cases, absent in {none}"
            );
            report.finish();
        }
    });
}

// ---------------------------------------------------------------------------
// (d) hint files

/// Two shards, 64 KiB segments, a few thousand writes with overwrites and
/// removes, a checkpoint, then closed.
fn hint_fixture(root: &Path) -> Fixture {
    let mut rng = fastrand::Rng::with_seed(4);
    let mut ops = Vec::new();
    for i in 0..1500 {
        let k = format!("h-{}", rng.u32(0..400)).into_bytes();
        if rng.u8(0..8) == 0 {
            ops.push(Op::Remove(k));
        } else {
            ops.push(Op::Insert(
                k,
                unique_value(&mut rng, &format!("h{i}"), 20, 300),
            ));
        }
    }
    let fx = make_fixture(root.join("pristine"), 2, 64 * 1024, ops);
    {
        let db = fx.builder(&fx.dir).build().unwrap();
        db.checkpoint().unwrap();
    }
    let hints = files_with_ext(&fx.dir, "hint");
    assert!(!hints.is_empty(), "checkpoint() wrote no hint files");
    assert!(segments(&fx.dir).len() >= 4, "expected several segments");
    fx
}

fn exact_rules() -> Rules {
    Rules {
        open_errs: OpenErrs::None,
        read_errs_ok: false,
        prefix: true,
        require_full: true,
        corrupted_names_file: false,
        min_prefix: 0,
    }
}

#[test]
fn missing_hint_files_fall_back_to_replay_with_same_contents() {
    let t = tempfile::tempdir().unwrap();
    let fx = hint_fixture(t.path());
    let work = t.path().join("work");
    let mut report = Report::new("missing-hints");
    restore(&fx, &work, &Hints::Drop);
    let out = observe(&fx, &work);
    let found = check(&fx, &out, &exact_rules(), "");
    report.record(&fx, "all hint files deleted", &out, found);
    for h in files_with_ext(&fx.dir, "hint") {
        let name = h.file_name().unwrap().to_string_lossy().to_string();
        restore(&fx, &work, &Hints::Keep);
        damage(&work.join(&name), Damage::Delete);
        let out = observe(&fx, &work);
        let found = check(&fx, &out, &exact_rules(), &name);
        report.record(&fx, &format!("{name} deleted"), &out, found);
    }
    report.finish();
}

#[test]
fn damaged_hint_files_fall_back_to_replay_with_same_contents() {
    isolated(
        "damaged_hint_files_fall_back_to_replay_with_same_contents",
        || {
            let t = tempfile::tempdir().unwrap();
            let fx = hint_fixture(t.path());
            let mut cases = Vec::new();
            for h in files_with_ext(&fx.dir, "hint") {
                let name = h.file_name().unwrap().to_string_lossy().to_string();
                let len = fs::metadata(&h).unwrap().len();
                for d in [
                    Damage::Truncate(0),
                    Damage::Truncate(len / 2),
                    Damage::Truncate(len.saturating_sub(1)),
                    Damage::Garbage,
                    Damage::AppendGarbage,
                ] {
                    cases.push((name.clone(), d, exact_rules()));
                }
                if len > 0 {
                    let st = step((len / 150).max(1));
                    for o in offsets(0, len - 1, st) {
                        cases.push((
                            name.clone(),
                            Damage::FlipBit(o, (o % 8) as u8),
                            exact_rules(),
                        ));
                    }
                    for o in offsets(0, len - 1, st * 4) {
                        cases.push((name.clone(), Damage::SetByte(o, 0xff), exact_rules()));
                        cases.push((name.clone(), Damage::SetByte(o, 0x00), exact_rules()));
                    }
                }
            }
            sweep(
                "damaged-hints",
                &fx,
                &t.path().join("work"),
                &Hints::Keep,
                cases,
            );
        },
    );
}

/// Child for the stale-hint case: writes, checkpoint, then overwrites, removes
/// and new keys (rotating into new segments), flush, ready.
fn stale_child(dir: &Path) {
    let db = limits(Emdb::builder().path(dir).shards(2).segment_size(64 * 1024))
        .build()
        .expect("child open");
    let (phase1, phase2) = stale_ops();
    for op in &phase1 {
        apply(&db, op);
    }
    db.checkpoint().expect("checkpoint");
    assert!(
        !files_with_ext(dir, "hint").is_empty(),
        "checkpoint() wrote no hint files"
    );
    for op in &phase2 {
        apply(&db, op);
    }
    db.flush().expect("flush");
    child_report("ready");
    std::thread::sleep(std::time::Duration::from_secs(300));
    std::process::exit(3);
}

fn stale_ops() -> (Vec<Op>, Vec<Op>) {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut p1 = Vec::new();
    for i in 0..600 {
        p1.push(Op::Insert(
            format!("s-{i}").into_bytes(),
            unique_value(&mut rng, &format!("a{i}"), 50, 200),
        ));
    }
    let mut p2 = Vec::new();
    for i in (0..600).step_by(3) {
        p2.push(Op::Insert(
            format!("s-{i}").into_bytes(),
            unique_value(&mut rng, &format!("b{i}"), 50, 200),
        ));
    }
    for i in (1..600).step_by(5) {
        p2.push(Op::Remove(format!("s-{i}").into_bytes()));
    }
    p2.push(Op::Insert(b"s-1".to_vec(), b"back".to_vec()));
    for i in 600..1200 {
        p2.push(Op::Insert(
            format!("s-{i}").into_bytes(),
            unique_value(&mut rng, &format!("c{i}"), 50, 200),
        ));
    }
    (p1, p2)
}

/// A crash after a checkpoint: hint files describe an earlier point, and the
/// segments hold later overwrites, removes and new keys, all flushed.
#[test]
fn stale_hint_files_after_a_crash_do_not_hide_later_writes() {
    const NAME: &str = "stale_hint_files_after_a_crash_do_not_hide_later_writes";
    if let Some((_, dir)) = crash_role() {
        stale_child(&dir);
        return;
    }
    isolated(NAME, || {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("crashed");
        run_and_kill(NAME, "stale", &dir);
        let (mut ops, p2) = stale_ops();
        ops.extend(p2);
        let fx = describe(dir, 2, 64 * 1024, ops);
        assert!(
            !files_with_ext(&fx.dir, "hint").is_empty(),
            "no hint files in the crash state"
        );
        let mut report = Report::new("stale-hints-after-crash");
        for (mode, hints) in [
            ("with the checkpoint's hints", Hints::Keep),
            ("hints deleted", Hints::Drop),
        ] {
            restore(&fx, &t.path().join("work"), &hints);
            let out = observe(&fx, &t.path().join("work"));
            let found = check(&fx, &out, &exact_rules(), "");
            report.record(&fx, mode, &out, found);
        }
        report.finish();
    });
}

// ---------------------------------------------------------------------------
// (e) MANIFEST

#[test]
fn damaged_manifest_is_an_error_not_a_panic() {
    isolated("damaged_manifest_is_an_error_not_a_panic", || {
        let t = tempfile::tempdir().unwrap();
        let fx = make_fixture(t.path().join("pristine"), 2, 64 * 1024, small_ops(6, 8, 40));
        let manifest = fx.dir.join("MANIFEST");
        assert!(manifest.is_file(), "no MANIFEST in the database directory");
        let len = fs::metadata(&manifest).unwrap().len();
        // Either an error, or (for a byte the format does not depend on) the
        // exact same contents: never a silently different database.
        let rules = Rules {
            open_errs: OpenErrs::Any,
            read_errs_ok: false,
            prefix: true,
            require_full: true,
            corrupted_names_file: false,
            min_prefix: 0,
        };
        let mut cases = Vec::new();
        for d in [
            Damage::Truncate(0),
            Damage::Truncate(len / 2),
            Damage::Truncate(len.saturating_sub(1)),
            Damage::Garbage,
        ] {
            cases.push((
                "MANIFEST".to_string(),
                d,
                Rules {
                    open_errs: OpenErrs::Any,
                    ..rules
                },
            ));
        }
        for o in offsets(0, len.saturating_sub(1), step(1)) {
            cases.push((
                "MANIFEST".to_string(),
                Damage::FlipBit(o, (o % 8) as u8),
                rules,
            ));
            cases.push(("MANIFEST".to_string(), Damage::SetByte(o, 0xff), rules));
        }
        cases.push(("MANIFEST".to_string(), Damage::AppendGarbage, rules));
        let work = t.path().join("work");
        let mut report = Report::new("damaged-manifest");
        let mut errs = 0;
        for (file, d, r) in cases {
            restore(&fx, &work, &Hints::Keep);
            damage(&work.join(&file), d);
            let out = observe(&fx, &work);
            if matches!(out, Outcome::OpenErr(_)) {
                errs += 1;
            }
            let (mut v, p) = check(&fx, &out, &r, &file);
            let gross = matches!(d, Damage::Truncate(0) | Damage::Garbage);
            if gross && !matches!(out, Outcome::OpenErr(_)) {
                v.push("a MANIFEST emptied or replaced by garbage opened Ok".to_string());
            }
            report.record(&fx, &format!("{file} {d:?}"), &out, (v, p));
        }
        eprintln!("note damaged-manifest: {errs} cases returned Err");
        report.finish();
    });
}

#[test]
fn missing_manifest_is_not_silently_an_empty_database() {
    let t = tempfile::tempdir().unwrap();
    let fx = make_fixture(t.path().join("pristine"), 2, 64 * 1024, small_ops(7, 8, 40));
    let work = t.path().join("work");
    restore(&fx, &work, &Hints::Keep);
    damage(&work.join("MANIFEST"), Damage::Delete);
    let out = observe(&fx, &work);
    let rules = Rules {
        open_errs: OpenErrs::Any,
        read_errs_ok: false,
        prefix: true,
        require_full: true,
        corrupted_names_file: false,
        min_prefix: 0,
    };
    let (v, _) = check(&fx, &out, &rules, "MANIFEST");
    assert!(v.is_empty(), "MANIFEST deleted, segments present: {v:?}");
}

/// The text after `marker` in a line of child output. libtest may print
/// `test NAME ... ` in front of the child's first line, so the marker is
/// searched anywhere in the line.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}
