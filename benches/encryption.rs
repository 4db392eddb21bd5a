//! What encryption costs (issue 14's figures), medians of `EMDB_BENCH_REPS`
//! repetitions (default 5):
//!
//! ```sh
//! cargo bench --features encrypt --bench encryption                 # N = 1,000,000
//! EMDB_BENCH_N=200000 cargo bench --features encrypt --bench encryption
//! EMDB_BENCH_PART=load cargo bench --features encrypt --bench encryption   # part 1 only
//! EMDB_BENCH_PART=load EMDB_BENCH_MEMORY=1 cargo bench ...                   # part 1 in memory
//! ```
//!
//! In one run, on disk, N keys of 24 bytes with 150-byte values:
//! 1. **Bulk load**: `insert_many` in batches of 10,000, then `flush`, into a
//!    plaintext and an encrypted database (AES-256-GCM; ChaCha20-Poly1305
//!    too), alternated; the ratio encrypted / plaintext.
//! 2. **Random get**: N gets of random keys on each loaded database, in
//!    nanoseconds per get; the ratio.
//! 3. **Reopen**: open of each closed database without hint files (every
//!    frame replayed; encrypted frames are authenticated as they are).
//! 4. **Key rotation** of the closed encrypted database at N records and at
//!    N / 100 (the time must not grow with the data), raw keys.
//! 5. **Passphrase open**: opening with a passphrase, Argon2id included.

#[path = "common/figures.rs"]
mod figures;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use emdb::{Cipher, Emdb, EncryptionInput};
use figures::{env_num, median};

const VALUE_LEN: usize = 150;
const KEY: [u8; 32] = [0x42; 32];
const NEXT: [u8; 32] = [0x43; 32];

fn key(i: usize) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..4].copy_from_slice(b"key-");
    k[4..].copy_from_slice(format!("{i:020}").as_bytes());
    k
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Aes,
    ChaCha,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plaintext",
            Mode::Aes => "AES-256-GCM",
            Mode::ChaCha => "ChaCha20-Poly1305",
        }
    }

    fn builder(self, path: &Path) -> emdb::EmdbBuilder {
        let b = Emdb::builder().background_compaction(false);
        // `EMDB_BENCH_MEMORY=1` (with `EMDB_BENCH_PART=load`): in memory,
        // to see the CPU's part of the load apart from the disk's.
        let b = if std::env::var("EMDB_BENCH_MEMORY").as_deref() == Ok("1") {
            b.in_memory()
        } else {
            b.path(path)
        };
        match self {
            Mode::Plain => b,
            Mode::Aes => b.encryption_key(KEY),
            Mode::ChaCha => b.encryption_key(KEY).cipher(Cipher::ChaCha20Poly1305),
        }
    }
}

/// Loads N records; returns the seconds it took.
fn load(mode: Mode, path: &Path, n: usize) -> f64 {
    let _ = std::fs::remove_dir_all(path);
    let db = mode.builder(path).build().unwrap();
    let value = [0xabu8; VALUE_LEN];
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        db.insert_many((i..end).map(|j| (key(j), value))).unwrap();
        i = end;
    }
    db.flush().unwrap();
    let s = t.elapsed().as_secs_f64();
    if db.path().as_os_str().is_empty() {
        // In memory: nothing to reopen later.
        drop(db);
    } else {
        db.close().unwrap();
    }
    s
}

