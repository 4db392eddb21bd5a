//! Power-loss simulation (feature `fault-injection`): writers (and a thread
//! calling `compact()`, beside the background compactor) run against a
//! database whose fault plan records which writes each completed sync made
//! durable. The power goes off at a random moment (a timer, or the Nth I/O
//! operation, which then is the write in flight); the database is abandoned;
//! a durable image of its directory is built, holding what was synced plus,
//! at random, whole or sector-torn pieces of what was not (as a disk may
//! have written back); the image is opened and checked:
//!
//! 1. every key holds the state of its last operation acknowledged by a
//!    `flush()` that returned Ok, or of a later operation;
//! 2. every value present is byte for byte one written for that key;
//! 3. batches are whole;
//! 4. with one shard and an image holding only synced writes, each
//!    writer's surviving operations are a prefix of those it issued (the
//!    synced part of a shard's log is a prefix of it). Writes that were not
//!    synced may survive out of order across segment files, as across
//!    shards, so in general order holds per key (check 1), as design
//!    invariant 3 states;
//! 5. opening never fails: every image is a state a real crash can leave.
//!
//! Knobs: `EMDB_POWER_CYCLES` (default 30), `EMDB_POWER_SEED`,
//! `EMDB_IO_BACKEND=uring|portable`.
#![cfg(feature = "fault-injection")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

#[path = "support/power_cut.rs"]
mod power_cut;
use power_cut::{image_policy, reopen_image, tracked};

use emdb::{Emdb, FaultPlan, ImagePolicy};

const THREADS: usize = 4;
const KEYS_PER_THREAD: u32 = 40;
const MAX_OPS: usize = 4000;

/// One operation a writer issued.
#[derive(Clone, Debug)]
struct Op {
    key: u32,
    /// `None` for a remove.
    value: Option<Vec<u8>>,
    /// Operations of one `insert_many` share its first operation's index.
    batch: Option<usize>,
}

struct Writer {
    ops: Vec<Op>,
    /// Operations below this index were acknowledged durable.
    acked: usize,
}

fn key_name(th: usize, key: u32) -> String {
    format!("t{th}-k{key:03}")
}

fn value_for(th: usize, key: u32, i: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut v = format!("t{th}-k{key:03}-op{i}-").into_bytes();
    let pad = rng.usize(0..700);
    v.extend((0..pad).map(|j| b'a' + ((i + j) % 26) as u8));
    v
}

fn write_loop(db: &Emdb, th: usize, seed: u64, w: &Mutex<Writer>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Flushes are 2-20% of the operations: rare flushes leave more
    // unsynced writes for the image to tear.
    let flush_pct = rng.u32(2..=20);
    loop {
        let i = w.lock().unwrap().ops.len();
        if i >= MAX_OPS {
            return;
        }
        let r = rng.u32(0..100 - 20 + flush_pct);
        let ok = if r < 55 {
            let key = rng.u32(0..KEYS_PER_THREAD);
            let value = value_for(th, key, i, &mut rng);
            w.lock().unwrap().ops.push(Op {
                key,
                value: Some(value.clone()),
                batch: None,
            });
            db.insert(key_name(th, key), value).is_ok()
        } else if r < 65 {
            let key = rng.u32(0..KEYS_PER_THREAD);
            w.lock().unwrap().ops.push(Op {
                key,
                value: None,
                batch: None,
            });
            db.remove(key_name(th, key)).is_ok()
        } else if r < 80 {
            let n = rng.usize(2..8);
            let mut keys: Vec<u32> = (0..KEYS_PER_THREAD).collect();
            rng.shuffle(&mut keys);
            let mut items = Vec::new();
            {
                let mut g = w.lock().unwrap();
                for &key in &keys[..n] {
                    let value = value_for(th, key, i, &mut rng);
                    g.ops.push(Op {
                        key,
                        value: Some(value.clone()),
                        batch: Some(i),
                    });
                    items.push((key_name(th, key), value));
                }
            }
            db.insert_many(items).is_ok()
        } else {
            let upto = w.lock().unwrap().ops.len();
            let ok = db.flush().is_ok();
            if ok {
                w.lock().unwrap().acked = upto;
            }
            ok
        };
        if !ok {
            return;
        }
    }
}

