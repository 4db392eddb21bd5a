//! A real crash test: a child process writes concurrently, the parent kills it
//! with SIGKILL at a random moment, reopens the database and checks what
//! survived.
//!
//! The child is this test binary re-executed (`EMDB_CRASH_CHILD=<seed>:<cycle>:<dir>`).
//! It opens the database (2 shards, 256 KiB segments, so segments rotate
//! often) and runs [`THREADS`] threads doing a random mix of `insert`,
//! `remove`, `insert_many` batches, `flush` and, rarely, `checkpoint`, while a
//! fourth thread calls `compact()` every 2-40 ms (beside the background
//! compactor; `EMDB_CRASH_COMPACT=0` turns it off). Each
//! thread owns its own keys, so the versions of a key only grow. Every value
//! encodes its key, the cycle, the writing operation's number (its version and,
//! for batches, the batch id) and padding derived from them, so a value can be
//! matched byte for byte against the write that made it.
//!
//! Over stdout (a pipe) the child reports, one line per `write(2)`:
//! - `@I t i ...` before thread `t` issues its operation number `i` (so the
//!   parent knows every write that may have reached the log, including the
//!   members of batches that were never acknowledged);
//! - `@A t i` after a `flush()` (operation `i` of thread `t`) returned Ok:
//!   every operation of thread `t` numbered below `i` is acknowledged durable.
//!
//! A half-written last line is ignored. After the kill the parent reopens the
//! database and checks, for every key:
//! 1. it holds the state of its last acknowledged operation or of a later
//!    operation (an acknowledged remove: absent, or re-inserted later);
//! 2. a value present is byte for byte one that was written for that key
//!    (in this cycle, or the state the previous cycle's check found);
//! 3. batches are whole: if any key shows batch B's value, every key of B
//!    shows B's value or the state of a later operation on it;
//!
//! plus: no key outside the key space, `get` agrees with `iter`, `len` agrees
//! with both. The database then carries on into the next cycle, whose child
//! appends to it. Half of the cycles check a copy of the crashed directory, so
//! the next child itself recovers the crashed original (crash recovery under a
//! writer, and kills during that recovery); the other half check the original
//! in place (the check's clean close writes a checkpoint, so the next child
//! loads hints). One cycle in eight kills the child 1-15 ms after spawning it,
//! which often lands in `open`. Every [`FRESH_EVERY`] cycles start a new
//! directory.
//!
//! With the `encrypt` feature every other fresh directory holds an encrypted
//! database (its name ends in `-enc`), so the same checks cover encrypted
//! recovery.
//!
//! Knobs: `EMDB_CRASH_CYCLES` (default 30), `EMDB_CRASH_SEED` (replays the
//! operation streams, kill delays and modes of a run; thread interleaving is
//! up to the scheduler), `EMDB_CRASH_FROM=<cycle>` (start at the fresh
//! directory that cycle belongs to), `EMDB_IO_BACKEND=uring|portable`.
//! For diagnosis only, two knobs remove a kind of kill: `EMDB_CRASH_CHECKPOINT=0`
//! (the child never calls `checkpoint()`, so no kill lands in one) and
//! `EMDB_CRASH_EARLY_CREATE=0` (no early kill in the cycle that creates a
//! directory, so none lands while `open` creates the database).
//! `EMDB_CRASH_CYCLES=1000 cargo test --release --test crash -- --nocapture`
//! is the long run (docs/RELIABILITY.md).

use emdb::Emdb;
use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "EMDB_CRASH_CHILD";
const THREADS: usize = 3;
const KEYS_PER_THREAD: usize = 300;
const KEYS: usize = THREADS * KEYS_PER_THREAD;
const SEGMENT_SIZE: u64 = 256 * 1024;
const MAX_VALUE_LEN: usize = 4096;
const MAX_PAD: usize = 900;
const MAX_BATCH: usize = 12;
const FRESH_EVERY: u64 = 5;
const TEST_NAME: &str = "crash_cycles";

