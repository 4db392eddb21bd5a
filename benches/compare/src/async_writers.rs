//! Phase 14, async durable writers: N writers each loop {insert one record;
//! flush} for `--writer-secs`. The writers are tokio tasks on emdb's
//! `AsyncEmdb` (on a current-thread runtime and on a multi-thread runtime
//! with 2 workers) and on emdb 1.0.3's `AsyncEmdb` (which runs every call
//! with `spawn_blocking`, on tokio's default blocking pool), and, for
//! comparison, N OS threads on emdb's blocking `Emdb`. Every (configuration,
//! N) row gets a fresh database directory and a fresh runtime.
//!
//! The timed window opens once every writer has started (a barrier), so
//! that spawning 10,000 tasks or 1,000 threads is not in it, and closes when
//! the last writer has finished the record it was on when time ran out.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stores::{Rec, Res};
use crate::sys;

/// Figures of one phase-14 row (a configuration at N writers).
pub struct AsyncFigures {
    /// Records made durable in the window.
    pub records: u64,
    pub secs: f64,
    /// Device flushes in the window; `None` without a device to count on.
    pub device_flushes: Option<u64>,
    /// The fdatasyncs the store issued in the window, where it counts them
    /// (emdb): unlike the device's count, not shared with other processes.
    pub store_fdatasyncs: Option<u64>,
    /// Process CPU time (every thread) over the window, per record.
    pub cpu_us_per_record: f64,
    /// Latency of one insert + flush.
    pub p50_us: f64,
    pub p99_us: f64,
}

impl AsyncFigures {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }

    /// `None` without a device, or when no device flush was counted.
    pub fn records_per_flush(&self) -> Option<f64> {
        self.device_flushes
            .filter(|&f| f > 0)
            .map(|f| self.records as f64 / f as f64)
    }

    /// `None` where the store does not count, or issued none.
    pub fn records_per_fdatasync(&self) -> Option<f64> {
        self.store_fdatasyncs
            .filter(|&f| f > 0)
            .map(|f| self.records as f64 / f as f64)
    }
}

/// Most OS threads a sync row runs. Past this, a thread per writer mostly
/// measures thread creation and scheduling rather than the engine.
const MAX_SYNC_THREADS: usize = 1_000;

/// Worker threads of the multi-thread runtime rows: one per vCPU of the
/// machine the phase was written for.
const WORKERS: usize = 2;

/// One way of running N durable writers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// emdb's `AsyncEmdb`, every task on one thread.
    OursCurrentThread,
    /// emdb's `AsyncEmdb` on a multi-thread runtime with [`WORKERS`].
    OursMultiThread,
    /// emdb 1.0.3's `AsyncEmdb` on a multi-thread runtime with [`WORKERS`].
    UpstreamMultiThread,
    /// emdb's blocking `Emdb`, one OS thread per writer.
    OursThreads,
}

impl Config {
    /// In the order the rows of one N run.
    pub const ALL: [Config; 4] = [
        Config::OursCurrentThread,
        Config::OursMultiThread,
        Config::UpstreamMultiThread,
        Config::OursThreads,
    ];

    /// The row label (no commas: it is a field of the CSV).
    pub fn name(self) -> &'static str {
        match self {
            Config::OursCurrentThread => "emdb async (current-thread)",
            Config::OursMultiThread => "emdb async (2 workers)",
            Config::UpstreamMultiThread => "emdb 1.0.3 async (2 workers)",
            Config::OursThreads => "emdb sync (N threads)",
        }
    }

    /// The store (as `--stores` names it) the configuration runs.
    pub fn store(self) -> &'static str {
        match self {
            Config::UpstreamMultiThread => "emdb 1.0.3",
            _ => "emdb",
        }
    }

    pub fn settings(self) -> &'static str {
        match self {
            Config::OursCurrentThread => {
                "emdb (this tree), feature async: AsyncEmdb::builder().path(dir)\
                 .flush_policy(FlushPolicy::OnEachFlush).build_async(); N tokio tasks on a \
                 current-thread runtime, each `insert(k, v).await` then `flush().await` \
                 (concurrent flushes share device flushes); close().await after the window"
            }
            Config::OursMultiThread => {
                "as the current-thread row, on a multi-thread runtime with 2 worker threads"
            }
            Config::UpstreamMultiThread => {
                "emdb 1.0.3 (crates.io), feature async: AsyncEmdb::builder().path(dir/db.emdb)\
                 .flush_policy(FlushPolicy::Group).build_async(); every call runs with \
                 spawn_blocking (tokio's default pool, up to 512 threads); N tasks on a \
                 multi-thread runtime with 2 worker threads"
            }
            Config::OursThreads => {
                "emdb (this tree), blocking API as in phase 13: N OS threads each `insert` \
                 then `flush()`; run for N up to 1,000"
            }
        }
    }

    /// Whether the configuration runs with `n` writers.
    pub fn runs_at(self, n: usize) -> bool {
        self != Config::OursThreads || n <= MAX_SYNC_THREADS
    }

    /// Name of the row's database directory.
    fn slug(self) -> &'static str {
        match self {
            Config::OursCurrentThread => "emdb-async-ct",
            Config::OursMultiThread => "emdb-async-mt",
            Config::UpstreamMultiThread => "emdb_1_0_3-async-mt",
            Config::OursThreads => "emdb-threads",
        }
    }
}

