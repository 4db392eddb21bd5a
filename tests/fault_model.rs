//! Random operation sequences with reopens and injected write and sync
//! faults (EIO, ENOSPC), checked against a `BTreeMap` model: the stable
//! toolchain's counterpart of the `ops` fuzz target, which runs the same
//! interpreter (`tests/support/ops_model.rs`) on fuzzer input. See that file
//! for what is checked.
//!
//! Each case is a random byte string from a seeded generator. The base seed
//! comes from `EMDB_TEST_SEED` or else from the clock, and is printed; a
//! failure names the case's own seed. Replay one case with
//! `EMDB_TEST_SEED=<seed> EMDB_FAULT_MODEL_CASES=1 cargo test --features fault-injection --test fault_model`.
//! `EMDB_FAULT_MODEL_CASES` (default 200) and `EMDB_FAULT_MODEL_SECS`
//! (default 20: no new case starts after that) bound a run. The backend is
//! chosen per case unless `EMDB_IO_BACKEND` is set.
#![cfg(feature = "fault-injection")]

#[path = "support/ops_model.rs"]
mod ops_model;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer")),
        Err(_) => default,
    }
}

/// The byte string of one case: mostly uniform bytes (the interpreter maps
/// each to an operation or an argument), with a fault armed early in one
/// case out of two so that most runs see one.
fn case_bytes(seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let len = rng.usize(16..900);
    let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    if rng.bool() && len > 40 {
        // Op 25 arms a fault; its two argument bytes follow.
        let at = rng.usize(1..len / 2);
        b[at] = 25;
        b[at + 1] = rng.u8(0..8);
        b[at + 2] = rng.u8(..);
    }
    b
}

#[test]
fn random_operations_with_faults_and_reopens_match_the_model() {
    let base = match std::env::var("EMDB_TEST_SEED") {
        Ok(s) => s.trim().parse().expect("EMDB_TEST_SEED must be an integer"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    };
    let cases = env_num("EMDB_FAULT_MODEL_CASES", 200);
    let budget = Duration::from_secs(env_num("EMDB_FAULT_MODEL_SECS", 20));
    eprintln!(
        "fault_model: base seed {base}, up to {cases} cases in {budget:?}, backend env {:?}",
        std::env::var("EMDB_IO_BACKEND").ok()
    );
    let start = Instant::now();
    let mut total = ops_model::Summary::default();
    let mut ran = 0u64;
    for i in 0..cases {
        if start.elapsed() > budget {
            break;
        }
        let seed = base.wrapping_add(i);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = case_bytes(seed);
        match ops_model::run(&data, dir.path()) {
            Ok(s) => {
                total.ops += s.ops;
                total.reopens += s.reopens;
                total.faults_injected += s.faults_injected;
                total.errors += s.errors;
            }
            Err(msg) => panic!(
                "fault model failed, case seed {seed}\n(replay: EMDB_TEST_SEED={seed} EMDB_FAULT_MODEL_CASES=1 \
                 cargo test --features fault-injection --test fault_model)\n{msg}"
            ),
        }
        ran += 1;
    }
    eprintln!(
        "fault_model: {ran} cases in {:.1?}: {} ops, {} reopens, {} faults injected, {} failed calls",
        start.elapsed(),
        total.ops,
        total.reopens,
        total.faults_injected,
        total.errors
    );
    assert!(ran > 0, "no case ran");
}
