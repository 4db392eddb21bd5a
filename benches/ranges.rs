//! What range scans cost (issue 13's figures), medians of `EMDB_BENCH_REPS`
//! repetitions (default 5):
//!
//! ```sh
//! cargo bench --features bench-internals --bench ranges                 # N = 1,000,000
//! EMDB_BENCH_N=200000 cargo bench --features bench-internals --bench ranges
//! EMDB_BENCH_PART=db cargo bench --features bench-internals --bench ranges   # part 2 only
//! ```
//!
//! 1. **The ordered index against `crossbeam-skiplist`**, the design's
//!    named crate: N random 24-byte keys, each with an 8-byte location,
//!    inserted in random order into our sorted key blocks (`SortedKeys`,
//!    what each shard keeps) and into a `SkipMap<Box<[u8]>, u64>` (the same
//!    contents), then a full ordered walk,
//!    10,000 seeks of 100 keys each, and the bytes each holds (counted by
//!    this binary's allocator, plus the ordered index's own huge-page
//!    mappings).
//! 2. **The database.** N keys of 24 bytes (150-byte values) written to an
//!    on-disk database with `insert_many` (timed with range scans off and
//!    on, alternated), checkpointed, closed; then
//!    reopened with range scans off and on (the difference is the rebuild),
//!    and the memory per key that `stats()` reports for the hash index and
//!    the ordered index; a full `range_iter(..)` and 10,000 `range_prefix`
//!    reads of about 100 keys (and the same with `range_prefix_iter`, and
//!    with the cursors, which lend each record instead of two `Vec`s).
//!    Each load is followed by an overwrite of every key, timed: with range
//!    scans, an overwrite moves the key's location in the ordered index.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_skiplist::SkipMap;
use emdb::bench_api::SortedKeys;
use emdb::Emdb;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[path = "common/figures.rs"]
mod figures;
use figures::{env_num, median};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// N random 24-byte keys; the first two bytes are a group (0..n/100), so
/// each 2-byte prefix holds about 100 keys.
fn keys(n: usize) -> Vec<[u8; 24]> {
    let mut rng = fastrand::Rng::with_seed(42);
    let groups = (n / 100).clamp(1, 65_536) as u16;
    (0..n)
        .map(|_| {
            let mut k = [0u8; 24];
            rng.fill(&mut k);
            k[..2].copy_from_slice(&rng.u16(..groups).to_be_bytes());
            k
        })
        .collect()
}

fn seeks(n: usize) -> Vec<[u8; 2]> {
    let groups = (n / 100).clamp(1, 65_536) as u16;
    let mut rng = fastrand::Rng::with_seed(7);
    (0..10_000)
        .map(|_| rng.u16(..groups).to_be_bytes())
        .collect()
}

struct Figures {
    insert: Vec<f64>,
    walk: Vec<f64>,
    seek: Vec<f64>,
    heap: usize,
}

fn structures(n: usize, reps: usize, ks: &[[u8; 24]]) {
    let starts = seeks(n);
    let mut ours = Figures {
        insert: vec![],
        walk: vec![],
        seek: vec![],
        heap: 0,
    };
    let mut skip = Figures {
        insert: vec![],
        walk: vec![],
        seek: vec![],
        heap: 0,
    };
    for _ in 0..reps {
        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut set = SortedKeys::default();
        for (i, k) in ks.iter().enumerate() {
            set.insert(k, i as u64);
        }
        ours.insert.push(ms(t));
        // What the allocator handed out, and the arena's own mappings.
        ours.heap = LIVE.load(Ordering::Relaxed) - before + set.mapped_bytes();
        let t = Instant::now();
        let mut count = 0;
        set.scan_from(&[], |k| {
            black_box(k);
            count += 1;
            true
        });
        ours.walk.push(ms(t));
        assert_eq!(count, ks.len());
        let t = Instant::now();
        for s in &starts {
            let mut left = 100;
            set.scan_from(s, |k| {
                black_box(k);
                left -= 1;
                left > 0
            });
        }
        ours.seek.push(ms(t));
        drop(set);

        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let list: SkipMap<Box<[u8]>, u64> = SkipMap::new();
        for (i, k) in ks.iter().enumerate() {
            list.insert(Box::from(&k[..]), i as u64);
        }
        skip.insert.push(ms(t));
        skip.heap = LIVE.load(Ordering::Relaxed) - before;
        let t = Instant::now();
        let mut count = 0;
        for e in list.iter() {
            black_box((e.key(), e.value()));
            count += 1;
        }
        skip.walk.push(ms(t));
        assert_eq!(count, ks.len());
        let t = Instant::now();
        for s in &starts {
            for e in list
                .range::<[u8], _>((
                    std::ops::Bound::Included(&s[..]),
                    std::ops::Bound::Unbounded,
                ))
                .take(100)
            {
                black_box((e.key(), e.value()));
            }
        }
        skip.seek.push(ms(t));
    }
    println!("## The ordered index, {n} random 24-byte keys\n");
    println!("| structure | insert all | full walk | 10,000 seeks + 100 keys | heap bytes/key |");
    println!("|---|---|---|---|---|");
    for (name, f) in [
        ("sorted key blocks (ours)", &ours),
        ("crossbeam SkipMap<Box<[u8]>, u64>", &skip),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} |",
            median(f.insert.clone()),
            median(f.walk.clone()),
            median(f.seek.clone()),
            f.heap as f64 / n as f64
        );
    }
    println!();
}

