//! A tour of the emdb API: open, insert, get, get_zerocopy, remove,
//! insert_many, iter, keys, len, flush, checkpoint, stats, lock_holder, and a
//! reopen that shows the data persisted.
//!
//! cargo run --release --example tour
//! EMDB_IO_BACKEND=portable cargo run --release --example tour

use emdb::{Emdb, EmdbStats, FlushPolicy};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn show(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

fn print_stats(label: &str, st: &EmdbStats) {
    println!(
        "  stats ({label}): live_records={} logical_size_bytes={} file_size_bytes={} preallocated_bytes={} \
         io_backend={:?} shards={} device_flushes={} durable_records={} records_per_flush={:.2}",
        st.live_records,
        st.logical_size_bytes,
        st.file_size_bytes,
        st.preallocated_bytes,
        st.io_backend,
        st.shards,
        st.device_flushes,
        st.durable_records,
        st.records_per_flush
    );
}

fn main() -> Res<()> {
    let tmp = tempfile::tempdir()?;
    let path = tmp.path().join("tour.emdb");

    println!(
        "1. open {} (builder, default Auto backend, FlushPolicy::OnEachFlush)",
        path.display()
    );
    let db = Emdb::builder()
        .path(&path)
        .flush_policy(FlushPolicy::OnEachFlush)
        .build()?;
    print_stats("fresh", &db.stats()?);

    println!("2. lock_holder while open");
    match Emdb::lock_holder(&path)? {
        Some(h) => {
            println!(
                "  held by pid {} (this process is {}), since unix ms {}, crate version {:?}",
                h.pid,
                std::process::id(),
                h.acquired_at_unix_millis,
                h.crate_version
            );
            assert_eq!(h.pid, std::process::id());
        }
        None => println!("  no holder reported (unexpected while the database is open)"),
    }

    println!("3. insert");
    db.insert("user:1", "ada")?;
    db.insert("user:2", "grace")?;
    db.insert("user:3", "barbara")?;
    db.insert("user:2", "grace hopper")?; // overwrite
    println!(
        "  inserted user:1..3, overwrote user:2; len = {}",
        db.len()?
    );

    println!("4. get");
    for k in ["user:1", "user:2", "user:404"] {
        println!("  get {k} -> {:?}", db.get(k)?.as_deref().map(show));
    }
    assert_eq!(db.get("user:2")?.as_deref(), Some(&b"grace hopper"[..]));
    assert!(db.contains_key("user:3")?);

    println!("5. get_zerocopy");
    {
        let v = db.get_zerocopy("user:3")?.expect("present");
        println!(
            "  get_zerocopy user:3 -> {:?} ({} bytes, borrowed, no copy)",
            show(v.as_slice()),
            v.len()
        );
        assert!(v == b"barbara"[..]);
    }

    println!("6. remove");
    let prior = db.remove("user:1")?;
    println!(
        "  remove user:1 -> prior {:?}; get -> {:?}",
        prior.as_deref().map(show),
        db.get("user:1")?
    );
    assert_eq!(db.remove("user:1")?, None);

    println!("7. insert_many (atomic batch of 1000)");
    let batch: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("item:{i:04}"), format!("value number {i}")))
        .collect();
    db.insert_many(batch.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    println!("  len = {}", db.len()?);
    assert_eq!(db.len()?, 1002);

    println!("8. iter (unordered snapshot) and keys");
    let mut users: Vec<(String, String)> = db
        .iter()?
        .filter(|(k, _)| k.starts_with(b"user:"))
        .map(|(k, v)| (show(&k), show(&v)))
        .collect();
    users.sort();
    println!("  user records: {users:?}");
    let n_items = db.keys()?.filter(|k| k.starts_with(b"item:")).count();
    println!("  keys(): {n_items} keys start with item:");
    assert_eq!(n_items, 1000);

    println!("9. flush (everything written so far is durable on return)");
    db.flush()?;
    print_stats("after flush", &db.stats()?);

    println!("10. checkpoint (hint files make the next open fast)");
    db.checkpoint()?;
    let mut files: Vec<String> = std::fs::read_dir(&path)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    println!("  files in the database directory: {files:?}");

    println!("11. close (drop the last handle) and reopen");
    drop(db);
    println!(
        "  lock_holder after close: {:?}",
        Emdb::lock_holder(&path)?.map(|h| h.pid)
    );
    let t = std::time::Instant::now();
    let db = Emdb::open(&path)?;
    println!(
        "  reopened in {:.2} ms; len = {}",
        t.elapsed().as_secs_f64() * 1e3,
        db.len()?
    );
    assert_eq!(db.len()?, 1002);
    assert_eq!(db.get("user:2")?.as_deref(), Some(&b"grace hopper"[..]));
    assert_eq!(db.get("user:1")?, None);
    assert_eq!(
        db.get("item:0999")?.as_deref(),
        Some(&b"value number 999"[..])
    );
    println!(
        "  user:2 -> {:?}, user:1 -> {:?}, item:0999 -> {:?}: data persisted",
        db.get("user:2")?.as_deref().map(show),
        db.get("user:1")?,
        db.get("item:0999")?.as_deref().map(show)
    );
    print_stats("after reopen", &db.stats()?);

    println!("12. clear");
    db.clear()?;
    println!(
        "  len after clear = {}, is_empty = {}",
        db.len()?,
        db.is_empty()?
    );
    assert!(db.is_empty()?);

    drop(db);
    println!("done; removing {}", tmp.path().display());
    Ok(())
}
