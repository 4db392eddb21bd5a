//! An interpreter of operation sequences (compaction included) with reopens
//! and injected I/O
//! faults, checked against a `BTreeMap` model. The input bytes drive
//! everything: the configuration, the operations and their arguments, and
//! which write or sync fails with which errno. Shared by the seeded property
//! test `tests/fault_model.rs` and the `cargo fuzz` target
//! `fuzz/fuzz_targets/ops.rs` (which includes this file with `#[path]`).
//!
//! Needs emdb's `fault-injection` feature, `tempfile` and `libc`.
//!
//! What is checked:
//! - Without an injected fault every call succeeds and every read (get,
//!   remove's returned value, iter, len) matches the model exactly.
//! - Every error is explained by an injected fault (`Error::Io` with the
//!   injected errno, or `Error::Poisoned`); reads never fail. After a flush
//!   failed, no later flush of that session succeeds; with one shard every
//!   later write is refused too. A write refused with `Poisoned` never
//!   appears, not even after a reopen.
//! - After a fault the database may hold either outcome of each failed
//!   write, and reads must show one of them.
//! - After a reopen (drop + open, without faults), for every key: the value
//!   is the last one made durable (by an `Ok` flush or checkpoint, an `Ok`
//!   write-through write, or a fault-free close) or one written later, and
//!   never one that was not written for that key. Batches are whole: no
//!   batch shows some of its pairs while others show an older value.
//!   Values carry a unique tag, so each observed value names its write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use emdb::{Emdb, Error, FaultPlan, FlushPolicy, IoBackend};

/// Segment size of the databases under test: small, so segments rotate.
pub const SEGMENT_SIZE: u64 = 64 << 10;
/// Largest value: a few of them fill a segment.
pub const MAX_VALUE_LEN: usize = 12 << 10;
/// Operations per run at most.
pub const MAX_OPS: usize = 250;
/// Keys in play.
const KEYS: u8 = 12;

type Val = Option<Vec<u8>>;

/// Figures of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub ops: usize,
    pub reopens: usize,
    pub faults_injected: u64,
    pub errors: usize,
}

/// Reads the input; zeros once it runs out.
struct Input<'a> {
    b: &'a [u8],
}

impl Input<'_> {
    fn next(&mut self) -> Option<u8> {
        let (x, rest) = self.b.split_first()?;
        self.b = rest;
        Some(*x)
    }
    fn u8(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }
}

fn key(i: u8) -> Vec<u8> {
    match i % KEYS {
        // Binary keys, a zero byte included.
        10 => vec![0xff, 0, 1],
        11 => vec![0],
        n => format!("key-{n}").into_bytes(),
    }
}

/// One write of a key, in the model.
#[derive(Clone, Debug)]
struct Event {
    t: u64,
    val: Val,
    /// The call returned `Ok` (else it failed and may or may not have taken
    /// effect).
    acked: bool,
    /// Durable by itself (an `Ok` write-through write).
    durable: bool,
}

#[derive(Clone, Debug)]
struct Batch {
    t: u64,
    pairs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Which backends a run may use: `EMDB_IO_BACKEND` wins when set.
fn backend(sel: u8) -> IoBackend {
    if std::env::var_os("EMDB_IO_BACKEND").is_some() {
        IoBackend::Auto
    } else if sel & 1 == 0 {
        IoBackend::Uring
    } else {
        IoBackend::Portable
    }
}

struct Cfg {
    shards: usize,
    backend: IoBackend,
    policy: FlushPolicy,
}

struct Run<'p> {
    cfg: Cfg,
    path: &'p Path,
    db: Option<Emdb>,
    plan: FaultPlan,
    /// Per key: what was written since the session opened (the first event
    /// is the state found at open).
    hist: BTreeMap<Vec<u8>, Vec<Event>>,
    /// Per key: the values reads may show now (one, unless a write failed).
    now: BTreeMap<Vec<u8>, BTreeSet<Val>>,
    /// Values refused with `Poisoned`: never to be seen.
    refused: BTreeSet<Vec<u8>>,
    batches: Vec<Batch>,
    /// Everything written at or before this time is durable.
    durable_t: u64,
    t: u64,
    tag: u64,
    /// A flush of this session failed.
    flush_failed: bool,
    /// A write, flush or checkpoint of this session failed: the shard it
    /// hit is poisoned.
    any_failed: bool,
    summary: Summary,
    log: Vec<String>,
}