fn open(path: &Path) -> emdb::Result<Emdb> {
    let b = Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(SEGMENT_SIZE)
        .max_value_len(MAX_VALUE_LEN);
    // With the `encrypt` feature every other fresh directory (its name
    // ends in `-enc`) is an encrypted database.
    #[cfg(feature = "encrypt")]
    let b = if path.to_string_lossy().ends_with("-enc") {
        b.encryption_key([0xc5; 32])
    } else {
        b
    };
    b.build()
}

/// The suffix of the directories of `cycle`'s database: `-enc` for an
/// encrypted one.
fn dir_suffix(cycle: u64) -> &'static str {
    if cfg!(feature = "encrypt") && (cycle / FRESH_EVERY) % 2 == 1 {
        "-enc"
    } else {
        ""
    }
}

// ---------------------------------------------------------------------------
// Keys and values

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn key(id: usize) -> Vec<u8> {
    let (t, n) = (id / KEYS_PER_THREAD, id % KEYS_PER_THREAD);
    if n % 7 == 3 {
        format!("t{t}-k{n:03}-{}", "x".repeat(n % 61)).into_bytes()
    } else {
        format!("t{t}-k{n:03}").into_bytes()
    }
}

/// The value operation `i` of cycle `cycle` writes for key `id`.
fn value(cycle: u64, id: usize, i: u64, batch: bool) -> Vec<u8> {
    let mut v = format!(
        "crash|{}|c{cycle}|i{i}|{}|",
        String::from_utf8_lossy(&key(id)),
        if batch { "B" } else { "-" }
    )
    .into_bytes();
    let header = v.len();
    let mut x = mix(mix(cycle) ^ ((id as u64) << 40) ^ i);
    let len = header + (x % (MAX_PAD as u64 + 1)) as usize;
    while v.len() < len {
        x = mix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn describe(state: Option<&[u8]>) -> String {
    match state {
        None => "absent".to_string(),
        Some(v) => {
            let fields: Vec<String> = v
                .split(|&b| b == b'|')
                .take(5)
                .map(|f| String::from_utf8_lossy(&f[..f.len().min(80)]).into_owned())
                .collect();
            format!("{} bytes [{}]", v.len(), fields.join("|"))
        }
    }
}

/// The cycle a value says it was written in.
fn value_cycle(v: &[u8]) -> Option<u64> {
    let field = v.split(|&b| b == b'|').nth(2)?;
    std::str::from_utf8(field.strip_prefix(b"c")?)
        .ok()?
        .parse()
        .ok()
}

fn show_key(id: usize) -> String {
    String::from_utf8_lossy(&key(id)).into_owned()
}

// ---------------------------------------------------------------------------
// The child

fn report(line: &str) {
    // One write(2) per line: a line is shorter than PIPE_BUF, so it reaches the
    // pipe whole or not at all (a kill during the write leaves at most a
    // partial last line, which the parent drops).
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(5);
    }
}

fn die(what: &str, e: emdb::Error) -> ! {
    eprintln!("crash child: {what} failed: {e:?}");
    std::process::exit(3);
}

fn child_main(spec: &str) -> ! {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));
    let mut parts = spec.splitn(3, ':');
    let seed: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seed");
    let cycle: u64 = parts.next().and_then(|s| s.parse().ok()).expect("cycle");
    let dir = PathBuf::from(parts.next().expect("dir"));
    let checkpoints = std::env::var("EMDB_CRASH_CHECKPOINT").as_deref() != Ok("0");
    let db = open(&dir).unwrap_or_else(|e| die("open", e));
    report("@R\n");
    let mut workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone_handle();
            thread::spawn(move || worker(db, seed, cycle, t, checkpoints))
        })
        .collect();
    if std::env::var("EMDB_CRASH_COMPACT").as_deref() != Ok("0") {
        // Explicit compactions beside the background compactor, so that
        // kills land in every step of one.
        let db = db.clone_handle();
        workers.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(mix(seed ^ 0xC0));
            loop {
                thread::sleep(Duration::from_millis(rng.u64(2..40)));
                db.compact().unwrap_or_else(|e| die("compact", e));
                let n = db.stats().map(|s| s.compactions).unwrap_or(0);
                report(&format!("@K {n}\n"));
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    eprintln!("crash child: a worker returned");
    std::process::exit(4);
}

/// Per mille of a thread's operations that are flushes, one drawn per thread:
/// flush-heavy threads acknowledge almost everything, write-heavy ones leave
/// long unacknowledged tails (and large unwritten buffers) for the kill.
const FLUSH_RATES: [u32; 3] = [250, 50, 10];

fn worker(db: Emdb, seed: u64, cycle: u64, t: usize, checkpoints: bool) {
    let mut rng = fastrand::Rng::with_seed(mix(seed ^ mix(t as u64 + 1)));
    let flush_rate = FLUSH_RATES[rng.usize(0..FLUSH_RATES.len())];
    let base = t * KEYS_PER_THREAD;
    let mut i: u64 = 0;
    loop {
        i += 1;
        if rng.u32(0..1000) < flush_rate {
            if checkpoints && rng.u32(0..100) == 0 {
                report(&format!("@I {t} {i} C\n"));
                db.checkpoint().unwrap_or_else(|e| die("checkpoint", e));
            } else {
                db.flush().unwrap_or_else(|e| die("flush", e));
                report(&format!("@A {t} {i}\n"));
            }
            continue;
        }
        match rng.u32(0..100) {
            0..60 => {
                let n = rng.usize(0..KEYS_PER_THREAD);
                report(&format!("@I {t} {i} P {n}\n"));
                let id = base + n;
                db.insert(key(id), value(cycle, id, i, false))
                    .unwrap_or_else(|e| die("insert", e));
            }
            60..78 => {
                let n = rng.usize(0..KEYS_PER_THREAD);
                report(&format!("@I {t} {i} D {n}\n"));
                db.remove(key(base + n))
                    .unwrap_or_else(|e| die("remove", e));
            }
            _ => {
                let size = rng.usize(2..=MAX_BATCH);
                let mut members: Vec<usize> = Vec::with_capacity(size);
                while members.len() < size {
                    let n = rng.usize(0..KEYS_PER_THREAD);
                    if !members.contains(&n) {
                        members.push(n);
                    }
                }
                let list: Vec<String> = members.iter().map(|n| n.to_string()).collect();
                report(&format!("@I {t} {i} B {}\n", list.join(",")));
                db.insert_many(members.iter().map(|&n| {
                    let id = base + n;
                    (key(id), value(cycle, id, i, true))
                }))
                .unwrap_or_else(|e| die("insert_many", e));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// What the child said

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Put(usize),
    Del(usize),
    Batch(Vec<usize>),
    Checkpoint,
}

#[derive(Debug)]
struct Report {
    /// Per thread: its operations in the order it issued them.
    ops: Vec<Vec<(u64, Op)>>,
    /// Per thread: operations numbered below this are acknowledged durable.
    acked_upto: Vec<u64>,
    acks: u64,
    ready: bool,
    /// Compaction runs that retired segments, as the child last reported.
    compactions: u64,
}

fn parse_report(lines: &[String]) -> Result<Report, String> {
    let mut r = Report {
        ops: vec![Vec::new(); THREADS],
        acked_upto: vec![0; THREADS],
        acks: 0,
        ready: false,
        compactions: 0,
    };
    for line in lines {
        // The test harness writes "test crash_cycles ... " without a newline
        // before the child's first line; anything without '@' is its output.
        let Some(rest) = line.find('@').map(|p| &line[p + 1..]) else {
            continue;
        };
        let bad = || format!("malformed report line {line:?}");
        let f: Vec<&str> = rest.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let member = |s: &str| match s.parse::<usize>() {
            Ok(n) if n < KEYS_PER_THREAD => Ok(n),
            _ => Err(bad()),
        };
        match f.as_slice() {
            ["R"] => r.ready = true,
            ["K", n] => r.compactions = r.compactions.max(num(n)?),
            ["A", t, i] => {
                let (t, i) = (num(t)? as usize, num(i)?);
                if t >= THREADS {
                    return Err(bad());
                }
                r.acked_upto[t] = r.acked_upto[t].max(i);
                r.acks += 1;
            }
            ["I", t, i, kind, args @ ..] => {
                let (t, i) = (num(t)? as usize, num(i)?);
                if t >= THREADS {
                    return Err(bad());
                }
                let op = match (*kind, args) {
                    ("P", [n]) => Op::Put(member(n)?),
                    ("D", [n]) => Op::Del(member(n)?),
                    ("B", [list]) => {
                        Op::Batch(list.split(',').map(member).collect::<Result<Vec<_>, _>>()?)
                    }
                    ("C", []) => Op::Checkpoint,
                    _ => return Err(bad()),
                };
                if let Some((last, _)) = r.ops[t].last() {
                    if *last >= i {
                        return Err(format!(
                            "operation numbers of thread {t} not increasing at {line:?}"
                        ));
                    }
                }
                r.ops[t].push((i, op));
            }
            _ => return Err(bad()),
        }
    }
    Ok(r)
}

// ---------------------------------------------------------------------------
// Reading back and checking

/// Per key id: the value the database holds, if any.
type State = Vec<Option<Vec<u8>>>;

/// Reads every key with `iter`, `get` and `len`; problems are violations too.
fn snapshot(db: &Emdb) -> Result<(State, Vec<String>), String> {
    let ids: HashMap<Vec<u8>, usize> = (0..KEYS).map(|id| (key(id), id)).collect();
    let mut state: State = vec![None; KEYS];
    let mut problems = Vec::new();
    let mut count = 0usize;
    for (k, v) in db.iter().map_err(|e| format!("iter: {e:?}"))? {
        count += 1;
        match ids.get(&k) {
            None => problems.push(format!(
                "a key that was never written: {:?} = {}",
                String::from_utf8_lossy(&k),
                describe(Some(&v))
            )),
            Some(&id) => {
                if state[id].is_some() {
                    problems.push(format!("iter returned key {} twice", show_key(id)));
                }
                state[id] = Some(v);
            }
        }
    }
    for (id, s) in state.iter().enumerate() {
        let got = db
            .get(key(id))
            .map_err(|e| format!("get {}: {e:?}", show_key(id)))?;
        if got != *s {
            problems.push(format!(
                "key {}: get returned {} but iter {}",
                show_key(id),
                describe(got.as_deref()),
                describe(s.as_deref())
            ));
        }
    }
    let len = db.len().map_err(|e| format!("len: {e:?}"))?;
    if len != count {
        problems.push(format!("len() is {len} but iter returned {count} records"));
    }
    Ok((state, problems))
}

#[derive(Default, Debug)]
struct Verdict {
    violations: Vec<String>,
    issued_ops: u64,
    acked_ops: u64,
    acked_records: u64,
    keys_checked: u64,
    keys_newer_than_ack: u64,
    batches_visible: u64,
}

/// The keys of a batch: (key id, position of the batch in that key's history).
type Members = Vec<(usize, usize)>;

/// One state a key went through: the baseline (position 0) or an operation.
struct Entry {
    i: u64,
    state: Option<Vec<u8>>,
}

/// Checks `found` (the reopened database) against `baseline` (what the
/// previous check found) and the child's report for `cycle`.
fn check(cycle: u64, r: &Report, baseline: &State, found: &State) -> Verdict {
    let mut v = Verdict::default();
    // Per key: the operations on it, in order; position p in the history is
    // hist[id][p - 1], position 0 is the baseline.
    let mut hist: Vec<Vec<Entry>> = (0..KEYS).map(|_| Vec::new()).collect();
    // Batches: (thread, op number, [(key id, position)]).
    let mut batches: Vec<(usize, u64, Members)> = Vec::new();
    for (t, ops) in r.ops.iter().enumerate() {
        let base = t * KEYS_PER_THREAD;
        for (i, op) in ops {
            let acked = *i < r.acked_upto[t];
            v.issued_ops += 1;
            if acked && *op != Op::Checkpoint {
                v.acked_ops += 1;
            }
            match op {
                Op::Put(n) => {
                    let id = base + n;
                    v.acked_records += u64::from(acked);
                    hist[id].push(Entry {
                        i: *i,
                        state: Some(value(cycle, id, *i, false)),
                    });
                }
                Op::Del(n) => {
                    v.acked_records += u64::from(acked);
                    hist[base + n].push(Entry { i: *i, state: None });
                }
                Op::Batch(ms) => {
                    let mut pos = Vec::with_capacity(ms.len());
                    for n in ms {
                        let id = base + n;
                        v.acked_records += u64::from(acked);
                        hist[id].push(Entry {
                            i: *i,
                            state: Some(value(cycle, id, *i, true)),
                        });
                        pos.push((id, hist[id].len()));
                    }
                    batches.push((t, *i, pos));
                }
                Op::Checkpoint => {}
            }
        }
    }

    let state_at = |id: usize, p: usize| -> Option<&[u8]> {
        if p == 0 {
            baseline[id].as_deref()
        } else {
            hist[id][p - 1].state.as_deref()
        }
    };
    let name_at = |id: usize, p: usize| -> String {
        if p == 0 {
            format!(
                "the state before this cycle ({})",
                describe(baseline[id].as_deref())
            )
        } else {
            let e = &hist[id][p - 1];
            format!("op {} ({})", e.i, describe(e.state.as_deref()))
        }
    };

    // Per key: the latest position whose state equals what was found.
    let mut matched: Vec<Option<usize>> = vec![None; KEYS];
    for id in 0..KEYS {
        v.keys_checked += 1;
        let t = id / KEYS_PER_THREAD;
        let acked_pos = hist[id]
            .iter()
            .rposition(|e| e.i < r.acked_upto[t])
            .map_or(0, |p| p + 1);
        let f = found[id].as_deref();
        let m = (0..=hist[id].len()).rev().find(|&p| state_at(id, p) == f);
        matched[id] = m;
        match m {
            None => {
                let what = if let Some(c) = f.and_then(value_cycle).filter(|&c| c < cycle) {
                    format!(
                        "holds a value that was never written for it in this cycle and that the check \
                         after the previous cycle did not find (it decodes to cycle {c}: a write that \
                         earlier recoveries dropped came back)"
                    )
                } else if f.is_some() {
                    "holds a value that was never written for it".to_string()
                } else {
                    "is absent, but no operation could have removed it".to_string()
                };
                v.violations.push(format!(
                    "key {} {what}: found {}; last acknowledged: {}; {} operations on it this cycle",
                    show_key(id),
                    describe(f),
                    name_at(id, acked_pos),
                    hist[id].len()
                ));
            }
            Some(p) if p < acked_pos => v.violations.push(format!(
                "key {}: acknowledged write lost: thread {t} acknowledged everything below op {}, \
                 the last of which on this key is {}, but the key shows {}",
                show_key(id),
                r.acked_upto[t],
                name_at(id, acked_pos),
                name_at(id, p)
            )),
            Some(p) => v.keys_newer_than_ack += u64::from(p > acked_pos),
        }
    }

    for (t, i, members) in &batches {
        if !members.iter().any(|&(id, p)| matched[id] == Some(p)) {
            continue;
        }
        v.batches_visible += 1;
        let torn: Vec<String> = members
            .iter()
            .filter(|&&(id, p)| matched[id].is_some_and(|m| m < p))
            .map(|&(id, _)| {
                format!(
                    "{} shows {}",
                    show_key(id),
                    name_at(id, matched[id].unwrap())
                )
            })
            .collect();
        if !torn.is_empty() {
            let whole: Vec<String> = members
                .iter()
                .filter(|&&(id, p)| matched[id] == Some(p))
                .map(|&(id, _)| show_key(id))
                .collect();
            v.violations.push(format!(
                "batch c{cycle}/t{t}/op {i} is torn: {} of {} keys show it ({}), but {}",
                whole.len(),
                members.len(),
                whole.join(", "),
                torn.join("; ")
            ));
        }
    }
    v
}

// ---------------------------------------------------------------------------
// The parent

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {s:?}"))
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    cycles: u64,
    early_kills: u64,
    checked_on_copy: u64,
    issued_ops: u64,
    acked_ops: u64,
    acked_records: u64,
    acks: u64,
    keys_checked: u64,
    keys_newer_than_ack: u64,
    batches_visible: u64,
    torn_lines: u64,
    compactions: u64,
    backend: Option<String>,
}

/// What one cycle did, for the failure message.
struct CycleInfo {
    cycle: u64,
    seed: u64,
    delay_ms: u64,
    early: bool,
    on_copy: bool,
    db_dir: PathBuf,
    crashed_copy: PathBuf,
}

fn run_cycle(
    info: &CycleInfo,
    baseline: &mut State,
    totals: &mut Totals,
) -> Result<String, String> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}:{}:{}", info.seed, info.cycle, info.db_dir.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn child: {e}"))?;
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 16, stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return 0u64,
                Ok(_) if buf.last() != Some(&b'\n') => return 1, // torn last line
                Ok(_) => {
                    buf.pop();
                    let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });

    let mut lines: Vec<String> = Vec::new();
    let mut ready_after = None;
    if !info.early {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ready_after.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    if l.ends_with("@R") {
                        ready_after = Some(started.elapsed());
                    }
                    lines.push(l);
                }
                Err(_) => break,
            }
        }
        if ready_after.is_none() {
            let _ = child.kill();
            let status = child.wait();
            return Err(format!(
                "the child never reported that it opened the database (status {status:?}); its stderr:\n{}",
                err_reader.join().unwrap_or_default()
            ));
        }
    }
    thread::sleep(Duration::from_millis(info.delay_ms));
    let _ = child.kill(); // SIGKILL
    let status = child.wait().map_err(|e| format!("wait child: {e}"))?;
    let torn = reader.join().expect("stdout reader");
    let child_stderr = err_reader.join().unwrap_or_default();
    lines.extend(rx.try_iter());
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "the child ended by itself before the kill ({status}); its stderr:\n{child_stderr}"
        ));
    }
    totals.torn_lines += torn;
    let report = parse_report(&lines)?;
    totals.compactions += report.compactions;

    // Keep the crashed image untouched: check either the original (and keep
    // the copy as evidence) or the copy (and leave the original crashed for
    // the next child to recover).
    let _ = fs::remove_dir_all(&info.crashed_copy);
    if info.db_dir.exists() {
        copy_dir(&info.db_dir, &info.crashed_copy).map_err(|e| format!("copy crashed dir: {e}"))?;
    } else {
        fs::create_dir_all(&info.crashed_copy).map_err(|e| format!("mkdir: {e}"))?;
    }
    let check_dir = if info.on_copy {
        &info.crashed_copy
    } else {
        &info.db_dir
    };
    let db = open(check_dir).map_err(|e| format!("reopen after the crash failed: {e:?}"))?;
    let backend = format!(
        "{:?}",
        db.stats().map_err(|e| format!("stats: {e:?}"))?.io_backend
    );
    let (found, problems) = snapshot(&db)?;
    drop(db); // clean close (checkpoint)
    let mut verdict = check(info.cycle, &report, baseline, &found);
    verdict.violations.splice(0..0, problems);
    if !verdict.violations.is_empty() {
        let n = verdict.violations.len();
        let shown: Vec<&String> = verdict.violations.iter().take(40).collect();
        return Err(format!(
            "{n} violation(s) after the crash (child ready after {:?}, {} report lines, {} acks, \
             acked_upto per thread {:?}, ops issued {}):\n  {}",
            ready_after,
            lines.len(),
            report.acks,
            report.acked_upto,
            verdict.issued_ops,
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if info.on_copy {
        let _ = fs::remove_dir_all(&info.crashed_copy);
    }
    let present = found.iter().filter(|s| s.is_some()).count();
    *baseline = found;

    totals.cycles += 1;
    totals.early_kills += u64::from(info.early);
    totals.checked_on_copy += u64::from(info.on_copy);
    totals.issued_ops += verdict.issued_ops;
    totals.acked_ops += verdict.acked_ops;
    totals.acked_records += verdict.acked_records;
    totals.acks += report.acks;
    totals.keys_checked += verdict.keys_checked;
    totals.keys_newer_than_ack += verdict.keys_newer_than_ack;
    totals.batches_visible += verdict.batches_visible;
    match &totals.backend {
        Some(b) if *b != backend => {
            return Err(format!("backend changed from {b} to {backend}"));
        }
        _ => totals.backend = Some(backend),
    }
    Ok(format!(
        "ready {:>4} ms, {:>6} ops, {:>5} acked, {:>4} flushes acked, {:>3} batches visible, {:>4} keys present, {:.2} s",
        ready_after.map_or("-".to_string(), |d| d.as_millis().to_string()),
        verdict.issued_ops,
        verdict.acked_ops,
        report.acks,
        verdict.batches_visible,
        present,
        started.elapsed().as_secs_f64()
    ))
}

#[test]
fn crash_cycles() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
    }
    let cycles = env_u64("EMDB_CRASH_CYCLES").unwrap_or(30);
    let base_seed = env_u64("EMDB_CRASH_SEED").unwrap_or_else(|| fastrand::u64(..));
    let no_early_create = std::env::var("EMDB_CRASH_EARLY_CREATE").as_deref() == Ok("0");
    let from = env_u64("EMDB_CRASH_FROM").map_or(0, |c| c / FRESH_EVERY * FRESH_EVERY);
    eprintln!(
        "crash: base seed {base_seed} (replay: EMDB_CRASH_SEED={base_seed}), cycles {from}..{cycles}, \
         EMDB_IO_BACKEND={}",
        std::env::var("EMDB_IO_BACKEND").unwrap_or_else(|_| "(auto)".into())
    );
    let mut work = tempfile::Builder::new()
        .prefix("emdb-crash-")
        .tempdir()
        .expect("tempdir");
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut baseline: State = vec![None; KEYS];
    let mut db_dir = PathBuf::new();
    for cycle in from..cycles {
        let seed = mix(base_seed ^ mix(cycle.wrapping_add(0x5EED)));
        let mut rng = fastrand::Rng::with_seed(seed);
        let creates = cycle % FRESH_EVERY == 0 || cycle == from;
        if creates {
            if !db_dir.as_os_str().is_empty() {
                let _ = fs::remove_dir_all(&db_dir);
            }
            db_dir = work.path().join(format!("db-{cycle}{}", dir_suffix(cycle)));
            baseline = vec![None; KEYS];
        }
        let early = rng.u32(0..8) == 0 && !(creates && no_early_create);
        let info = CycleInfo {
            cycle,
            seed,
            delay_ms: if early {
                rng.u64(1..=15)
            } else {
                rng.u64(20..=300)
            },
            early,
            on_copy: rng.bool(),
            db_dir: db_dir.clone(),
            crashed_copy: work
                .path()
                .join(format!("crashed-copy{}", dir_suffix(cycle))),
        };
        match run_cycle(&info, &mut baseline, &mut totals) {
            Ok(line) => eprintln!(
                "cycle {cycle:>4}: kill {:>3} ms after {}, check {}: {line}",
                info.delay_ms,
                if early { "spawn" } else { "open " },
                if info.on_copy { "copy    " } else { "in place" },
            ),
            Err(msg) => {
                work.disable_cleanup(true);
                let evidence = if info.on_copy {
                    &info.db_dir
                } else {
                    &info.crashed_copy
                };
                panic!(
                    "crash test FAILED at cycle {cycle} (cycle seed {seed}, base seed {base_seed}; \
                     replay: EMDB_CRASH_SEED={base_seed} EMDB_CRASH_FROM={cycle} EMDB_CRASH_CYCLES={}), \
                     kill {} ms after {}, checked {}.\n\
                     Crashed image, untouched: {}\nDatabase as reopened: {}\n{msg}",
                    cycle + 1,
                    info.delay_ms,
                    if early { "spawn" } else { "open" },
                    if info.on_copy { "a copy" } else { "in place" },
                    evidence.display(),
                    if info.on_copy {
                        info.crashed_copy.display()
                    } else {
                        info.db_dir.display()
                    },
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "crash: PASSED {} cycles in {secs:.1} s, backend {}, base seed {base_seed}: \
         {} operations issued, {} acknowledged operations verified ({} records, {} flush acks), \
         {} keys checked ({} newer than their last ack), {} visible batches verified whole, \
         {} early kills, {} checked on a copy, {} torn report lines dropped, \
         {} compaction runs that retired segments",
        totals.cycles,
        totals.backend.as_deref().unwrap_or("?"),
        totals.issued_ops,
        totals.acked_ops,
        totals.acked_records,
        totals.acks,
        totals.keys_checked,
        totals.keys_newer_than_ack,
        totals.batches_visible,
        totals.early_kills,
        totals.checked_on_copy,
        totals.torn_lines,
        totals.compactions
    );
}

// ---------------------------------------------------------------------------
// The checker itself: it must flag lost, phantom and torn states.

#[test]
fn checker_flags_lost_phantom_and_torn_states() {
    let lines: Vec<String> = [
        "running 1 test",
        "test crash_cycles ... @R",
        "@I 0 1 P 5",
        "@I 0 2 B 1,2,3",
        "@I 0 3 D 7",
        "@A 0 4",
        "@I 0 5 P 5",
        "@I 1 1 B 10,11",
        "@I 1 2 P 12",
        "@I 1 3 C",
        "@I 0 6 D 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = parse_report(&lines).expect("parse");
    assert!(r.ready);
    assert_eq!(r.acked_upto, vec![4, 0, 0]);
    let cycle = 9;
    let mut baseline: State = vec![None; KEYS];
    baseline[7] = Some(value(cycle - 1, 7, 44, false));
    baseline[20] = Some(value(cycle - 2, 20, 3, true));
    baseline[KEYS_PER_THREAD + 10] = Some(value(cycle - 1, KEYS_PER_THREAD + 10, 1, false));
    let b = |id: usize| Some(value(cycle, id, 2, true));
    let k1 = KEYS_PER_THREAD;

    // A consistent outcome: acked writes there, unacked batch of thread 1 absent.
    let mut good: State = vec![None; KEYS];
    good[5] = Some(value(cycle, 5, 1, false));
    (good[1], good[2], good[3]) = (b(1), b(2), b(3));
    good[k1 + 10] = baseline[k1 + 10].clone();
    good[20] = baseline[20].clone();
    let v = check(cycle, &r, &baseline, &good);
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert_eq!(v.acked_ops, 3);
    assert_eq!(v.acked_records, 5);
    // Later unacked states are fine too: key 5's second put, key 1's remove,
    // thread 1's whole batch and put.
    let mut later = good.clone();
    later[5] = Some(value(cycle, 5, 5, false));
    later[1] = None;
    later[k1 + 10] = Some(value(cycle, k1 + 10, 1, true));
    later[k1 + 11] = Some(value(cycle, k1 + 11, 1, true));
    later[k1 + 12] = Some(value(cycle, k1 + 12, 2, false));
    let v = check(cycle, &r, &baseline, &later);
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert_eq!(v.batches_visible, 2);

    let expect = |state: &State, what: &str| {
        let v = check(cycle, &r, &baseline, state);
        assert!(
            v.violations.iter().any(|m| m.contains(what)),
            "expected a violation containing {what:?}, got {:?}",
            v.violations
        );
    };
    // Lost acknowledged put.
    let mut s = good.clone();
    s[5] = None;
    expect(&s, "acknowledged write lost");
    // A key nobody touched this cycle vanished.
    let mut s = good.clone();
    s[20] = None;
    expect(&s, "no operation could have removed it");
    // Lost acknowledged remove: the baseline value of key 7 came back.
    let mut s = good.clone();
    s[7] = baseline[7].clone();
    expect(&s, "acknowledged write lost");
    // A value never written: wrong padding, a wrong key, an unissued version.
    let mut s = good.clone();
    let mut v5 = value(cycle, 5, 1, false);
    *v5.last_mut().unwrap() ^= 1;
    s[5] = Some(v5);
    expect(&s, "never written");
    let mut s = good.clone();
    s[5] = Some(value(cycle, 6, 1, false));
    expect(&s, "never written");
    let mut s = good.clone();
    s[k1 + 12] = Some(value(cycle, k1 + 12, 3, false));
    expect(&s, "never written");
    // A torn unacknowledged batch.
    let mut s = good.clone();
    s[k1 + 10] = Some(value(cycle, k1 + 10, 1, true));
    expect(&s, "is torn");
}
