//! Reclaiming space and taking a backup while the database is in use.
//!
//! `cargo run --release --example compact_backup`
//!
//! Overwrites and removes leave dead records in the log. The background
//! compactor reclaims segments as they pass the compaction threshold;
//! `compact()` does it on demand. `backup_to` writes a consistent copy while
//! writers go on; the copy opens like any database.

use std::time::Instant;

use emdb::Emdb;

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() -> emdb::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Emdb::builder()
        .path(dir.path().join("db"))
        .segment_size(8 << 20)
        .max_value_len(64 << 10)
        // Keep this example's steps apart: compaction only when asked.
        .background_compaction(false)
        .build()?;

    // 200,000 records, then every other one overwritten and every fourth
    // removed: most of the log is dead.
    for i in 0..200_000u32 {
        db.insert(format!("user:{i:06}"), vec![b'a'; 150])?;
    }
    for i in (0..200_000u32).step_by(2) {
        db.insert(format!("user:{i:06}"), vec![b'b'; 150])?;
    }
    for i in (0..200_000u32).step_by(4) {
        db.remove(format!("user:{i:06}"))?;
    }
    db.flush()?;
    let st = db.stats()?;
    println!(
        "before: {} live records, log {:.1} MiB ({:.1} MiB live, {:.1} MiB dead), files {:.1} MiB",
        st.live_records,
        mib(st.logical_size_bytes),
        mib(st.live_bytes),
        mib(st.dead_bytes),
        mib(st.file_size_bytes)
    );

    // A value read before compaction stays valid after it.
    let held = db.get_zerocopy("user:000001")?.expect("present");

    let t = Instant::now();
    db.compact()?;
    let st = db.stats()?;
    println!(
        "compact(): {:.0} ms; log {:.1} MiB ({:.1} MiB dead), files {:.1} MiB, {:.1} MiB reclaimed",
        t.elapsed().as_secs_f64() * 1e3,
        mib(st.logical_size_bytes),
        mib(st.dead_bytes),
        mib(st.file_size_bytes),
        mib(st.bytes_reclaimed)
    );
    assert_eq!(held.as_slice(), &[b'a'; 150][..]);
    drop(held);

    // A backup while a writer goes on.
    let copy = dir.path().join("backup");
    let started = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| -> emdb::Result<()> {
        let writer = s.spawn(|| -> emdb::Result<()> {
            for i in 0..20_000u32 {
                db.insert(format!("live:{i:05}"), "written during the backup")?;
                if i == 1000 {
                    started.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            Ok(())
        });
        while !started.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::yield_now();
        }
        let t = Instant::now();
        db.backup_to(&copy)?;
        println!(
            "backup_to(): {:.0} ms while a writer went on",
            t.elapsed().as_secs_f64() * 1e3
        );
        writer.join().expect("writer")
    })?;

    let b = Emdb::open(&copy)?;
    let raced = b.keys()?.filter(|k| k.starts_with(b"live:")).count();
    println!(
        "the copy opens: {} records, the 150,000 users and {raced} of the 20,000 writes that raced \
         with the backup (a prefix of them: the copy is cut at one point)",
        b.len()?
    );
    // Writes from one thread: the copy holds a prefix of them.
    for i in 0..raced as u32 {
        assert!(b.contains_key(format!("live:{i:05}"))?);
    }
    assert_eq!(b.get("user:000001")?.as_deref(), Some(&[b'a'; 150][..]));
    assert_eq!(b.get("user:000004")?, None);
    Ok(())
}