impl Run<'_> {
    fn fail(&self, msg: String) -> String {
        let start = self.log.len().saturating_sub(40);
        let mut s = format!(
            "op {}: {msg}\nconfig: {} shard(s), backend {:?}, {:?}\nlast operations:\n",
            self.summary.ops, self.cfg.shards, self.cfg.backend, self.cfg.policy
        );
        for l in &self.log[start..] {
            let _ = writeln!(s, "  {l}");
        }
        s
    }

    fn open(&mut self) -> Result<(), String> {
        self.plan = FaultPlan::new();
        let db = Emdb::builder()
            .path(self.path)
            .shards(self.cfg.shards)
            .io_backend(self.cfg.backend)
            .flush_policy(self.cfg.policy)
            .segment_size(SEGMENT_SIZE)
            .max_key_len(16)
            .max_value_len(MAX_VALUE_LEN)
            .fault_plan(self.plan.clone())
            .build()
            .map_err(|e| self.fail(format!("open failed: {e:?}")))?;
        self.db = Some(db);
        self.flush_failed = false;
        self.any_failed = false;
        Ok(())
    }

    fn db(&self) -> &Emdb {
        self.db.as_ref().expect("an open database")
    }

    fn value(&mut self, size: u8) -> Vec<u8> {
        self.tag += 1;
        let len = match size {
            0..=199 => 8 + size as usize % 64,
            200..=247 => 8 + (size as usize - 199) * 40,
            _ => MAX_VALUE_LEN - (size as usize - 248) * 1000,
        };
        let mut v = vec![(self.tag % 251) as u8; len];
        v[..8].copy_from_slice(&self.tag.to_le_bytes());
        v
    }

    /// An error from a write: explained by a fault, and whether the write
    /// may have taken effect.
    fn write_error(&mut self, what: &str, e: &Error) -> Result<bool, String> {
        self.summary.errors += 1;
        self.any_failed = true;
        if self.plan.faults_injected() == 0 {
            return Err(self.fail(format!("{what} failed without a fault: {e:?}")));
        }
        match e {
            // Refused before anything was appended.
            Error::Poisoned { .. } => Ok(false),
            Error::Io(io) if matches!(io.raw_os_error(), Some(libc::EIO | libc::ENOSPC)) => {
                Ok(true)
            }
            _ => Err(self.fail(format!("{what} failed with an unexpected error: {e:?}"))),
        }
    }

    /// A write returned Ok: with one shard, that shard must not be
    /// poisoned.
    fn check_refusal(&self, what: &str) -> Result<(), String> {
        if self.cfg.shards == 1 && self.any_failed {
            return Err(self.fail(format!(
                "{what} succeeded on a single-shard database after a failure"
            )));
        }
        Ok(())
    }

    fn record(&mut self, k: &[u8], val: Val, acked: bool) {
        let durable = acked && self.cfg.policy == FlushPolicy::WriteThrough;
        self.record_with(k, val, acked, durable);
    }

    fn record_with(&mut self, k: &[u8], val: Val, acked: bool, durable: bool) {
        self.hist.get_mut(k).expect("known key").push(Event {
            t: self.t,
            val: val.clone(),
            acked,
            durable,
        });
        let now = self.now.get_mut(k).expect("known key");
        if acked {
            now.clear();
        }
        now.insert(val);
    }

    fn check_read(&mut self, what: &str, k: &[u8], got: Val) -> Result<(), String> {
        let now = &self.now[k];
        if !now.contains(&got) {
            return Err(self.fail(format!(
                "{what} {} = {}, model allows {}",
                show(k),
                show_val(&got),
                now.iter().map(show_val).collect::<Vec<_>>().join(" or ")
            )));
        }
        let now = self.now.get_mut(k).expect("known key");
        now.clear();
        now.insert(got);
        Ok(())
    }

    fn step(&mut self, op: u8, r: &mut Input<'_>) -> Result<(), String> {
        self.t += 1;
        match op % 32 {
            0..=8 => {
                let k = key(r.u8());
                let v = self.value(r.u8());
                self.log.push(format!(
                    "insert {} {}",
                    show(&k),
                    show_val(&Some(v.clone()))
                ));
                match self.db().insert(k.clone(), v.clone()) {
                    Ok(()) => {
                        self.check_refusal("insert")?;
                        self.record(&k, Some(v), true);
                    }
                    Err(e) => {
                        if self.write_error("insert", &e)? {
                            self.record(&k, Some(v), false);
                        } else {
                            self.refused.insert(v);
                        }
                    }
                }
            }
            9..=12 => {
                let k = key(r.u8());
                self.log.push(format!("remove {}", show(&k)));
                match self.db().remove(&k) {
                    Ok(prev) => {
                        self.check_refusal("remove")?;
                        // Removing an absent key writes nothing, so it
                        // makes nothing durable.
                        let durable =
                            prev.is_some() && self.cfg.policy == FlushPolicy::WriteThrough;
                        self.check_read("remove returned", &k, prev)?;
                        self.record_with(&k, None, true, durable);
                    }
                    Err(e) => {
                        if self.write_error("remove", &e)? {
                            self.record(&k, None, false);
                        }
                    }
                }
            }
            16 => self.transaction(r)?,
            13..=15 => {
                let n = 1 + r.u8() % 6;
                let mut items = Vec::new();
                for _ in 0..n {
                    let k = key(r.u8());
                    let v = self.value(r.u8());
                    items.push((k, v));
                }
                // Later pairs with the same key win.
                let pairs: BTreeMap<Vec<u8>, Vec<u8>> = items.iter().cloned().collect();
                self.log.push(format!(
                    "insert_many [{}]",
                    items
                        .iter()
                        .map(|(k, v)| format!("{}={}", show(k), show_val(&Some(v.clone()))))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                let acked = match self.db().insert_many(items.clone()) {
                    Ok(()) => {
                        self.check_refusal("insert_many")?;
                        Some(true)
                    }
                    Err(e) => self.write_error("insert_many", &e)?.then_some(false),
                };
                match acked {
                    Some(acked) => {
                        for (k, v) in &pairs {
                            self.record(k, Some(v.clone()), acked);
                        }
                        self.batches.push(Batch { t: self.t, pairs });
                    }
                    None => self.refused.extend(items.into_iter().map(|(_, v)| v)),
                }
            }
            17 => {
                self.log.push("clear".into());
                let acked = match self.db().clear() {
                    Ok(()) => {
                        self.check_refusal("clear")?;
                        Some(true)
                    }
                    Err(e) => self.write_error("clear", &e)?.then_some(false),
                };
                if let Some(acked) = acked {
                    for i in 0..KEYS {
                        self.record(&key(i), None, acked);
                    }
                }
            }
            18..=21 => {
                self.log.push("flush".into());
                self.sync_op("flush", |db| db.flush())?;
            }
            22 => {
                self.log.push("checkpoint".into());
                self.sync_op("checkpoint", |db| db.checkpoint())?;
            }
            23..=24 => {
                self.log.push("reopen".into());
                self.reopen()?;
            }
            25..=26 => {
                let after = (r.u8() % 8) as u64;
                let sel = r.u8();
                let errno = if sel & 1 == 0 {
                    libc::EIO
                } else {
                    libc::ENOSPC
                };
                let name = if errno == libc::EIO { "EIO" } else { "ENOSPC" };
                if sel & 2 == 0 {
                    self.log
                        .push(format!("fail write after {after} with {name}"));
                    self.plan.fail_write(after, errno);
                } else {
                    self.log
                        .push(format!("fail sync after {after} with {name}"));
                    self.plan.fail_sync(after, errno);
                }
            }
            29 => {
                // Not a flush: it claims no durability of its own.
                self.log.push("compact".into());
                if let Err(e) = self.db().compact() {
                    self.summary.errors += 1;
                    if self.plan.faults_injected() == 0 {
                        return Err(self.fail(format!("compact failed without a fault: {e:?}")));
                    }
                    match &e {
                        // Its flush failed: later flushes must fail too.
                        Error::Io(_) => self.flush_failed = true,
                        Error::Poisoned { .. } => {}
                        _ => {
                            return Err(self
                                .fail(format!("compact failed with an unexpected error: {e:?}")))
                        }
                    }
                    self.any_failed = true;
                }
            }
            27..=28 => {
                let k = key(r.u8());
                let got = self
                    .db()
                    .get(&k)
                    .map_err(|e| self.fail(format!("get {} failed: {e:?}", show(&k))))?;
                self.log
                    .push(format!("get {} -> {}", show(&k), show_val(&got)));
                self.check_read("get", &k, got)?;
            }
            _ => {
                self.log.push("check all".into());
                self.check_all("check all")?;
            }
        }
        Ok(())
    }

    /// A transaction: a read, then puts and removes staged in order (later
    /// ones of a key win), committed as one batch.
    fn transaction(&mut self, r: &mut Input<'_>) -> Result<(), String> {
        let read = key(r.u8());
        let n = 1 + r.u8() % 6;
        let mut staged: Vec<(Vec<u8>, Val)> = Vec::new();
        for _ in 0..n {
            let k = key(r.u8());
            let v = (r.u8() % 3 != 0).then(|| self.value(r.u8()));
            staged.push((k, v));
        }
        self.log.push(format!(
            "transaction read {} then [{}]",
            show(&read),
            staged
                .iter()
                .map(|(k, v)| format!("{}={}", show(k), show_val(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let result = self.db().transaction(|tx| {
            let got = tx.get(&read)?;
            for (k, v) in &staged {
                match v {
                    Some(v) => tx.insert(k.clone(), v.clone())?,
                    None => drop(tx.remove(k)?),
                }
            }
            Ok(got)
        });
        let last: BTreeMap<Vec<u8>, Val> = staged.iter().cloned().collect();
        let puts: BTreeMap<Vec<u8>, Vec<u8>> = last
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let acked = match result {
            Ok(got) => {
                self.check_refusal("transaction")?;
                self.check_read("transaction get", &read, got)?;
                Some(true)
            }
            Err(e) => self.write_error("transaction", &e)?.then_some(false),
        };
        match acked {
            Some(acked) => {
                for (k, v) in &last {
                    // A remove of a key absent from the database writes
                    // nothing, so only puts claim durability of their own.
                    let durable =
                        acked && v.is_some() && self.cfg.policy == FlushPolicy::WriteThrough;
                    self.record_with(k, v.clone(), acked, durable);
                }
                self.batches.push(Batch {
                    t: self.t,
                    pairs: puts,
                });
            }
            None => self.refused.extend(puts.into_values()),
        }
        Ok(())
    }

    fn sync_op(&mut self, what: &str, f: impl Fn(&Emdb) -> emdb::Result<()>) -> Result<(), String> {
        match f(self.db()) {
            Ok(()) => {
                if self.flush_failed {
                    return Err(self.fail(format!("{what} succeeded after a failed flush")));
                }
                self.durable_t = self.t;
            }
            Err(e) => {
                self.summary.errors += 1;
                if self.plan.faults_injected() == 0 {
                    return Err(self.fail(format!("{what} failed without a fault: {e:?}")));
                }
                match &e {
                    // Data that is not durable stays so: later flushes fail.
                    Error::Io(_) => self.flush_failed = true,
                    // Refused up front (a checkpoint on a poisoned shard).
                    Error::Poisoned { .. } => {}
                    _ => {
                        return Err(
                            self.fail(format!("{what} failed with an unexpected error: {e:?}"))
                        )
                    }
                }
                self.any_failed = true;
            }
        }
        Ok(())
    }

    /// iter, get and len against the model.
    fn check_all(&mut self, ctx: &str) -> Result<(), String> {
        let mut got: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let iter = self
            .db()
            .iter()
            .map_err(|e| self.fail(format!("{ctx}: iter failed: {e:?}")))?;
        for (k, v) in iter {
            if !self.now.contains_key(&k) {
                return Err(self.fail(format!("{ctx}: iter yields unknown key {}", show(&k))));
            }
            if got.insert(k.clone(), v).is_some() {
                return Err(self.fail(format!("{ctx}: iter yields {} twice", show(&k))));
            }
        }
        for i in 0..KEYS {
            let k = key(i);
            let g = self
                .db()
                .get(&k)
                .map_err(|e| self.fail(format!("{ctx}: get {} failed: {e:?}", show(&k))))?;
            if g.as_ref() != got.get(&k) {
                return Err(self.fail(format!(
                    "{ctx}: get {} = {} but iter has {}",
                    show(&k),
                    show_val(&g),
                    show_val(&got.get(&k).cloned())
                )));
            }
            self.check_read(ctx, &k, g)?;
        }
        let len = self
            .db()
            .len()
            .map_err(|e| self.fail(format!("{ctx}: len failed: {e:?}")))?;
        if len != got.len() {
            return Err(self.fail(format!("{ctx}: len {len}, iter yields {} keys", got.len())));
        }
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), String> {
        drop(self.db.take());
        self.summary.reopens += 1;
        let injected = self.plan.faults_injected();
        self.summary.faults_injected += injected;
        if injected == 0 {
            // A clean close writes and syncs everything.
            self.durable_t = self.t;
        }
        self.open()?;
        self.t += 1;
        // What recovery found, key by key.
        let mut found: BTreeMap<Vec<u8>, Val> = BTreeMap::new();
        for i in 0..KEYS {
            let k = key(i);
            let g = self
                .db()
                .get(&k)
                .map_err(|e| self.fail(format!("after reopen: get {} failed: {e:?}", show(&k))))?;
            found.insert(k, g);
        }
        for (k, g) in &found {
            if let Some(v) = g {
                if self.refused.contains(v) {
                    return Err(self.fail(format!(
                        "after reopen: {} = {}, a write refused with Poisoned",
                        show(k),
                        show_val(g)
                    )));
                }
            }
            let events = &self.hist[k];
            let base = events
                .iter()
                .rposition(|e| e.acked && (e.t <= self.durable_t || e.durable))
                .expect("the state at open is durable");
            let allowed: Vec<&Val> = events[base..].iter().map(|e| &e.val).collect();
            if !allowed.contains(&g) {
                return Err(self.fail(format!(
                    "after reopen: {} = {}; {} (durable value {}, allowed {})",
                    show(k),
                    show_val(g),
                    if g.is_none() {
                        "acknowledged value lost"
                    } else if events[..base].iter().any(|e| &e.val == g) {
                        "an older value came back: acknowledged data lost"
                    } else {
                        "a value never written for this key"
                    },
                    show_val(&events[base].val),
                    allowed
                        .iter()
                        .map(|v| show_val(v))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
        }
        // Batches whole.
        for b in &self.batches {
            let mut applied = Vec::new();
            let mut missing = Vec::new();
            for (k, v) in &b.pairs {
                let g = &found[k];
                if g.as_ref() == Some(v) {
                    applied.push(k);
                } else if !self.hist[k].iter().any(|e| e.t > b.t && &e.val == g) {
                    missing.push(k);
                }
            }
            if !applied.is_empty() && !missing.is_empty() {
                return Err(self.fail(format!(
                    "after reopen: batch of op time {} is torn: {} applied, {} not",
                    b.t,
                    applied
                        .iter()
                        .map(|k| show(k))
                        .collect::<Vec<_>>()
                        .join(","),
                    missing
                        .iter()
                        .map(|k| show(k))
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
        }
        // Start the new session from what was found: durable (recovery
        // syncs what it keeps).
        self.batches.clear();
        for (k, g) in found {
            self.hist.insert(
                k.clone(),
                vec![Event {
                    t: self.t,
                    val: g.clone(),
                    acked: true,
                    durable: true,
                }],
            );
            self.now.insert(k, BTreeSet::from([g]));
        }
        self.durable_t = self.t;
        self.check_all("after reopen")
    }
}

fn show(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) if !s.contains('\0') => s.to_string(),
        _ => format!("{k:02x?}"),
    }
}

fn show_val(v: &Val) -> String {
    match v {
        None => "none".into(),
        Some(v) if v.len() >= 8 => {
            let mut t = [0u8; 8];
            t.copy_from_slice(&v[..8]);
            format!("#{}({}B)", u64::from_le_bytes(t), v.len())
        }
        Some(v) => format!("{v:02x?}"),
    }
}

/// Runs the operations that `data` describes in a fresh database under
/// `dir`. `Err` describes the first disagreement with the model.
pub fn run(data: &[u8], dir: &Path) -> Result<Summary, String> {
    let mut r = Input { b: data };
    let sel = r.u8();
    let cfg = Cfg {
        shards: 1 + (sel & 1) as usize,
        backend: backend(sel >> 1),
        policy: if sel & 0x0c == 0x0c {
            FlushPolicy::WriteThrough
        } else {
            FlushPolicy::OnEachFlush
        },
    };
    let path = dir.join("db");
    let mut run = Run {
        cfg,
        path: &path,
        db: None,
        plan: FaultPlan::new(),
        hist: (0..KEYS)
            .map(|i| {
                (
                    key(i),
                    vec![Event {
                        t: 0,
                        val: None,
                        acked: true,
                        durable: true,
                    }],
                )
            })
            .collect(),
        now: (0..KEYS)
            .map(|i| (key(i), BTreeSet::from([None])))
            .collect(),
        refused: BTreeSet::new(),
        batches: Vec::new(),
        durable_t: 0,
        t: 0,
        tag: 0,
        flush_failed: false,
        any_failed: false,
        summary: Summary::default(),
        log: Vec::new(),
    };
    run.open()?;
    while let Some(op) = r.next() {
        if run.summary.ops >= MAX_OPS {
            break;
        }
        run.summary.ops += 1;
        run.step(op, &mut r)?;
    }
    // Always end with a reopen, which checks durability.
    run.log.push("final reopen".into());
    run.reopen()?;
    Ok(run.summary)
}