/// The state a key holds after the operations `ops[..upto]`: the index of
/// the operation that set it (None: never written, or the value absent
/// since the start).
fn state_after(ops: &[Op], key: u32, upto: usize) -> Option<usize> {
    ops[..upto].iter().rposition(|o| o.key == key)
}

/// What the image holds for each key of one writer: the index of the
/// operation whose state it shows (`None`: absent and never removed or
/// written), after checking the value is one that was written.
fn observed(db: &Emdb, th: usize, ops: &[Op], ctx: &str) -> HashMap<u32, Option<usize>> {
    let mut out = HashMap::new();
    for key in 0..KEYS_PER_THREAD {
        let got = db.get(key_name(th, key)).expect("get");
        let st = match got {
            Some(v) => {
                let i = ops
                    .iter()
                    .position(|o| o.key == key && o.value.as_deref() == Some(&v[..]));
                assert!(
                    i.is_some(),
                    "{ctx}: {} holds a value never written for it: {:?}",
                    key_name(th, key),
                    String::from_utf8_lossy(&v[..v.len().min(40)])
                );
                i
            }
            None => None,
        };
        out.insert(key, st);
    }
    out
}

fn check_writer(db: &Emdb, th: usize, w: &Writer, prefix_only: bool, ctx: &str) {
    let ops = &w.ops;
    let seen = observed(db, th, ops, ctx);
    for key in 0..KEYS_PER_THREAD {
        let name = key_name(th, key);
        let acked = state_after(ops, key, w.acked);
        match seen[&key] {
            Some(i) => {
                // 1 + sequence order: not older than the acknowledged state.
                if let Some(a) = acked {
                    assert!(i >= a, "{ctx}: {name} went back from op {a} to op {i}");
                }
            }
            None => {
                // Absent: never acknowledged as present, or a remove of it
                // issued after the acknowledged state may have landed.
                let ok = match acked {
                    None => true,
                    Some(a) => {
                        ops[a].value.is_none()
                            || ops[a + 1..]
                                .iter()
                                .any(|o| o.key == key && o.value.is_none())
                    }
                };
                assert!(
                    ok,
                    "{ctx}: {name} lost: acknowledged op {acked:?}, now absent"
                );
            }
        }
    }
    // 3. Batches are whole.
    for (key, st) in &seen {
        let Some(i) = *st else { continue };
        let Some(b) = ops[i].batch else { continue };
        for (j, o) in ops.iter().enumerate().filter(|(_, o)| o.batch == Some(b)) {
            let later_or_same = match seen[&o.key] {
                Some(k) => k >= j,
                None => ops[j + 1..]
                    .iter()
                    .any(|p| p.key == o.key && p.value.is_none()),
            };
            assert!(
                later_or_same,
                "{ctx}: batch {b} is partial: key {key} shows it, {} does not",
                key_name(th, o.key)
            );
        }
    }
    // 4. One shard, synced writes only: what survived is a prefix of what
    // was issued.
    if prefix_only {
        let fits = |p: usize| {
            (0..KEYS_PER_THREAD).all(|k| {
                let want = state_after(ops, k, p);
                match (seen[&k], want) {
                    (Some(i), Some(j)) => i == j,
                    (None, None) => true,
                    (None, Some(j)) => ops[j].value.is_none(),
                    (Some(_), None) => false,
                }
            })
        };
        let prefix = (w.acked..=ops.len()).find(|&p| fits(p));
        if prefix.is_none() {
            // Where it breaks: each key's state against the newest prefix
            // still consistent with the keys that show operations.
            let newest = seen.values().flatten().max().copied().unwrap_or(0);
            let mut diff = Vec::new();
            for k in 0..KEYS_PER_THREAD {
                let want = state_after(ops, k, newest + 1);
                if seen[&k] != want {
                    diff.push((k, seen[&k], want));
                }
            }
            panic!(
                "{ctx}: writer {th}: the surviving state is no prefix of its operations \
                 (acknowledged {}, issued {}, newest surviving op {newest}); \
                 (key, seen, state after newest): {diff:?}",
                w.acked,
                ops.len()
            );
        }
    }
}

