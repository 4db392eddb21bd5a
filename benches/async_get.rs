//! Point reads through the async API against the blocking one, on one
//! in-memory database: what `AsyncEmdb::get(key).await` costs over
//! `Emdb::get(key)`.
//!
//! ```sh
//! cargo bench --features async --bench async_get
//! ```
//!
//! The database holds 100,000 random 24-byte keys with 150-byte values;
//! every bench reads the keys in one shuffled order, cycling. Group `get`
//! (criterion; time per read):
//! - `sync`: `Emdb::get`;
//! - `async/block_on`: `AsyncEmdb::get` on a handle to the same engine,
//!   each call awaited with its own `futures::executor::block_on`;
//! - `async/tokio-current-thread`: the same awaits inside one
//!   `block_on` of a tokio current-thread runtime per timed batch, so the
//!   figure is the await's cost and not the runtime's entry.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use emdb::{AsyncEmdb, Emdb};

const SEED: u64 = 0xa5e7_0011;
const KEYS: usize = 100_000;
const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;

/// The keys in a shuffled order, cycled through by each bench.
struct Keys {
    order: Vec<[u8; KEY_LEN]>,
    i: usize,
}

impl Keys {
    fn next(&mut self) -> &[u8; KEY_LEN] {
        let k = &self.order[self.i];
        self.i = if self.i + 1 == self.order.len() {
            0
        } else {
            self.i + 1
        };
        k
    }
}

/// The database with its keys, and the keys in the order the benches read them.
fn setup() -> (Emdb, AsyncEmdb, Vec<[u8; KEY_LEN]>) {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let db = Emdb::open_in_memory();
    let adb = AsyncEmdb::from_sync(db.clone_handle());
    let mut keys = Vec::with_capacity(KEYS);
    let mut value = [0u8; VALUE_LEN];
    for _ in 0..KEYS {
        let mut k = [0u8; KEY_LEN];
        rng.fill(&mut k);
        rng.fill(&mut value);
        db.insert(&k[..], &value[..]).expect("insert");
        keys.push(k);
    }
    rng.shuffle(&mut keys);
    for k in &keys {
        assert!(db.get(k).expect("get").is_some(), "every key reads back");
    }
    (db, adb, keys)
}

fn bench_get(c: &mut Criterion) {
    let (db, adb, order) = setup();
    let keys = || Keys {
        order: order.clone(),
        i: 0,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut g = c.benchmark_group("get");
    g.bench_function("sync", |b| {
        let mut keys = keys();
        b.iter(|| black_box(db.get(keys.next())))
    });
    g.bench_function("async/block_on", |b| {
        let mut keys = keys();
        b.iter(|| black_box(futures::executor::block_on(adb.get(keys.next()))))
    });
    g.bench_function("async/tokio-current-thread", |b| {
        let mut keys = keys();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let _ = black_box(adb.get(keys.next()).await);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_get(&mut c);
    c.final_summary();
}
