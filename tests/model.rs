//! Seeded random operation sequences checked against a `BTreeMap` model:
//! insert, insert_many, remove, clear, get, get_zerocopy, contains_key, len,
//! iteration, flush, checkpoint, compact (with a `ValueRef` held across it)
//! and drop + reopen, on small segments so that segments rotate; the live and
//! dead byte accounting is checked against the model too.
//!
//! Every failure names its seed. Replay one seed with
//! `EMDB_TEST_SEED=<seed> cargo test --test model`; choose the backend with
//! `EMDB_IO_BACKEND=uring|portable`. `EMDB_MODEL_OPS=<n>` changes the number of
//! operations per seed.

use emdb::Emdb;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("EMDB_TEST_SEED") {
        Ok(s) => vec![s.trim().parse().expect("EMDB_TEST_SEED must be an integer")],
        Err(_) => default.collect(),
    }
}

fn ops_per_seed(default: usize) -> usize {
    std::env::var("EMDB_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 40 {
        format!(
            "{:?}...({} bytes)",
            s.chars().take(40).collect::<String>(),
            b.len()
        )
    } else {
        format!("{s:?}")
    }
}

/// Where a run is, for failure messages.
struct Run {
    seed: u64,
    step: usize,
    log: Vec<String>,
}

impl Run {
    fn note(&mut self, op: String) {
        self.log.push(format!("#{} {op}", self.step));
    }

    fn fail(&self, msg: &str) -> ! {
        let tail: Vec<&String> = self
            .log
            .iter()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "model mismatch, seed {} step {}: {msg}\n(replay: EMDB_TEST_SEED={} cargo test --test model)\nlast operations:\n{}",
            self.seed,
            self.step,
            self.seed,
            tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }

    fn ok<T>(&self, r: emdb::Result<T>, what: &str) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{what} returned Err({e:?})")),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    shards: usize,
    segment_size: u64,
    max_value_len: usize,
    on_disk: bool,
}

fn config_for(seed: u64, on_disk: bool) -> Config {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_c0f1);
    Config {
        shards: rng.usize(1..=3),
        segment_size: [4096u64, 16 * 1024, 64 * 1024][rng.usize(0..3)],
        max_value_len: 3000,
        on_disk,
    }
}

fn open(cfg: &Config, path: &Path) -> emdb::Result<Emdb> {
    if !cfg.on_disk {
        return Ok(Emdb::open_in_memory());
    }
    Emdb::builder()
        .path(path)
        .shards(cfg.shards)
        .segment_size(cfg.segment_size)
        .max_key_len(64)
        .max_value_len(cfg.max_value_len)
        .build()
}

fn gen_key(rng: &mut fastrand::Rng, key_space: u32) -> Vec<u8> {
    if rng.u8(0..20) == 0 {
        // Binary keys, zero bytes included.
        let n = rng.usize(1..24);
        let mut k: Vec<u8> = (0..n).map(|_| rng.u8(0..4)).collect();
        k.insert(0, 0xff);
        k
    } else {
        format!("key-{}", rng.u32(0..key_space)).into_bytes()
    }
}

fn gen_value(rng: &mut fastrand::Rng, max: usize, tag: u64) -> Vec<u8> {
    let len = match rng.u8(0..20) {
        0 => 0,
        1 => max,
        2..=4 => rng.usize(200..max),
        _ => rng.usize(1..200),
    };
    let mut v: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    // The tag makes two writes of the same length distinguishable.
    for (i, b) in tag.to_le_bytes().iter().enumerate() {
        if i < v.len() {
            v[i] = *b;
        }
    }
    v
}

fn check_full(db: &Emdb, model: &Map, run: &Run, ctx: &str) {
    let mut got = Map::new();
    for (k, v) in run.ok(db.iter(), "iter") {
        if got.insert(k.clone(), v).is_some() {
            run.fail(&format!("{ctx}: iter yielded {} twice", show(&k)));
        }
    }
    if &got != model {
        let mut diffs = Vec::new();
        for (k, v) in model {
            match got.get(k) {
                None => diffs.push(format!("missing {}", show(k))),
                Some(g) if g != v => diffs.push(format!(
                    "{}: model {} bytes, db {} bytes",
                    show(k),
                    v.len(),
                    g.len()
                )),
                _ => {}
            }
        }
        for k in got.keys() {
            if !model.contains_key(k) {
                diffs.push(format!("unexpected {}", show(k)));
            }
        }
        let n = diffs.len();
        diffs.truncate(10);
        run.fail(&format!(
            "{ctx}: iter differs from model ({n} differences): {}",
            diffs.join("; ")
        ));
    }
    let mut keys: Vec<Vec<u8>> = run.ok(db.keys(), "keys").collect();
    keys.sort();
    if keys != model.keys().cloned().collect::<Vec<_>>() {
        run.fail(&format!("{ctx}: keys() differs from model"));
    }
    for (k, v) in model {
        let g = run.ok(db.get(k), "get");
        if g.as_ref() != Some(v) {
            run.fail(&format!(
                "{ctx}: get {} = {:?}, model has {} bytes",
                show(k),
                g.map(|g| g.len()),
                v.len()
            ));
        }
    }
    let len = run.ok(db.len(), "len");
    if len != model.len() {
        run.fail(&format!("{ctx}: len {len}, model {}", model.len()));
    }
}