/// Runs `config` with `n` writers for `secs` on a fresh database under
/// `data_dir`, which is removed afterwards.
pub fn run(
    config: Config,
    n: usize,
    data_dir: &Path,
    pool: &Arc<[Rec]>,
    secs: f64,
    dev: Option<&sys::Device>,
) -> Res<AsyncFigures> {
    let dir = data_dir.join(format!("async-{}-{n}", config.slug()));
    let _ = std::fs::remove_dir_all(&dir);
    let dur = Duration::from_secs_f64(secs);
    let r = match config {
        Config::OursCurrentThread => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?;
            on_runtime(&rt, open_ours(&dir), n, pool, dur, dev)
        }
        Config::OursMultiThread => on_runtime(&multi_thread()?, open_ours(&dir), n, pool, dur, dev),
        Config::UpstreamMultiThread => {
            std::fs::create_dir_all(&dir)?;
            on_runtime(&multi_thread()?, open_upstream(&dir), n, pool, dur, dev)
        }
        Config::OursThreads => on_threads(&dir, n, pool, dur, dev),
    };
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn multi_thread() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_time()
        .build()
}

/// emdb with the settings of its phase-13 store.
fn open_ours(dir: &Path) -> impl Future<Output = Res<emdb::AsyncEmdb>> {
    let open = emdb::AsyncEmdb::builder()
        .path(dir)
        .flush_policy(emdb::FlushPolicy::OnEachFlush)
        .build_async();
    async move { Ok(open.await?) }
}

/// emdb 1.0.3 with the settings of its phase-13 store.
fn open_upstream(dir: &Path) -> impl Future<Output = Res<emdb_upstream::AsyncEmdb>> {
    let builder = emdb_upstream::AsyncEmdb::builder()
        .path(dir.join("db.emdb"))
        .flush_policy(emdb_upstream::FlushPolicy::Group);
    async move { Ok(builder.build_async().await?) }
}

/// An async database handle the task rows drive.
trait AsyncDb: Clone + Send + Sync + 'static {
    /// Inserts one record and resolves once it is durable.
    fn put_durable(&self, key: &[u8], value: &[u8]) -> impl Future<Output = Res<()>> + Send;

    /// The fdatasyncs the store has issued, where it counts them: on a
    /// shared machine the device's counter also has other processes' flushes.
    fn fdatasyncs(&self) -> impl Future<Output = Option<u64>> + Send;

    /// Releases the handle and reports what a drop would hide.
    fn close(self) -> impl Future<Output = Res<()>> + Send;
}

impl AsyncDb for emdb::AsyncEmdb {
    async fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.insert(key, value).await?;
        Ok(self.flush().await?)
    }

    async fn fdatasyncs(&self) -> Option<u64> {
        Some(self.stats().await.ok()?.device_flushes)
    }

    async fn close(self) -> Res<()> {
        Ok(emdb::AsyncEmdb::close(self).await?)
    }
}

impl AsyncDb for emdb_upstream::AsyncEmdb {
    async fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.insert(key, value).await?;
        Ok(self.flush().await?)
    }

    /// emdb 1.0.3 does not count its fdatasyncs.
    async fn fdatasyncs(&self) -> Option<u64> {
        None
    }

    /// emdb 1.0.3 has no close: a flush reports the errors, and the handle
    /// is dropped on the blocking pool, since the drop of the last one does
    /// file I/O.
    async fn close(self) -> Res<()> {
        self.flush().await?;
        tokio::task::spawn_blocking(move || drop(self)).await?;
        Ok(())
    }
}

