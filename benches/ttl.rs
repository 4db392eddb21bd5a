//! What TTL, namespaces and nested groups cost (issue 12's figures), on one
//! in-memory database per measurement, medians of `EMDB_BENCH_REPS`
//! repetitions (default 5):
//!
//! ```sh
//! cargo bench --features nested --bench ttl                      # N = 1,000,000
//! EMDB_BENCH_N=200000 cargo bench --features nested --bench ttl
//! ```
//!
//! - `get`: random reads of records without an expiry against records
//!   with one (an hour away: still visible), same data set, same process.
//!   Records without expiry take the path every read takes in a build
//!   without the `ttl` feature (the feature gates only the API; the engine
//!   code is the same), so their figure is the baseline.
//! - `sweep`: `sweep_expired` over N keys of which 10 % expired.
//! - `group`: `group(prefix).count()` of a 1,000-key group among N keys
//!   (a scan of the namespace until range scans make it a seek), against a
//!   full `iter().count()`.
//! - `namespace get`: reads in a named namespace against the default one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use emdb::{Emdb, Ttl};

#[path = "common/figures.rs"]
mod figures;
use figures::{env_num, median};

fn key(i: usize) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    k[8..16].copy_from_slice(&(i as u64).to_be_bytes());
    k
}

/// Nanoseconds per read of `keys` (shuffled) through `get`.
fn time_gets(get: impl Fn(&[u8]) -> Option<Vec<u8>>, keys: &[[u8; 24]]) -> f64 {
    let t = Instant::now();
    for k in keys {
        black_box(get(k));
    }
    t.elapsed().as_nanos() as f64 / keys.len() as f64
}

fn main() {
    let n = env_num("EMDB_BENCH_N", 1_000_000);
    let reps = env_num("EMDB_BENCH_REPS", 5);
    let value = [7u8; 150];
    let hour = Ttl::After(Duration::from_secs(3600));
    println!("N = {n}, {reps} repetitions, medians\n");

    // get: without expiry (baseline) and with one, interleaved.
    let db = Emdb::open_in_memory();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        db.insert_many(chunk.iter().map(|&i| (key(i), value)))
            .unwrap();
    }
    for i in 0..n {
        db.insert_with_ttl(key(n + i).to_vec(), value.to_vec(), hour)
            .unwrap();
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let mut plain: Vec<[u8; 24]> = (0..n).map(key).collect();
    let mut expiring: Vec<[u8; 24]> = (n..2 * n).map(key).collect();
    rng.shuffle(&mut plain);
    rng.shuffle(&mut expiring);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        a.push(time_gets(|k| db.get(k).unwrap(), &plain));
        b.push(time_gets(|k| db.get(k).unwrap(), &expiring));
    }
    let (a, b) = (median(a), median(b));
    println!("| measurement | figure |");
    println!("|---|---:|");
    println!("| get, records without expiry (baseline) | {a:.0} ns |");
    println!(
        "| get, records with an expiry | {b:.0} ns ({:.2}x) |",
        b / a
    );

    // Namespaces: the same reads in a named namespace.
    let ns = db.namespace("bench").unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        ns.insert_many(chunk.iter().map(|&i| (key(i), value)))
            .unwrap();
    }
    let (mut d, mut m) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        d.push(time_gets(|k| db.get(k).unwrap(), &plain));
        m.push(time_gets(|k| ns.get(k).unwrap(), &plain));
    }
    let (d, m) = (median(d), median(m));
    println!("| get, default namespace (baseline) | {d:.0} ns |");
    println!("| get, named namespace | {m:.0} ns ({:.2}x) |", m / d);
    drop((ns, db));

    // sweep_expired over N keys, 10 % expired.
    let mut sweeps = Vec::new();
    for _ in 0..reps {
        let db = Emdb::open_in_memory();
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            db.insert_many(
                chunk
                    .iter()
                    .filter(|&&i| i % 10 != 0)
                    .map(|&i| (key(i), value)),
            )
            .unwrap();
        }
        for i in (0..n).step_by(10) {
            db.insert_with_ttl(
                key(i).to_vec(),
                value.to_vec(),
                Ttl::After(Duration::from_millis(1)),
            )
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let swept = db.sweep_expired();
        sweeps.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(swept, n.div_ceil(10));
    }
    println!(
        "| sweep_expired, {n} keys, 10 % expired | {:.1} ms |",
        median(sweeps)
    );

    // group: 1,000 keys under one prefix among N.
    let db = Emdb::open_in_memory();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        db.insert_many(chunk.iter().map(|&i| (format!("item.{i}"), value)))
            .unwrap();
    }
    for i in 0..1000 {
        db.insert(format!("grp.{i}"), value.to_vec()).unwrap();
    }
    let (mut g, mut it) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        assert_eq!(db.group("grp").unwrap().count(), 1000);
        g.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        black_box(db.iter().unwrap().count());
        it.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "| group(prefix).count(), 1,000 of {} keys | {:.1} ms (a full iter().count(): {:.1} ms) |",
        n + 1000,
        median(g),
        median(it)
    );
}