/// 256 KiB segments (rotation every few hundred records) in most cycles;
/// 4 MiB in every fourth, whose files grow from 1 MiB as they fill. With
/// the `encrypt` feature, every third cycle's database is encrypted.
fn builder(path: &Path, shards: usize, seed: u64) -> emdb::EmdbBuilder {
    let segment_size = if seed % 4 == 3 { 4 << 20 } else { 256 * 1024 };
    let b = Emdb::builder()
        .path(path)
        .shards(shards)
        .segment_size(segment_size)
        .max_value_len(4096);
    #[cfg(feature = "encrypt")]
    let b = if seed % 3 == 1 {
        b.encryption_key([0x9d; 32])
    } else {
        b
    };
    b
}

/// Totals over a run, printed at its end.
#[derive(Default)]
struct Totals {
    acked_ops: usize,
    issued_ops: usize,
    volatile: u64,
    kept: u64,
    torn: u64,
    dropped: u64,
    durable_only: u64,
    counted: u64,
    compactions: u64,
}

fn cycle(dir: &Path, seed: u64, shards: usize, totals: &mut Totals) {
    let ctx = format!("seed {seed} shards {shards}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let live = dir.join("live");
    let plan = FaultPlan::new();
    plan.track_durable();
    let timed = rng.bool();
    if !timed {
        plan.power_off_after(rng.u64(5..600));
    }
    let db = builder(&live, shards, seed)
        .fault_plan(plan.clone())
        .build()
        .expect("open");
    let writers: Vec<Mutex<Writer>> = (0..THREADS)
        .map(|_| {
            Mutex::new(Writer {
                ops: Vec::new(),
                acked: 0,
            })
        })
        .collect();
    let delay = Duration::from_micros(rng.u64(200..15_000));
    let compactions = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for (th, w) in writers.iter().enumerate() {
            let db = &db;
            let seed = seed.wrapping_mul(31).wrapping_add(th as u64);
            s.spawn(move || write_loop(db, th, seed, w));
        }
        // Explicit compactions beside the background compactor, until the
        // power goes: the cut lands in every step of one.
        let (db, plan, compactions) = (&db, &plan, &compactions);
        let every = rng.u64(1..8);
        s.spawn(move || {
            while !plan.powered_off() {
                std::thread::sleep(Duration::from_millis(every));
                if db.compact().is_ok() {
                    let n = db.stats().map_or(0, |st| st.compactions);
                    compactions.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        if timed {
            std::thread::sleep(delay);
        } else {
            // Let the countdown run out, or the writers finish.
            while !plan.powered_off()
                && writers
                    .iter()
                    .any(|w| w.lock().unwrap().ops.len() < MAX_OPS)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        plan.power_off();
    });
    // The machine is dead: closing writes nothing (every I/O fails).
    drop(db);
    let policy = image_policy(rng.bool());
    let image = dir.join("image");
    let report = plan
        .durable_image(&live, &image, policy, seed)
        .expect("durable image");
    let db = builder(&image, shards, seed)
        .build()
        .unwrap_or_else(|e| panic!("{ctx}: the image does not open: {e:?} ({report:?})"));
    let ctx = format!("{ctx} {policy:?} {report:?}");
    let mut acked = 0;
    for (th, w) in writers.iter().enumerate() {
        let w = w.lock().unwrap();
        acked += w.acked;
        totals.issued_ops += w.ops.len();
        check_writer(
            &db,
            th,
            &w,
            shards == 1 && policy == ImagePolicy::DurableOnly,
            &ctx,
        );
    }
    // The recovered database takes writes again.
    db.insert("after", "power").expect("insert after recovery");
    db.flush().expect("flush after recovery");
    if std::env::var_os("EMDB_POWER_VERBOSE").is_some() {
        eprintln!("{ctx}: {acked} acknowledged ops checked");
    }
    totals.acked_ops += acked;
    totals.volatile += report.volatile_writes;
    totals.kept += report.kept;
    totals.torn += report.torn;
    totals.dropped += report.dropped;
    totals.durable_only += u64::from(policy == ImagePolicy::DurableOnly);
    totals.counted += u64::from(!timed);
    totals.compactions += compactions.load(std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn power_loss_keeps_every_acknowledged_write() {
    let cycles = env_u64("EMDB_POWER_CYCLES", 30);
    let base: u64 = std::env::var("EMDB_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("power-loss cycles: {cycles}, EMDB_POWER_SEED={base}");
    let started = std::time::Instant::now();
    let mut totals = Totals::default();
    for c in 0..cycles {
        let seed = base.wrapping_add(c);
        let t = tempfile::tempdir().expect("tempdir");
        let shards = 1 + (seed % 2) as usize;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cycle(t.path(), seed, shards, &mut totals)
        }));
        if let Err(e) = r {
            eprintln!("power-loss cycle {c} failed: replay with EMDB_POWER_SEED={seed} EMDB_POWER_CYCLES=1 (shards {shards})");
            std::panic::resume_unwind(e);
        }
    }
    let t = &totals;
    eprintln!(
        "power-loss: {cycles} cycles passed in {:.1} s: {} operations issued, {} acknowledged \
         and verified; power cut by timer in {} cycles, at the Nth I/O in {}; images: {} \
         synced-only, {} random; volatile writes {}: {} kept, {} torn at a sector, {} reverted; \
         {} compaction runs that retired segments",
        started.elapsed().as_secs_f64(),
        t.issued_ops,
        t.acked_ops,
        cycles - t.counted,
        t.counted,
        t.durable_only,
        cycles - t.durable_only,
        t.volatile,
        t.kept,
        t.torn,
        t.dropped,
        t.compactions
    );
}

/// An environment knob as a number, or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Opens the database at `path` with `configure`'s settings, under `plan`
/// if one is given.
fn open_with(
    path: &Path,
    plan: Option<&FaultPlan>,
    configure: impl Fn(emdb::EmdbBuilder) -> emdb::EmdbBuilder,
) -> Emdb {
    let b = configure(Emdb::builder().path(path));
    match plan {
        Some(p) => b.fault_plan(p.clone()),
        None => b,
    }
    .build()
    .expect("open")
}

fn record_value(k: u32, len: usize) -> Vec<u8> {
    let mut v = format!("value-of-{k:05}-").into_bytes();
    v.extend((0..len).map(|i| b'a' + ((k as usize + i) % 26) as u8));
    v
}

/// A database created at a path that does not exist yet (nor do two of its
/// ancestors), 1,000 records, `flush()` Ok, then the power goes off. A
/// restart must find all 1,000: the new directories' entries must have been
/// made durable in their parents before the flush could be acknowledged.
#[test]
fn a_new_database_keeps_its_first_flush_after_a_power_cut() {
    for cycle in 0..6u64 {
        let t = tempfile::tempdir().expect("tempdir");
        let live = t.path().join("srv").join("app").join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(1 + (cycle % 2) as usize)
                .segment_size(256 * 1024)
                .max_value_len(4096),
        );
        for k in 0..1000 {
            db.insert(format!("key-{k:05}"), record_value(k, 100))
                .expect("insert");
        }
        db.flush().expect("flush");
        plan.power_off();
        drop(db);
        let policy = image_policy(cycle % 2 == 0);
        let (db, ctx) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        let missing = (0..1000u32)
            .filter(|k| db.get(format!("key-{k:05}")).expect("get") != Some(record_value(*k, 100)))
            .count();
        assert_eq!(
            missing, 0,
            "cycle {cycle}: {missing} of 1,000 acknowledged records lost ({ctx})"
        );
    }
}

/// After a power cut no flush calls a record durable that is not: once
/// records accepted after the cut wait to be synced, every flush fails. A
/// flush right after the cut, with everything accepted already synced,
/// may succeed without touching the disk (as it does for a writer that
/// stopped on a segment file that could not be created, having appended
/// nothing), or fail (the core's own write of a sync marker after the
/// last flush failed and refused the shard); either is true.
#[test]
fn a_flush_after_a_power_cut_never_calls_unsynced_records_durable() {
    let mut succeeded = 0;
    for cycle in 0..6u64 {
        let t = tempfile::tempdir().expect("tempdir");
        let live = t.path().join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(1 + (cycle % 2) as usize)
                .segment_size(1 << 20)
                .max_value_len(4096),
        );
        for k in 0..200 {
            db.insert(format!("key-{k:05}"), record_value(k, 100))
                .expect("insert");
        }
        db.flush().expect("flush");
        plan.power_off();
        succeeded += u32::from(db.flush().is_ok());
        // Accepted into the log buffers, or refused; never durable.
        for k in 200..210 {
            let _ = db.insert(format!("key-{k:05}"), record_value(k, 100));
        }
        assert!(
            db.flush().is_err(),
            "cycle {cycle}: a flush after the cut reported unsynced records durable"
        );
        assert!(
            db.flush().is_err(),
            "cycle {cycle}: the next flush succeeded"
        );
        drop(db);
        let policy = image_policy(cycle % 3 == 0);
        let (db, ctx) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        let missing = (0..200u32)
            .filter(|k| db.get(format!("key-{k:05}")).expect("get") != Some(record_value(*k, 100)))
            .count();
        assert_eq!(
            missing, 0,
            "cycle {cycle}: {missing} of 200 flushed records lost ({ctx})"
        );
    }
    eprintln!("the flush right after the cut succeeded in {succeeded} of 6 cycles");
}

/// An existing database (its directory durable), 8 KiB segments, one writer
/// inserting and flushing every few records, so that segments rotate every
/// few flushes; the power goes off at a random I/O. Every record a flush
/// acknowledged must be found with its value: each new segment's entry, and
/// the manifest that lists it, must be durable before the first write into
/// it is acknowledged.
#[test]
fn segment_rotation_then_power_cut_keeps_every_acknowledged_write() {
    let base = env_u64("EMDB_POWER_SEED", 7);
    for cycle in 0..16u64 {
        let seed = base.wrapping_add(cycle);
        let mut rng = fastrand::Rng::with_seed(seed);
        let t = tempfile::tempdir().expect("tempdir");
        let live = t.path().join("db");
        let shards = 1 + (seed % 2) as usize;
        let build = |plan: Option<&FaultPlan>| {
            open_with(&live, plan, |b| {
                b.shards(shards)
                    .segment_size(8192)
                    .max_key_len(64)
                    .max_value_len(1024)
            })
        };
        // Created and closed before the power model starts: its directory
        // and first segments are durable.
        drop(build(None));
        let plan = FaultPlan::new();
        plan.track_durable();
        plan.power_off_after(rng.u64(250..1500));
        let db = build(Some(&plan));
        let mut acked = 0u32;
        let mut issued = 0u32;
        'run: while issued < 20_000 {
            for _ in 0..rng.u32(1..8) {
                if db
                    .insert(
                        format!("key-{issued:05}"),
                        record_value(issued, rng.usize(50..600)),
                    )
                    .is_err()
                {
                    break 'run;
                }
                issued += 1;
            }
            if db.flush().is_err() {
                break;
            }
            acked = issued;
        }
        let segments = std::fs::read_dir(&live)
            .expect("read dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count();
        drop(db);
        let policy = image_policy(rng.bool());
        let (db, ctx) = reopen_image(&plan, &live, &t.path().join("image"), policy, seed);
        let ctx = format!("seed {seed}, shards {shards}, {segments} segment files, {acked} acknowledged of {issued}: {ctx}");
        for k in 0..issued {
            let got = db.get(format!("key-{k:05}")).expect("get");
            match got {
                Some(v) => assert!(
                    v.starts_with(format!("value-of-{k:05}-").as_bytes()),
                    "{ctx}: key-{k:05} holds a value never written for it"
                ),
                None => assert!(k >= acked, "{ctx}: acknowledged key-{k:05} lost"),
            }
        }
        assert!(
            segments > 2 * shards,
            "{ctx}: the run must rotate segments before the power cut"
        );
    }
}

/// Compaction must never retire the last durable copy of a key's state: a
/// record made dead by a write that is not durable yet stays until that
/// write is. One writer overwrites a few keys, flushing now and then, while
/// compaction runs back to back on tiny segments; the power goes off at a
/// random moment, and every key must show its last acknowledged state or a
/// later one.
#[test]
fn compaction_never_drops_a_record_whose_successor_is_not_durable() {
    let base = env_u64("EMDB_POWER_SEED", 11);
    let mut compactions = 0;
    let cycles = env_u64("EMDB_POWER_CYCLES", 30);
    for cycle in 0..cycles {
        let seed = base.wrapping_add(cycle);
        let mut rng = fastrand::Rng::with_seed(seed);
        let t = tempfile::tempdir().expect("tempdir");
        let live = t.path().join("db");
        let build = |plan: Option<&FaultPlan>| {
            open_with(&live, plan, |b| {
                b.shards(1)
                    .segment_size(8192)
                    .max_key_len(64)
                    .max_value_len(1024)
                    .compaction_threshold(0.2)
                    .background_compaction(false)
            })
        };
        drop(build(None));
        let plan = FaultPlan::new();
        plan.track_durable();
        let timed = rng.bool();
        if !timed {
            plan.power_off_after(rng.u64(20..2000));
        }
        let db = build(Some(&plan));
        const KEYS: u32 = 8;
        // Per key: the versions written, and how many were acknowledged.
        let writes: Mutex<Vec<Vec<u32>>> = Mutex::new(vec![Vec::new(); KEYS as usize]);
        let acked: Mutex<Vec<usize>> = Mutex::new(vec![0; KEYS as usize]);
        let runs = std::sync::atomic::AtomicU64::new(0);
        let delay = Duration::from_millis(rng.u64(20..200));
        std::thread::scope(|s| {
            let (db, plan, writes, acked, runs) = (&db, &plan, &writes, &acked, &runs);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ 1);
                let mut version = 0u32;
                while !plan.powered_off() {
                    version += 1;
                    let k = rng.u32(0..KEYS);
                    writes.lock().unwrap()[k as usize].push(version);
                    if db
                        .insert(format!("k{k}"), record_value(version, 300))
                        .is_err()
                    {
                        return;
                    }
                    if rng.u32(0..10) == 0 {
                        let now: Vec<usize> =
                            writes.lock().unwrap().iter().map(|w| w.len()).collect();
                        if db.flush().is_err() {
                            return;
                        }
                        *acked.lock().unwrap() = now;
                    }
                }
            });
            s.spawn(move || {
                while !plan.powered_off() {
                    if db.compact().is_ok() {
                        runs.store(
                            db.stats().map_or(0, |st| st.compactions),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                }
            });
            if timed {
                std::thread::sleep(delay);
            } else {
                let end = std::time::Instant::now() + Duration::from_secs(5);
                while !plan.powered_off() && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            plan.power_off();
        });
        drop(db);
        compactions += runs.load(std::sync::atomic::Ordering::Relaxed);
        let policy = image_policy(rng.bool());
        let (db, ctx) = reopen_image(&plan, &live, &t.path().join("image"), policy, seed);
        let writes = writes.into_inner().unwrap();
        let acked = acked.into_inner().unwrap();
        for k in 0..KEYS as usize {
            if acked[k] == 0 {
                continue;
            }
            let got = db.get(format!("k{k}")).expect("get");
            let got = got.unwrap_or_else(|| {
                panic!(
                    "seed {seed}: k{k} lost; {} writes acknowledged ({ctx})",
                    acked[k]
                )
            });
            let i = writes[k]
                .iter()
                .position(|v| record_value(*v, 300) == got)
                .unwrap_or_else(|| panic!("seed {seed}: k{k} holds a value never written"));
            assert!(
                i + 1 >= acked[k],
                "seed {seed}: k{k} shows write {} of {}, older than the {} acknowledged ({ctx})",
                i + 1,
                writes[k].len(),
                acked[k]
            );
        }
    }
    assert!(compactions > 0, "compaction must have run");
}
