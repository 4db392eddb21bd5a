//! Group commit: N threads each insert a record and call flush(), over and
//! over, on a database opened with FlushPolicy::Group. Concurrent flush
//! callers share device flushes.
//!
//! cargo run --release --example group_commit [threads] [records_per_thread]

use std::time::Instant;

use emdb::{Emdb, FlushPolicy};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(16)
        .max(1);
    let per_thread: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);

    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("group.emdb");
    let db = Emdb::builder()
        .path(&path)
        .flush_policy(FlushPolicy::Group)
        .build()?;
    let st0 = db.stats()?;
    println!(
        "opened {} with FlushPolicy::Group (backend {:?}, {} shards)",
        path.display(),
        st0.io_backend,
        st0.shards
    );

    let t = Instant::now();
    std::thread::scope(|s| -> Res<()> {
        let handles: Vec<_> = (0..threads)
            .map(|th| {
                let db = db.clone_handle();
                s.spawn(move || -> emdb::Result<()> {
                    for j in 0..per_thread {
                        db.insert(format!("t{th:03}-r{j:06}"), vec![th as u8; 150])?;
                        db.flush()?; // durable on return
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(())
    })?;
    let el = t.elapsed();
    let total = threads * per_thread;
    let st = db.stats()?;
    let flushes = st.device_flushes - st0.device_flushes;
    println!(
        "{threads} threads x {per_thread} insert+flush = {total} durable records in {:.3} s ({:.0} records/s)",
        el.as_secs_f64(),
        total as f64 / el.as_secs_f64()
    );
    println!(
        "stats: device_flushes={} (this run: {flushes}, {:.1} records per device flush), durable_records={}, records_per_flush={:.2}",
        st.device_flushes,
        total as f64 / flushes.max(1) as f64,
        st.durable_records,
        st.records_per_flush
    );
    assert_eq!(db.len()?, total);

    drop(db);
    let db = Emdb::open(&path)?;
    println!("reopened: len = {} (expected {total})", db.len()?);
    assert_eq!(db.len()?, total);
    drop(db);
    println!("done; removing {}", tmp.path().display());
    Ok(())
}
