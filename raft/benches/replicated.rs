//! Replicated durable writes: three in-process openraft nodes on emdb, each
//! node's database on the disk under test, and T clients each looping
//! `client_write` (a 24-byte key, a 150-byte value) for S seconds. A write
//! returns once it is committed: durable in the logs of a majority (two
//! fdatasyncs' worth on two nodes, shared by group commit) and applied on
//! the leader. Beside it, in the same run, the single-node baseline: T
//! writers each looping `insert` + `flush()` on one emdb database.
//!
//! ```sh
//! cargo bench -p emdb-raft --bench replicated
//! EMDB_RAFT_BENCH_T=1,64 EMDB_RAFT_BENCH_SECS=5 EMDB_RAFT_BENCH_REPS=3 \
//!   cargo bench -p emdb-raft --bench replicated
//! ```
//!
//! Per row: writes/s, device flushes per second (field 16 of
//! `/sys/block/<disk>/stat`), writes per device flush, the fdatasyncs the
//! engines issued (all three nodes), and p50/p99 latency; medians over the
//! repetitions. The databases live under `target/raft-bench`
//! (`EMDB_RAFT_BENCH_DIR` overrides): it must be on the disk under test.

#[path = "../../benches/common/devstat.rs"]
#[allow(dead_code)]
mod devstat;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emdb::AsyncEmdb;
use emdb_raft::local::{write, LocalNode, Router};
use emdb_raft::{NodeId, Request};
use openraft::BasicNode;

#[derive(Clone, Copy)]
struct Row {
    writes_s: f64,
    flushes_s: f64,
    per_flush: f64,
    fdatasyncs: f64,
    p50_us: f64,
    p99_us: f64,
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 3000,
        election_timeout_max: 6000,
        ..Default::default()
    };
    Arc::new(c.validate().expect("a valid config"))
}

async fn open(path: &Path) -> AsyncEmdb {
    AsyncEmdb::builder()
        .path(path)
        .enable_range_scans(true)
        .background_compaction(false)
        .build_async()
        .await
        .expect("open a node's database")
}

/// Runs `clients` loops of `op` for `secs`, returning every latency.
async fn drive<F, Fut>(clients: usize, secs: u64, op: F) -> Vec<u64>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, op) = (stop.clone(), op.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 12);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    op(c, i).await;
                    lat.push(t.elapsed().as_nanos() as u64);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("a client task"));
    }
    all
}

fn row(mut lat: Vec<u64>, secs: f64, flushes: Option<u64>, fdatasyncs: u64) -> Row {
    lat.sort_unstable();
    let n = lat.len() as f64;
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    Row {
        writes_s: n / secs,
        flushes_s: flushes.map_or(f64::NAN, |f| f as f64 / secs),
        per_flush: flushes.map_or(f64::NAN, |f| n / f.max(1) as f64),
        fdatasyncs: fdatasyncs as f64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

fn key(c: usize, i: u64) -> String {
    format!("client-{c:04}-write-{i:012}")
}

async fn replicated(dir: &Path, clients: usize, secs: u64) -> Row {
    let _ = std::fs::remove_dir_all(dir);
    let router = Router::new();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let db = open(&dir.join(format!("node-{id}"))).await;
        let node = LocalNode::start(id, db, &router, config())
            .await
            .expect("start a node");
        nodes.insert(id, node);
    }
    let members: BTreeMap<NodeId, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::default())).collect();
    nodes[&1]
        .raft
        .initialize(members)
        .await
        .expect("initialize");
    nodes[&1]
        .raft
        .wait(Some(Duration::from_secs(30)))
        .current_leader(1, "node 1 leads")
        .await
        .expect("a leader");
    let stat = devstat::find_dev_stat(dir).ok();
    let flushes = || stat.as_ref().and_then(|s| devstat::read_flushes(s));
    let engine = || async {
        let mut n = 0;
        for node in nodes.values() {
            n += node.db.stats().await.map_or(0, |s| s.device_flushes);
        }
        n
    };
    let (f0, e0, t0) = (flushes(), engine().await, Instant::now());
    let value = "v".repeat(150);
    let to = router.clone();
    let lat = drive(clients, secs, move |c, i| {
        let (to, value) = (to.clone(), value.clone());
        async move {
            // Through the leader (node 1 unless an election moved it).
            let req = Request::Set {
                key: key(c, i),
                value,
            };
            write(&to, req, Duration::from_secs(60))
                .await
                .expect("a replicated write");
        }
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (f1, e1) = (flushes(), engine().await);
    for node in nodes.into_values() {
        node.stop(&router).await;
    }
    let _ = std::fs::remove_dir_all(dir);
    row(
        lat,
        elapsed,
        f0.zip(f1).map(|(a, b)| b.saturating_sub(a)),
        e1 - e0,
    )
}

async fn single(dir: &Path, clients: usize, secs: u64) -> Row {
    let _ = std::fs::remove_dir_all(dir);
    let db = open(dir).await;
    let stat = devstat::find_dev_stat(dir).ok();
    let flushes = || stat.as_ref().and_then(|s| devstat::read_flushes(s));
    let (f0, e0, t0) = (
        flushes(),
        db.stats().await.map_or(0, |s| s.device_flushes),
        Instant::now(),
    );
    let d = db.clone();
    let value = vec![b'v'; 150];
    let lat = drive(clients, secs, move |c, i| {
        let (d, value) = (d.clone(), value.clone());
        async move {
            d.insert(key(c, i), value).await.expect("insert");
            d.flush().await.expect("flush");
        }
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (f1, e1) = (flushes(), db.stats().await.map_or(0, |s| s.device_flushes));
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
    row(
        lat,
        elapsed,
        f0.zip(f1).map(|(a, b)| b.saturating_sub(a)),
        e1 - e0,
    )
}

fn main() {
    let clients = env_list("EMDB_RAFT_BENCH_T", "1,64");
    let secs = env_num("EMDB_RAFT_BENCH_SECS", 5);
    let reps = env_num("EMDB_RAFT_BENCH_REPS", 3).max(1);
    let dir: PathBuf = std::env::var_os("EMDB_RAFT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/raft-bench"));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut results: BTreeMap<(usize, &str), Vec<Row>> = BTreeMap::new();
    for rep in 0..reps {
        for &t in &clients {
            for kind in ["3-node raft", "1 node, no raft"] {
                let r = rt.block_on(async {
                    match kind {
                        "3-node raft" => replicated(&dir.join("raft"), t, secs).await,
                        _ => single(&dir.join("single"), t, secs).await,
                    }
                });
                eprintln!(
                    "rep {rep}: {kind}, T={t}: {:.0} writes/s, {:.1} writes/device flush",
                    r.writes_s, r.per_flush
                );
                results.entry((t, kind)).or_default().push(r);
            }
        }
    }
    println!(
        "\n{secs} s per row, median of {reps} repetition(s), {} CPUs\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| store | T | writes/s | device flushes/s | writes/device flush | engine fdatasyncs | p50 µs | p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for ((t, kind), rows) in &results {
        let m = |f: fn(&Row) -> f64| median(rows.iter().map(f).collect());
        println!(
            "| {kind} | {t} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} |",
            m(|r| r.writes_s),
            m(|r| r.flushes_s),
            m(|r| r.per_flush),
            m(|r| r.fdatasyncs),
            m(|r| r.p50_us),
            m(|r| r.p99_us),
        );
    }
}
