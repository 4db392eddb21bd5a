//! How much disk a database takes: a new database with a few records takes
//! a few MiB, however large `segment_size` is, because each segment file
//! grows as it fills (1 MiB, doubling up to 4 MiB steps).
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --test space`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use emdb::Emdb;

/// Bytes the files of `dir` occupy on disk (allocated blocks).
fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum()
}

#[test]
fn a_small_database_stays_small() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    // The defaults (64 MiB segments), two shards, as the tour uses.
    let db = Emdb::builder().path(&dir).shards(2).build().unwrap();
    for i in 0..1002 {
        db.insert(format!("user:{i:04}"), format!("{{\"name\":\"user {i}\"}}"))
            .unwrap();
    }
    db.flush().unwrap();
    let st = db.stats().unwrap();
    assert!(
        st.file_size_bytes <= 4 << 20,
        "1,002 records take {} bytes of segment files",
        st.file_size_bytes
    );
    drop(db);
    let used = disk_usage(&dir);
    assert!(used <= 4 << 20, "1,002 records occupy {used} bytes on disk");
    // And it reopens and keeps growing normally.
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), 1002);
    for i in 0..20_000 {
        db.insert(format!("more:{i:05}"), vec![b'x'; 200]).unwrap();
    }
    db.flush().unwrap();
    let st = db.stats().unwrap();
    assert!(st.file_size_bytes > 4 << 20, "the files grew: {st:?}");
    assert!(
        st.file_size_bytes < 3 * st.logical_size_bytes + (4 << 20),
        "growth in steps keeps the preallocation proportionate: {st:?}"
    );
    drop(db);
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), 21_002);
    assert_eq!(db.get("more:19999").unwrap(), Some(vec![b'x'; 200]));
}

/// KiB of this process's file mappings whose path contains `needle` that
/// are mapped in 2 MiB pages (`FilePmdMapped` in `/proc/self/smaps`).
fn pmd_mapped_kib(needle: &str) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        // A mapping's first line starts with its address range.
        let head = line.split_whitespace().next().unwrap_or("");
        if head.contains('-') && head.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.contains(needle);
            continue;
        }
        if inside {
            if let Some(kib) = line.strip_prefix("FilePmdMapped:") {
                total += kib
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// A bulk load (`insert_many` in batches of about 5 MiB) and a few small
/// durable writes: where the kernel makes large page-cache folios for the
/// file system (a probe file written 4 MiB at once shows whether it does),
/// each 2 MiB region of the segment after its first is written whole the
/// first time (zeros ahead of the data, or one write of data), and so maps
/// as 2 MiB pages when read. With the zeros written from wherever the data
/// ended, and none for a bulk load, only the regions that one large write
/// happened to cover whole did (about half of them).
#[test]
fn a_segment_written_in_batches_maps_as_2mib_pages() {
    let t = tempfile::tempdir().unwrap();
    let probe = t.path().join("probe.bin");
    std::fs::write(&probe, vec![1u8; 4 << 20]).unwrap();
    let file = std::fs::File::open(&probe).unwrap();
    // SAFETY: a private read-only view of a file nobody changes meanwhile.
    let view = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let touched: u64 = view.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    assert_eq!(touched, 1024);
    if pmd_mapped_kib("probe.bin") == 0 {
        eprintln!("skipped: this kernel maps no large folio of this file system in 2 MiB pages");
        return;
    }
    drop(view);
    let dir = t.path().join("db");
    let db = Emdb::builder().path(&dir).shards(1).build().unwrap();
    let key = |i: u32| format!("key:{:08x}", i.wrapping_mul(0x9E37_79B1));
    // About 40 MiB in batches of 25,000 records, then small durable writes.
    for b in 0..8u32 {
        db.insert_many((b * 25_000..(b + 1) * 25_000).map(|i| (key(i), vec![b'v'; 180])))
            .unwrap();
    }
    for i in 200_000..201_000u32 {
        db.insert(key(i), vec![b'v'; 180]).unwrap();
        if i % 10 == 9 {
            db.flush().unwrap();
        }
    }
    db.flush().unwrap();
    // Read every record through the file view.
    for i in 0..201_000u32 {
        assert!(db.get(key(i)).unwrap().is_some());
    }
    let kib = pmd_mapped_kib(".seg");
    let data_kib = db.stats().unwrap().logical_size_bytes >> 10;
    // Every region but the first and the one the data ends in.
    assert!(
        kib + (4 << 10) >= data_kib,
        "only {kib} of {data_kib} KiB of the segment are mapped in 2 MiB pages"
    );
}
