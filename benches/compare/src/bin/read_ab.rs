//! Random point reads, emdb (this tree) against emdb 1.0.3, interleaved in
//! small chunks so that both see the same machine load.
//!
//! ```sh
//! cargo run --release -p emdb-compare --bin read_ab
//! N=1000000 CHUNK=50000 REPS=4 TS=1,2,4 WALL=1 cargo run --release -p emdb-compare --bin read_ab
//! ```
//!
//! Both stores are loaded with the workload of phases 1 and 6 (N records,
//! 24-byte keys, all random here, without phase 1's 2-byte group number,
//! 150-byte values, fastrand seed 3, `insert_many` in chunks
//! of 50,000, then `flush()`), with the compare crate's settings. Then, for
//! each repetition and thread count T, the N random reads are cut into
//! chunks of CHUNK reads; each chunk runs on one store and then the other
//! (the order alternating), with `get_zerocopy` on T threads. The figure of
//! a chunk is the CPU time its reader threads used (or, with WALL set, its
//! wall time), scaled to N reads; the output gives the median over chunks
//! and repetitions for each store, and the median of the per-chunk ratios.
//!
//! CPU time leaves out the time a reader waits for a CPU, which on a
//! shared 2-vCPU machine is most of the run-to-run noise in wall time; it
//! still includes the cache and TLB misses that decide a random read.

use std::time::Instant;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the calling thread, in ms.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n: usize = env("N", 1_000_000);
    let reps: usize = env("REPS", 4);
    let chunk: usize = env::<usize>("CHUNK", 50_000).clamp(1, n);
    let wall = std::env::var_os("WALL").is_some();
    let ts: Vec<usize> = std::env::var("TS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .map(|s| s.trim().parse().expect("TS: thread counts"))
        .collect();

    let mut rng = fastrand::Rng::with_seed(3);
    let load: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|_| {
            let mut k = vec![0u8; 24];
            let mut v = vec![0u8; 150];
            rng.fill(&mut k);
            rng.fill(&mut v);
            (k, v)
        })
        .collect();
    let reads: Vec<u32> = (0..n).map(|_| rng.u32(0..n as u32)).collect();

    let base = std::path::Path::new("target/read_ab");
    let _ = std::fs::remove_dir_all(base);
    std::fs::create_dir_all(base.join("emdb103")).expect("data dir");
    let ours = emdb::Emdb::builder()
        .path(base.join("emdb"))
        .flush_policy(emdb::FlushPolicy::OnEachFlush)
        .build()
        .expect("open emdb");
    for c in load.chunks(50_000) {
        ours.insert_many(c.iter().map(|(k, v)| (k, v)))
            .expect("load emdb");
    }
    ours.flush().expect("flush emdb");
    let up = emdb_upstream::Emdb::builder()
        .path(base.join("emdb103/db.emdb"))
        .flush_policy(emdb_upstream::FlushPolicy::Group)
        .build()
        .expect("open emdb 1.0.3");
    for c in load.chunks(50_000) {
        up.insert_many(c.iter().map(|(k, v)| (k, v)))
            .expect("load emdb 1.0.3");
    }
    up.flush().expect("flush emdb 1.0.3");

    // One chunk of reads on `store` (0 = emdb, 1 = emdb 1.0.3) with `t`
    // threads: its CPU (or wall) time in ms.
    let run = |store: usize, t: usize, part: &[u32]| -> f64 {
        let per = part.len().div_ceil(t);
        let start = Instant::now();
        let (hits, cpu) = std::thread::scope(|s| {
            let hs: Vec<_> = part
                .chunks(per)
                .map(|p| {
                    let (ours, up, load) = (&ours, &up, &load);
                    s.spawn(move || {
                        let c0 = thread_cpu_ms();
                        let mut hits = 0usize;
                        for &i in p {
                            let key = &load[i as usize].0;
                            let len = if store == 0 {
                                ours.get_zerocopy(key).expect("get").map(|v| v.len())
                            } else {
                                up.get_zerocopy(key).expect("get").map(|v| v.len())
                            };
                            hits += (len == Some(150)) as usize;
                        }
                        (hits, thread_cpu_ms() - c0)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("reader"))
                .fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        assert_eq!(hits, part.len(), "every read must hit");
        if wall {
            start.elapsed().as_secs_f64() * 1e3
        } else {
            cpu
        }
    };

    let scale = n as f64 / chunk as f64;
    println!(
        "N = {n}, chunks of {chunk}, {reps} repetitions, {} scaled to N reads, ms",
        if wall { "wall time" } else { "reader CPU time" }
    );
    for &t in &ts {
        let mut times = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for r in 0..reps {
            for (c, part) in reads.chunks_exact(chunk).enumerate() {
                let first = (r + c) % 2;
                let mut got = [0.0; 2];
                for store in [first, 1 - first] {
                    got[store] = run(store, t, part) * scale;
                    times[store].push(got[store]);
                }
                ratios.push(got[0] / got[1]);
            }
        }
        println!(
            "T={t}: emdb {:.0}, emdb 1.0.3 {:.0}, emdb / emdb 1.0.3 median of per-chunk ratios {:.3}",
            median(&times[0]),
            median(&times[1]),
            median(&ratios)
        );
    }
}