/// Nanoseconds per random get over `n` gets.
fn gets(db: &Emdb, n: usize, seed: u64) -> f64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let keys: Vec<[u8; 24]> = (0..n).map(|_| key(rng.usize(0..n))).collect();
    let t = Instant::now();
    for k in &keys {
        black_box(db.get(k).unwrap().unwrap());
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn remove_hints(path: &Path) {
    for e in std::fs::read_dir(path).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".hint") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

fn main() {
    let n = env_num("EMDB_BENCH_N", 1_000_000);
    let reps = env_num("EMDB_BENCH_REPS", 5);
    let work = tempfile::Builder::new()
        .prefix("emdb-bench-encryption-")
        .tempdir_in(std::env::var("EMDB_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let modes = [Mode::Plain, Mode::Aes, Mode::ChaCha];
    let path = |m: Mode| work.path().join(m.name());
    println!("encryption bench: N = {n}, {VALUE_LEN}-byte values, 24-byte keys, medians of {reps}");

    // 1. Bulk load, alternated.
    let mut loads: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..reps {
        for (i, m) in modes.iter().enumerate() {
            loads[i].push(load(*m, &path(*m), n));
        }
    }
    let load_med: Vec<f64> = loads.into_iter().map(median).collect();
    let load_only = std::env::var("EMDB_BENCH_PART").as_deref() == Ok("load");
    for (m, s) in modes.iter().zip(&load_med) {
        println!(
            "load   {:<18} {:>8.1} ms  {:>6.2} M records/s  x{:.2} of plaintext",
            m.name(),
            s * 1e3,
            n as f64 / s / 1e6,
            s / load_med[0]
        );
    }

    if load_only {
        return;
    }

    // 2. Random gets, alternated on the open databases.
    let dbs: Vec<Emdb> = modes
        .iter()
        .map(|m| m.builder(&path(*m)).build().unwrap())
        .collect();
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for r in 0..reps {
        for (i, db) in dbs.iter().enumerate() {
            per[i].push(gets(db, n, r as u64));
        }
    }
    let get_med: Vec<f64> = per.into_iter().map(median).collect();
    for (m, ns) in modes.iter().zip(&get_med) {
        println!(
            "get    {:<18} {:>8.1} ns/get  x{:.2} of plaintext",
            m.name(),
            ns,
            ns / get_med[0]
        );
    }
    for db in dbs {
        db.close().unwrap();
    }

    // 3. Reopen without hints: every frame replayed.
    let mut reopen: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..reps {
        for (i, m) in modes.iter().enumerate() {
            remove_hints(&path(*m));
            let t = Instant::now();
            let db = m.builder(&path(*m)).build().unwrap();
            reopen[i].push(t.elapsed().as_secs_f64());
            assert_eq!(db.len().unwrap(), n);
            drop(db);
        }
    }
    for (m, v) in modes.iter().zip(reopen) {
        println!(
            "reopen {:<18} {:>8.1} ms (replay, no hints)",
            m.name(),
            median(v) * 1e3
        );
    }

    // 4. Key rotation at N and at N / 100 records.
    let small = work.path().join("small");
    load(Mode::Aes, &small, (n / 100).max(1));
    for (what, p) in [("N", path(Mode::Aes)), ("N/100", small.clone())] {
        let mut v = Vec::new();
        for r in 0..reps.max(3) {
            let (from, to) = if r % 2 == 0 { (KEY, NEXT) } else { (NEXT, KEY) };
            let t = Instant::now();
            Emdb::rotate_encryption_key(&p, EncryptionInput::Key(from), EncryptionInput::Key(to))
                .unwrap();
            v.push(t.elapsed().as_secs_f64());
        }
        if v.len() % 2 == 1 {
            // An odd count leaves the database under NEXT: rotate it back.
            Emdb::rotate_encryption_key(&p, EncryptionInput::Key(NEXT), EncryptionInput::Key(KEY))
                .unwrap();
        }
        println!("rotate at {what:<6} records  {:>8.2} ms", median(v) * 1e3);
    }

    // 5. Passphrase open.
    let pp = work.path().join("passphrase");
    let db = Emdb::builder()
        .path(&pp)
        .encryption_passphrase("correct horse battery staple")
        .build()
        .unwrap();
    db.insert("k", "v").unwrap();
    db.close().unwrap();
    let mut v = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let db = Emdb::builder()
            .path(&pp)
            .encryption_passphrase("correct horse battery staple")
            .build()
            .unwrap();
        v.push(t.elapsed().as_secs_f64());
        drop(db);
    }
    println!("passphrase open (Argon2id)  {:>8.1} ms", median(v) * 1e3);
}