/// Milliseconds to load `ks` with `insert_many` in chunks of 10,000 into
/// a new database at `path`, and (if `overwrite`) then to overwrite every
/// key the same way; the database is checkpointed and closed.
fn load(path: &std::path::Path, ranges: bool, ks: &[[u8; 24]], overwrite: bool) -> (f64, f64) {
    let db = Emdb::builder()
        .path(path)
        .enable_range_scans(ranges)
        .build()
        .unwrap();
    let value = [7u8; 150];
    let t = Instant::now();
    for chunk in ks.chunks(10_000) {
        db.insert_many(chunk.iter().map(|k| (k, value))).unwrap();
    }
    let loaded = ms(t);
    let value = [8u8; 150];
    let t = Instant::now();
    for chunk in ks.chunks(10_000).filter(|_| overwrite) {
        db.insert_many(chunk.iter().map(|k| (k, value))).unwrap();
    }
    let overwritten = ms(t);
    db.checkpoint().unwrap();
    db.close().unwrap();
    (loaded, overwritten)
}

fn database(n: usize, reps: usize, ks: &[[u8; 24]]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let open = |ranges: bool| {
        Emdb::builder()
            .path(&path)
            .enable_range_scans(ranges)
            .build()
            .unwrap()
    };
    // Bulk loads (each followed by an overwrite of every key) with and
    // without the ordered index, alternated; then one more load with it,
    // without the overwrite (whose dead half would set the background
    // compaction going), is the database measured below.
    let (mut load_off, mut load_on) = (vec![], vec![]);
    let (mut over_off, mut over_on) = (vec![], vec![]);
    for _ in 0..reps.min(3) {
        for ranges in [false, true] {
            let _ = std::fs::remove_dir_all(&path);
            let (loaded, overwritten) = load(&path, ranges, ks, true);
            if ranges {
                load_on.push(loaded);
                over_on.push(overwritten);
            } else {
                load_off.push(loaded);
                over_off.push(overwritten);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&path);
    load(&path, true, ks, false);
    let (mut off, mut on) = (vec![], vec![]);
    let (mut full, mut prefix, mut prefix_lazy) = (vec![], vec![], vec![]);
    let (mut full_lent, mut prefix_lent) = (vec![], vec![]);
    let mut per_key = (0.0, 0.0);
    let starts = seeks(n);
    for _ in 0..reps {
        let t = Instant::now();
        let db = open(false);
        off.push(ms(t));
        db.close().unwrap();
        let t = Instant::now();
        let db = open(true);
        on.push(ms(t));
        let st = db.stats().unwrap();
        per_key = (
            st.index_bytes as f64 / n as f64,
            st.ordered_index_bytes as f64 / n as f64,
        );
        let t = Instant::now();
        let mut count = 0;
        for (k, v) in db.range_iter(..).unwrap() {
            black_box((k, v));
            count += 1;
        }
        full.push(ms(t));
        assert_eq!(count, db.len().unwrap());
        let t = Instant::now();
        let mut found = 0;
        for s in &starts {
            found += db.range_prefix(s).unwrap().len();
        }
        prefix.push(ms(t));
        let t = Instant::now();
        for s in &starts {
            for kv in db.range_prefix_iter(s).unwrap() {
                black_box(kv);
                found += 1;
            }
        }
        prefix_lazy.push(ms(t));
        let t = Instant::now();
        let mut cursor = db.range_cursor(..).unwrap();
        while let Some(kv) = cursor.next_record() {
            black_box(kv);
        }
        full_lent.push(ms(t));
        let t = Instant::now();
        for s in &starts {
            let mut cursor = db.range_prefix_cursor(s).unwrap();
            while let Some(kv) = cursor.next_record() {
                black_box(kv);
                found += 1;
            }
        }
        prefix_lent.push(ms(t));
        black_box(found);
        db.close().unwrap();
    }
    println!("## The database, {n} keys of 24 bytes, 150-byte values, on disk\n");
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| bulk load (`insert_many`, 10,000 a call), range scans off | {:.0} ms |",
        median(load_off)
    );
    println!("| bulk load, range scans on | {:.0} ms |", median(load_on));
    println!(
        "| overwrite every key (`insert_many`, 10,000 a call), range scans off | {:.0} ms |",
        median(over_off)
    );
    println!(
        "| overwrite every key, range scans on | {:.0} ms |",
        median(over_on)
    );
    println!(
        "| reopen, range scans off | {:.0} ms |",
        median(off.clone())
    );
    println!("| reopen, range scans on | {:.0} ms |", median(on.clone()));
    println!(
        "| rebuild of the ordered index (the difference) | {:.0} ms |",
        median(on) - median(off)
    );
    println!(
        "| hash index, bytes/key (`stats().index_bytes`) | {:.1} |",
        per_key.0
    );
    println!(
        "| ordered index, bytes/key (`stats().ordered_index_bytes`) | {:.1} |",
        per_key.1
    );
    println!("| full `range_iter(..)` | {:.0} ms |", median(full));
    println!(
        "| 10,000 `range_prefix` of about 100 keys | {:.0} ms |",
        median(prefix)
    );
    println!(
        "| the same 10,000 prefixes with `range_prefix_iter` | {:.0} ms |",
        median(prefix_lazy)
    );
    println!("| full `range_cursor(..)` | {:.0} ms |", median(full_lent));
    println!(
        "| the same 10,000 prefixes with `range_prefix_cursor` | {:.0} ms |",
        median(prefix_lent)
    );
}

fn main() {
    let n = env_num("EMDB_BENCH_N", 1_000_000);
    let reps = env_num("EMDB_BENCH_REPS", 5);
    println!("N = {n}, {reps} repetitions, medians\n");
    let ks = keys(n);
    // `EMDB_BENCH_PART=index` or `=db` runs one part only.
    let part = std::env::var("EMDB_BENCH_PART").unwrap_or_default();
    if part != "db" {
        structures(n, reps, &ks);
    }
    if part != "index" {
        database(n, reps, &ks);
    }
}