/// What the writers of one row share.
struct Shared {
    pool: Arc<[Rec]>,
    next: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn new(pool: &Arc<[Rec]>) -> Shared {
        Shared {
            pool: Arc::clone(pool),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// The next record of the pool (round-robin over all writers).
    fn record(&self) -> &Rec {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.pool.len();
        &self.pool[i]
    }
}

/// One writer task: after the barrier, {insert; flush} until stopped.
/// Returns the latency of each record, in ns.
async fn writer_task<D: AsyncDb>(
    db: D,
    shared: Arc<Shared>,
    gate: Arc<tokio::sync::Barrier>,
) -> Res<Vec<u64>> {
    gate.wait().await;
    let mut lat = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let (k, v) = shared.record();
        let t = Instant::now();
        db.put_durable(k, v).await?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

/// A row of tasks: opens the database, runs `n` writer tasks for `dur`,
/// closes the database.
fn on_runtime<D: AsyncDb>(
    rt: &tokio::runtime::Runtime,
    open: impl Future<Output = Res<D>>,
    n: usize,
    pool: &Arc<[Rec]>,
    dur: Duration,
    dev: Option<&sys::Device>,
) -> Res<AsyncFigures> {
    rt.block_on(async {
        let db = open.await?;
        let shared = Arc::new(Shared::new(pool));
        let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(writer_task(db.clone(), shared.clone(), gate.clone())))
            .collect();
        gate.wait().await;
        let window = Window::open(dev, db.fdatasyncs().await);
        tokio::time::sleep(dur).await;
        shared.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::with_capacity(n);
        for t in tasks {
            results.push(t.await.map_err(Into::into).and_then(|r| r));
        }
        let figures = window.close(results, db.fdatasyncs().await);
        let closed = db.close().await;
        let figures = figures?;
        closed?;
        Ok(figures)
    })
}

/// A row of OS threads on the blocking API, as phase 13 runs them.
fn on_threads(
    dir: &Path,
    n: usize,
    pool: &Arc<[Rec]>,
    dur: Duration,
    dev: Option<&sys::Device>,
) -> Res<AsyncFigures> {
    let db = emdb::Emdb::builder()
        .path(dir)
        .flush_policy(emdb::FlushPolicy::OnEachFlush)
        .build()?;
    let shared = Shared::new(pool);
    let gate = std::sync::Barrier::new(n + 1);
    let figures = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (db, shared, gate) = (&db, &shared, &gate);
                s.spawn(move || -> Res<Vec<u64>> {
                    gate.wait();
                    let mut lat = Vec::new();
                    while !shared.stop.load(Ordering::Relaxed) {
                        let (k, v) = shared.record();
                        let t = Instant::now();
                        db.insert(k.as_slice(), v.as_slice())?;
                        db.flush()?;
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                    Ok(lat)
                })
            })
            .collect();
        gate.wait();
        let fdatasyncs = || Some(db.stats().ok()?.device_flushes);
        let window = Window::open(dev, fdatasyncs());
        std::thread::sleep(dur);
        shared.stop.store(true, Ordering::Relaxed);
        let results = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "writer thread panicked".into())
                    .and_then(|r| r)
            })
            .collect();
        window.close(results, fdatasyncs())
    });
    let closed = db.close();
    let figures = figures?;
    closed?;
    Ok(figures)
}

/// The timed part of a row: wall time, device flushes, the store's
/// fdatasyncs and process CPU time, from when every writer is ready until
/// the last one is done.
struct Window<'a> {
    dev: Option<&'a sys::Device>,
    start: Instant,
    flushes: u64,
    fdatasyncs: Option<u64>,
    cpu: Duration,
}

impl<'a> Window<'a> {
    fn open(dev: Option<&'a sys::Device>, fdatasyncs: Option<u64>) -> Window<'a> {
        Window {
            dev,
            flushes: dev.map(sys::Device::flushes).unwrap_or(0),
            fdatasyncs,
            cpu: sys::cpu_time(),
            start: Instant::now(),
        }
    }

    /// Closes the window on the writers' results (each its latencies in
    /// ns) and the store's fdatasync count; the first writer's error fails
    /// the row.
    fn close(self, results: Vec<Res<Vec<u64>>>, fdatasyncs: Option<u64>) -> Res<AsyncFigures> {
        let secs = self.start.elapsed().as_secs_f64();
        let cpu = sys::cpu_time().saturating_sub(self.cpu);
        let device_flushes = self.dev.map(|d| d.flushes().saturating_sub(self.flushes));
        let store_fdatasyncs = match (self.fdatasyncs, fdatasyncs) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let mut lat = Vec::new();
        for r in results {
            lat.extend(r?);
        }
        if lat.is_empty() {
            return Err("no writer completed a record".into());
        }
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        Ok(AsyncFigures {
            records: lat.len() as u64,
            secs,
            device_flushes,
            store_fdatasyncs,
            cpu_us_per_record: cpu.as_secs_f64() * 1e6 / lat.len() as f64,
            p50_us: pct(0.5),
            p99_us: pct(0.99),
        })
    }
}