/// `stats().live_bytes` is exactly the frames of the model's records, and
/// live + dead + segment headers is the whole log.
fn check_live_bytes(d: &Emdb, model: &Map, run: &Run) {
    let st = run.ok(d.stats(), "stats");
    let want: u64 = model
        .iter()
        .map(|(k, v)| 36 + k.len() as u64 + v.len() as u64)
        .sum();
    if st.live_bytes != want {
        run.fail(&format!(
            "stats.live_bytes {}, the model's records take {want}",
            st.live_bytes
        ));
    }
    if st.live_bytes + st.dead_bytes + 64 * st.segments != st.logical_size_bytes {
        run.fail(&format!("live + dead + headers != logical: {st:?}"));
    }
}

fn run_seed(seed: u64, on_disk: bool, n_ops: usize) {
    let cfg = config_for(seed, on_disk);
    eprintln!(
        "model: seed {seed} {cfg:?} ops {n_ops} backend env {:?}",
        std::env::var("EMDB_IO_BACKEND").ok()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let mut rng = fastrand::Rng::with_seed(seed);
    let key_space = 30 + rng.u32(0..200);
    let mut run = Run {
        seed,
        step: 0,
        log: Vec::new(),
    };
    let mut model = Map::new();
    let mut db = Some(run.ok(open(&cfg, &path), "open"));
    let mut tag = seed << 32;

    for step in 0..n_ops {
        run.step = step;
        tag += 1;
        let d = db.as_ref().expect("open database");
        let roll = rng.u32(0..1000);
        match roll {
            0..=379 => {
                let k = gen_key(&mut rng, key_space);
                let v = gen_value(&mut rng, cfg.max_value_len, tag);
                run.note(format!("insert {} ({} bytes)", show(&k), v.len()));
                run.ok(d.insert(k.clone(), v.clone()), "insert");
                model.insert(k, v);
            }
            380..=449 => {
                // Overwrite a key that exists.
                if let Some(k) = model.keys().nth(rng.usize(0..model.len().max(1))).cloned() {
                    let v = gen_value(&mut rng, cfg.max_value_len, tag);
                    run.note(format!("overwrite {} ({} bytes)", show(&k), v.len()));
                    run.ok(d.insert(k.clone(), v.clone()), "insert (overwrite)");
                    model.insert(k, v);
                }
            }
            450..=509 => {
                let n = rng.usize(1..16);
                let mut batch: Map = Map::new();
                while batch.len() < n {
                    let k = gen_key(&mut rng, key_space);
                    let v = gen_value(&mut rng, cfg.max_value_len, tag);
                    batch.insert(k, v);
                }
                run.note(format!("insert_many {} pairs", batch.len()));
                let items: Vec<(Vec<u8>, Vec<u8>)> = batch.clone().into_iter().collect();
                run.ok(d.insert_many(items), "insert_many");
                model.extend(batch);
            }
            510..=629 => {
                let k = if rng.bool() && !model.is_empty() {
                    model
                        .keys()
                        .nth(rng.usize(0..model.len()))
                        .cloned()
                        .expect("key")
                } else {
                    gen_key(&mut rng, key_space)
                };
                run.note(format!("remove {}", show(&k)));
                let got = run.ok(d.remove(&k), "remove");
                let want = model.remove(&k);
                if got != want {
                    run.fail(&format!(
                        "remove {} returned {:?} bytes, model had {:?} bytes",
                        show(&k),
                        got.map(|v| v.len()),
                        want.map(|v| v.len())
                    ));
                }
            }
            630..=634 => {
                run.note("clear".to_string());
                run.ok(d.clear(), "clear");
                model.clear();
            }
            635..=789 => {
                let k = if rng.bool() && !model.is_empty() {
                    model
                        .keys()
                        .nth(rng.usize(0..model.len()))
                        .cloned()
                        .expect("key")
                } else {
                    gen_key(&mut rng, key_space)
                };
                let want = model.get(&k);
                match rng.u8(0..3) {
                    0 => {
                        let got = run.ok(d.get(&k), "get");
                        if got.as_ref() != want {
                            run.fail(&format!(
                                "get {} = {:?} bytes, model {:?} bytes",
                                show(&k),
                                got.map(|v| v.len()),
                                want.map(|v| v.len())
                            ));
                        }
                    }
                    1 => {
                        let got = run.ok(d.get_zerocopy(&k), "get_zerocopy");
                        let got_slice = got.as_ref().map(|r| r.as_slice());
                        if got_slice != want.map(|v| v.as_slice()) {
                            run.fail(&format!("get_zerocopy {} differs from model", show(&k)));
                        }
                        if let (Some(r), Some(w)) = (got.as_ref(), want) {
                            if r.len() != w.len() || r.is_empty() != w.is_empty() {
                                run.fail("ValueRef len/is_empty disagree with the value");
                            }
                        }
                    }
                    _ => {
                        let got = run.ok(d.contains_key(&k), "contains_key");
                        if got != want.is_some() {
                            run.fail(&format!("contains_key {} = {got}", show(&k)));
                        }
                    }
                }
            }
            790..=839 => {
                run.note("flush".to_string());
                run.ok(d.flush(), "flush");
            }
            840..=847 => {
                run.note("checkpoint".to_string());
                run.ok(d.checkpoint(), "checkpoint");
            }
            848..=854 => {
                // A value held across the compaction stays valid.
                let held = model.iter().next().map(|(k, v)| {
                    let r = run.ok(d.get_zerocopy(k), "get_zerocopy");
                    (r, v.clone())
                });
                run.note("compact".to_string());
                run.ok(d.compact(), "compact");
                if let Some((Some(r), v)) = held {
                    if r.as_slice() != v.as_slice() {
                        run.fail("a ValueRef held across compaction changed");
                    }
                }
                check_live_bytes(d, &model, &run);
            }
            855..=874 => {
                run.note("drop + reopen".to_string());
                drop(db.take());
                db = Some(run.ok(open(&cfg, &path), "reopen"));
                if cfg.on_disk {
                    check_full(db.as_ref().expect("db"), &model, &run, "right after reopen");
                } else {
                    // An in-memory database starts empty again.
                    model.clear();
                }
            }
            875..=934 => {
                let len = run.ok(d.len(), "len");
                let empty = run.ok(d.is_empty(), "is_empty");
                if len != model.len() || empty != model.is_empty() {
                    run.fail(&format!(
                        "len {len} is_empty {empty}, model len {}",
                        model.len()
                    ));
                }
                let live = run.ok(d.stats(), "stats").live_records;
                if live != model.len() as u64 {
                    run.fail(&format!(
                        "stats.live_records {live}, model len {}",
                        model.len()
                    ));
                }
                check_live_bytes(d, &model, &run);
            }
            _ => {
                run.note("full comparison".to_string());
                check_full(d, &model, &run, "full comparison");
            }
        }
    }
    run.step = n_ops;
    let d = db.take().expect("db");
    check_full(&d, &model, &run, "end of run");
    drop(d);
    if cfg.on_disk {
        let d = run.ok(open(&cfg, &path), "final reopen");
        check_full(&d, &model, &run, "after final reopen");
        let segs = std::fs::read_dir(&path)
            .expect("read db dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension().map(|x| x == "seg").unwrap_or(false))
                    .unwrap_or(false)
            })
            .count();
        eprintln!(
            "model: seed {seed} done, {} keys, {segs} segment files",
            model.len()
        );
    }
}

fn run_seeds(seeds: Vec<u64>, on_disk: bool, n_ops: usize) {
    let mut failed = Vec::new();
    for seed in seeds {
        let r = catch_unwind(AssertUnwindSafe(|| run_seed(seed, on_disk, n_ops)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .map(|s| s.lines().next().unwrap_or("").to_string())
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            failed.push(format!("seed {seed}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "model runs failed (on_disk={on_disk}, backend env {:?}); replay one with EMDB_TEST_SEED=<seed> cargo test --test model:\n{}",
        std::env::var("EMDB_IO_BACKEND").ok(),
        failed.join("\n")
    );
}

#[test]
fn model_on_disk_seeds_0_to_3() {
    run_seeds(seeds(0..4), true, ops_per_seed(1500));
}

#[test]
fn model_on_disk_seeds_4_to_7() {
    run_seeds(seeds(4..8), true, ops_per_seed(1500));
}

#[test]
fn model_on_disk_seeds_100_to_101_long_runs() {
    run_seeds(seeds(100..102), true, ops_per_seed(1500) * 3);
}

#[test]
fn model_in_memory_seeds_0_to_7() {
    run_seeds(seeds(0..8), false, ops_per_seed(1500));
}
