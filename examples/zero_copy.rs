//! get_zerocopy vs get: a ValueRef borrows the value from the mapped log (or
//! the tail buffer) instead of copying it into a new Vec, and it stays valid
//! while held, even across later writes, overwrites, removals and segment
//! rollovers.
//!
//! cargo run --release --example zero_copy

use std::hint::black_box;
use std::time::Instant;

use emdb::Emdb;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("zc.emdb");
    // small segments so the writes below roll over to new segment files; a
    // segment must hold the largest possible frame, so lower the limits too
    let db = Emdb::builder()
        .path(&path)
        .segment_size(64 * 1024)
        .max_key_len(256)
        .max_value_len(4096)
        .build()?;
    println!(
        "opened {} with 64 KiB segments (max key 256 B, max value 4 KiB)",
        path.display()
    );

    let n = 10_000usize;
    let mut rng = fastrand::Rng::with_seed(7);
    let key = |i: usize| format!("k{i:08}");
    let mut vals = Vec::with_capacity(n);
    for i in 0..n {
        let mut v = vec![0u8; 150];
        rng.fill(&mut v);
        db.insert(key(i), v.clone())?;
        vals.push(v);
    }
    db.flush()?;
    println!("inserted and flushed {n} records of 150 bytes");

    // same bytes either way
    let owned = db.get(key(42))?.expect("present");
    let borrowed = db.get_zerocopy(key(42))?.expect("present");
    assert_eq!(owned.as_slice(), borrowed.as_slice());
    assert!(borrowed == vals[42].as_slice());
    println!(
        "get and get_zerocopy agree on key {} ({} bytes)",
        key(42),
        borrowed.len()
    );
    drop(borrowed);

    // timing
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        for i in 0..n {
            black_box(db.get(key(i).as_bytes())?);
        }
    }
    let get_ns = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        for i in 0..n {
            let v = db.get_zerocopy(key(i).as_bytes())?.expect("present");
            black_box(v[0]);
        }
    }
    let zc_ns = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    println!(
        "get: {get_ns:.0} ns/op, get_zerocopy: {zc_ns:.0} ns/op (each incl. formatting the key)"
    );

    // hold ValueRefs across later writes
    let held_first = db.get_zerocopy(key(0))?.expect("present");
    let held_last = db.get_zerocopy(key(n - 1))?.expect("present");
    let segs_before = count(&path, "seg");
    db.insert(key(0), "overwritten")?;
    db.remove(key(n - 1))?;
    for i in 0..5_000 {
        db.insert(format!("later-{i}"), vec![0xAB; 150])?;
    }
    db.flush()?;
    db.checkpoint()?;
    let segs_after = count(&path, "seg");
    println!(
        "while holding two ValueRefs: overwrote one key, removed the other, wrote 5000 more records, \
         flushed and checkpointed (segment files {segs_before} -> {segs_after})"
    );
    assert!(
        held_first == vals[0].as_slice(),
        "held ValueRef changed after overwrite"
    );
    assert!(
        held_last == vals[n - 1].as_slice(),
        "held ValueRef changed after remove"
    );
    println!("held ValueRefs still show the values they were taken from");
    assert_eq!(db.get(key(0))?.as_deref(), Some(&b"overwritten"[..]));
    assert_eq!(db.get(key(n - 1))?, None);
    println!(
        "new reads see the new state: {} -> \"overwritten\", {} -> None",
        key(0),
        key(n - 1)
    );
    let v: Vec<u8> = held_first.into_vec();
    println!("into_vec of a held ValueRef: {} bytes", v.len());
    drop(held_last);

    drop(db);
    println!("done; removing {}", tmp.path().display());
    Ok(())
}

fn count(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().map(|x| x == ext).unwrap_or(false))
                .count()
        })
        .unwrap_or(0)
}
