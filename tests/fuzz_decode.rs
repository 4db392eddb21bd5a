//! The decoders of every on-disk format (frames, segment headers, manifests,
//! hint files) and recovery, on seeded random and mutated inputs: the stable
//! toolchain's counterpart of the `decode` and `recover` fuzz targets, which
//! run the same entry points (`emdb::fuzz_api`). Nothing may panic.
//!
//! The base seed comes from `EMDB_TEST_SEED` or else from the clock, and is
//! printed; a failure names its seed and input. `EMDB_FUZZ_DECODE_CASES`
//! scales the number of cases (default 3000).
#![cfg(feature = "fuzzing")]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{SystemTime, UNIX_EPOCH};

use emdb::fuzz_api::{self, SampleKind};

fn base_seed() -> u64 {
    match std::env::var("EMDB_TEST_SEED") {
        Ok(s) => s.trim().parse().expect("EMDB_TEST_SEED must be an integer"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn cases(default: u64) -> u64 {
    std::env::var("EMDB_FUZZ_DECODE_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let n = rng.usize(0..=max);
    (0..n).map(|_| rng.u8(..)).collect()
}

/// Runs `f(input)`; on a panic, fails naming the seed and the input.
fn guarded(test: &str, seed: u64, input: &[u8], f: impl FnOnce(&[u8])) {
    if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(input))) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!(
            "{test}: case seed {seed} panicked: {msg}\n(replay: EMDB_TEST_SEED={seed} \
             EMDB_FUZZ_DECODE_CASES=1 cargo test --all-features --test fuzz_decode {test})\ninput ({} bytes): {hex}",
            input.len()
        );
    }
}

/// A few mutations of a valid image: bits flipped, bytes set, cut,
/// extended, or spliced with another image.
fn mutate(rng: &mut fastrand::Rng, img: &[u8], other: &[u8]) -> Vec<u8> {
    let mut m = img.to_vec();
    for _ in 0..rng.usize(1..4) {
        if m.is_empty() {
            break;
        }
        let at = rng.usize(0..m.len());
        match rng.u8(0..6) {
            0 | 1 => m[at] ^= 1 << rng.u8(0..8),
            2 => m[at] = rng.u8(..),
            3 => m.truncate(at),
            4 => m.extend((0..rng.usize(1..64)).map(|_| rng.u8(..))),
            _ => {
                let take = rng.usize(0..=other.len());
                m.splice(at.., other[..take].iter().copied());
            }
        }
    }
    m
}

#[test]
fn decoders_survive_random_bytes() {
    let base = base_seed();
    let n = cases(3000);
    eprintln!("fuzz_decode random: base seed {base}, {n} cases");
    for i in 0..n {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let input = random_bytes(&mut rng, 400);
        // Raw and structured, every format: `fuzz_decode` reads the first
        // byte as the selector.
        guarded("decoders_survive_random_bytes", seed, &input, |b| {
            fuzz_api::fuzz_decode(b);
            fuzz_api::decode_all(b);
        });
    }
}

#[test]
fn decoders_accept_valid_images_and_survive_mutated_ones() {
    let base = base_seed();
    let n = cases(3000);
    eprintln!("fuzz_decode mutated: base seed {base}, {n} cases");
    let mut mutants = 0usize;
    for i in 0..n {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let kind = SampleKind::ALL[rng.usize(0..4)];
        let spec = random_bytes(&mut rng, 300);
        let img = fuzz_api::sample(kind, &spec);
        guarded(
            "decoders_accept_valid_images_and_survive_mutated_ones",
            seed,
            &img,
            |b| fuzz_api::check_valid(kind, b),
        );
        let other = fuzz_api::sample(SampleKind::ALL[rng.usize(0..4)], &spec);
        for _ in 0..4 {
            let m = mutate(&mut rng, &img, &other);
            guarded(
                "decoders_accept_valid_images_and_survive_mutated_ones",
                seed,
                &m,
                |b| {
                    fuzz_api::decode_as(kind, b);
                    fuzz_api::decode_frames(b);
                },
            );
            mutants += 1;
        }
    }
    eprintln!("fuzz_decode mutated: {mutants} mutants");
}

#[test]
fn recovery_survives_damaged_databases() {
    let base = base_seed();
    // Each case builds and opens a database twice: fewer of them.
    let n = (cases(3000) / 10).max(1);
    eprintln!("fuzz_decode recover: base seed {base}, {n} cases");
    let mut opened = 0;
    for i in 0..n {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let input = random_bytes(&mut rng, 600);
        guarded("recovery_survives_damaged_databases", seed, &input, |b| {
            if fuzz_api::recover_from_bytes(b).is_some() {
                opened += 1;
            }
        });
    }
    eprintln!("fuzz_decode recover: {opened} of {n} damaged databases opened");
}

#[cfg(feature = "encrypt")]
#[test]
fn recovery_survives_damaged_encrypted_databases() {
    let base = base_seed();
    // Each case writes a database through the engine and opens it twice.
    let n = (cases(3000) / 20).max(1);
    eprintln!("fuzz_decode recover (encrypted): base seed {base}, {n} cases");
    let (mut opened, mut with_records) = (0, 0);
    for i in 0..n {
        let seed = base.wrapping_add(i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let input = random_bytes(&mut rng, 400);
        guarded(
            "recovery_survives_damaged_encrypted_databases",
            seed,
            &input,
            |b| {
                if let Some(n) = fuzz_api::recover_encrypted_from_bytes(b) {
                    opened += 1;
                    with_records += (n > 0) as usize;
                }
            },
        );
    }
    eprintln!(
        "fuzz_decode recover (encrypted): {opened} of {n} opened, {with_records} with records"
    );
    // Some damage spares the database: the check ran on real contents.
    assert!(with_records > 0, "no damaged database opened with records");
}
