//! The per-shard hash index (`src/index.rs`) against `scc::HashIndex<u64,
//! u64>`, both keyed by the 64-bit key hash and mapping it to a log position.
//!
//! ```sh
//! cargo bench --features bench-internals --bench index            # all, N = 1,000,000
//! cargo bench --features bench-internals --bench index -- get     # one group
//! EMDB_BENCH_N=200000 cargo bench --features bench-internals --bench index
//! ```
//!
//! Groups (criterion; each reports time per operation):
//! - `index/get`: a hit, in random order over all N entries (an epoch pin,
//!   or scc's guard, per lookup, as a read takes one);
//! - `index/upsert`: an overwrite of a random existing entry in the full
//!   index (what an insert of an existing key does);
//! - `index/growth`: inserting N entries into an empty index (time for
//!   all N, rehashing included);
//! - memory per entry at N: the RssAnon growth of a child process of this
//!   binary while it fills one index, divided by N (printed first, not a
//!   criterion group; run it alone with the filter `memory`).
//!
//! Hashes are random 64-bit values, so no two entries collide; scc gets a
//! pass-through hasher (the keys are hashes already), its best case. What
//! a collision costs each design is not measured: in ours, slots of the same
//! hash sit side by side and the engine checks each against its frame's key;
//! a `u64`-keyed `scc::HashIndex` would need a side table (e.g. a flag bit
//! in the value and an `scc::HashMap<u64, Vec<u64>>` of every position of a
//! colliding hash), consulted only when the flag is set.

use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use emdb::bench_api::Index;
use scc::hash_index::Entry;

const SEED: u64 = 0x1de7_0001;

type Scc = scc::HashIndex<u64, u64, Pass>;

/// Hashes a `u64` key to itself.
#[derive(Clone, Copy, Default)]
struct Pass;

struct PassHasher(u64);

impl Hasher for PassHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for Pass {
    type Hasher = PassHasher;
    fn build_hasher(&self) -> PassHasher {
        PassHasher(0)
    }
}

fn n() -> usize {
    std::env::var("EMDB_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// `n` distinct random hashes.
fn hashes(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let h = rng.u64(2..);
        if seen.insert(h) {
            v.push(h);
        }
    }
    v
}

fn shuffled(hs: &[u64], seed: u64) -> Vec<u64> {
    let mut v = hs.to_vec();
    fastrand::Rng::with_seed(seed).shuffle(&mut v);
    v
}

fn build_ours(hs: &[u64]) -> Index {
    let idx = Index::new();
    for (i, &h) in hs.iter().enumerate() {
        idx.upsert(h, i as u64 + 1);
    }
    idx
}

fn build_scc(hs: &[u64]) -> Scc {
    let m = Scc::with_hasher(Pass);
    for (i, &h) in hs.iter().enumerate() {
        let _ = m.insert_sync(h, i as u64 + 1);
    }
    m
}

fn scc_upsert(m: &Scc, h: u64, loc: u64) {
    match m.entry_sync(h) {
        Entry::Occupied(mut o) => o.update(loc),
        Entry::Vacant(v) => {
            v.insert_entry(loc);
        }
    }
}

fn rss_anon_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In the child: fill one index and print the RssAnon growth in kB.
fn memory_child(which: &str) {
    let n = n();
    let hs = hashes(n, SEED);
    let before = rss_anon_kb();
    match which {
        "ours" => {
            let idx = build_ours(&hs);
            let after = rss_anon_kb();
            println!("{} {}", after - before, idx.memory_bytes());
            black_box(idx);
        }
        _ => {
            let m = build_scc(&hs);
            let after = rss_anon_kb();
            println!("{} {}", after - before, m.capacity());
            black_box(m);
        }
    }
}

fn memory_report() {
    let n = n();
    let exe = std::env::current_exe().expect("current exe");
    for which in ["ours", "scc"] {
        let out = Command::new(&exe)
            .env("EMDB_INDEX_MEM", which)
            .output()
            .expect("run memory child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let kb: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let extra = it.next().unwrap_or("?");
        println!(
            "index/memory/{which}: RssAnon +{kb} kB for {n} entries = {:.1} B/entry ({})",
            kb as f64 * 1024.0 / n as f64,
            if which == "ours" {
                format!("table {extra} B")
            } else {
                format!("capacity {extra}")
            }
        );
    }
}

fn bench_get(c: &mut Criterion) {
    let n = n();
    let hs = hashes(n, SEED);
    let probe = shuffled(&hs, SEED + 1);
    let ours = build_ours(&hs);
    let scc = build_scc(&hs);
    let mut g = c.benchmark_group("index/get");
    g.bench_function("ours", |b| {
        let mut i = 0;
        b.iter(|| {
            let h = probe[i];
            i = if i + 1 == probe.len() { 0 } else { i + 1 };
            black_box(ours.get(h))
        })
    });
    g.bench_function("scc", |b| {
        let mut i = 0;
        b.iter(|| {
            let h = probe[i];
            i = if i + 1 == probe.len() { 0 } else { i + 1 };
            black_box(scc.peek_with(&h, |_, v| *v))
        })
    });
    g.finish();
}

fn bench_upsert(c: &mut Criterion) {
    let n = n();
    let hs = hashes(n, SEED);
    let probe = shuffled(&hs, SEED + 2);
    let ours = build_ours(&hs);
    let scc = build_scc(&hs);
    let mut g = c.benchmark_group("index/upsert");
    g.bench_function("ours", |b| {
        let mut i = 0;
        let mut loc = n as u64 + 1;
        b.iter(|| {
            let h = probe[i];
            i = if i + 1 == probe.len() { 0 } else { i + 1 };
            loc += 1;
            black_box(ours.upsert(h, loc))
        })
    });
    g.bench_function("scc", |b| {
        let mut i = 0;
        let mut loc = n as u64 + 1;
        b.iter(|| {
            let h = probe[i];
            i = if i + 1 == probe.len() { 0 } else { i + 1 };
            loc += 1;
            scc_upsert(&scc, h, loc)
        })
    });
    g.finish();
}

fn bench_growth(c: &mut Criterion) {
    let n = n();
    let hs = hashes(n, SEED);
    let mut g = c.benchmark_group("index/growth");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("ours", |b| {
        b.iter_batched(|| (), |_| build_ours(&hs), BatchSize::PerIteration)
    });
    g.bench_function("scc", |b| {
        b.iter_batched(|| (), |_| build_scc(&hs), BatchSize::PerIteration)
    });
    g.finish();
}

fn main() {
    if let Ok(which) = std::env::var("EMDB_INDEX_MEM") {
        memory_child(&which);
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filter.iter().all(|f| "index/memory".contains(f.as_str())) {
        memory_report();
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_get(&mut c);
    bench_upsert(&mut c);
    bench_growth(&mut c);
    c.final_summary();
}
