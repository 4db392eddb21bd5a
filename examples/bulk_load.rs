//! Bulk load: insert_many of 100k records in chunks, flush, checkpoint, then
//! time a reopen.
//!
//! cargo run --release --example bulk_load [records] [chunk]

use std::time::Instant;

use emdb::Emdb;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let chunk: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000)
        .max(1);

    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("bulk.emdb");
    let db = Emdb::open(&path)?;
    let st = db.stats()?;
    println!(
        "opened {} (backend {:?}, {} shards)",
        path.display(),
        st.io_backend,
        st.shards
    );

    // 24-byte keys, 150-byte values
    let key = |i: usize| format!("key-{i:020}").into_bytes();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut value = |_i: usize| {
        let mut v = vec![0u8; 150];
        rng.fill(&mut v);
        v
    };

    let t = Instant::now();
    let mut done = 0;
    let mut checksum = 0u64;
    while done < n {
        let end = (done + chunk).min(n);
        let batch: Vec<(Vec<u8>, Vec<u8>)> = (done..end).map(|i| (key(i), value(i))).collect();
        checksum = batch
            .iter()
            .fold(checksum, |c, (_, v)| c.wrapping_add(v[0] as u64));
        db.insert_many(batch.iter().map(|(k, v)| (k, v)))?;
        done = end;
    }
    let t_insert = t.elapsed();
    println!(
        "insert_many: {n} records in chunks of {chunk}: {:.3} s ({:.0} records/s)",
        t_insert.as_secs_f64(),
        n as f64 / t_insert.as_secs_f64()
    );

    let t = Instant::now();
    db.flush()?;
    println!("flush: {:.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    db.checkpoint()?;
    println!("checkpoint: {:.3} s", t.elapsed().as_secs_f64());
    let st = db.stats()?;
    println!(
        "stats: live_records={} logical_size_bytes={} file_size_bytes={} device_flushes={}",
        st.live_records, st.logical_size_bytes, st.file_size_bytes, st.device_flushes
    );
    let hints = std::fs::read_dir(&path)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().map(|x| x == "hint").unwrap_or(false))
        .count();
    println!("hint files after checkpoint: {hints}");

    let t = Instant::now();
    drop(db);
    println!("close: {:.3} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let db = Emdb::open(&path)?;
    let t_open = t.elapsed();
    let len = db.len()?;
    println!("reopen: {:.1} ms, len = {len}", t_open.as_secs_f64() * 1e3);
    assert_eq!(len, n, "every record must be there after reopen");

    // spot-check values against the checksum of first bytes
    let t = Instant::now();
    let mut check = 0u64;
    for i in 0..n {
        let v = db.get(key(i))?.ok_or("missing key after reopen")?;
        assert_eq!(v.len(), 150);
        check = check.wrapping_add(v[0] as u64);
    }
    assert_eq!(
        check, checksum,
        "values read back differ from the values written"
    );
    println!(
        "verified all {n} values after reopen in {:.3} s",
        t.elapsed().as_secs_f64()
    );

    drop(db);
    println!("done; removing {}", tmp.path().display());
    Ok(())
}
