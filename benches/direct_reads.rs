//! What `O_DIRECT` writes would cost emdb's reads. The engine reads records
//! through a read-only mapping of each segment file; a direct write
//! invalidates the page cache over what it writes, so the first lookup of a
//! freshly written record may have to read its page back from the device.
//!
//! The bench writes the same log twice, 210-byte records appended in
//! rounds of `EMDB_DR_ROUND` records (default 16, a group commit's worth):
//! once with buffered `pwrite` + `fdatasync` per round, once with `O_DIRECT`
//! writes of the round's 4 KiB blocks (the partial tail block rewritten each
//! round) + `fdatasync`. Then it maps each file and reads one random record
//! per page-sized stride in random order (the first touch of each page), and
//! prints the median time per read and the major page faults taken.
//!
//! ```sh
//! cargo bench --bench direct_reads
//! EMDB_DR_MIB=64 EMDB_DR_ROUND=16 cargo bench --bench direct_reads
//! ```
//!
//! The files live under `target/` (`EMDB_DR_DIR` overrides): they must be
//! on the disk under test, not a tmpfs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

const RECORD: usize = 210;
const BLOCK: usize = 4096;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Major page faults of this process so far.
fn major_faults() -> u64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_majflt as u64
}

/// A 4 KiB-aligned buffer of `len` bytes (a multiple of 4 KiB).
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, BLOCK).expect("layout");
        // SAFETY: non-zero size; zeroed memory is a valid byte buffer.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        Aligned { ptr, layout }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Writes `total` bytes of records in rounds, buffered or direct; every
/// round ends with an fdatasync. The image is built in `log`.
fn write_log(path: &Path, log: &mut Aligned, total: usize, round: usize, direct: bool) {
    let _ = std::fs::remove_file(path);
    let plain = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create the log");
    // Written and synced zeros first, as the engine's zero-fill leaves them:
    // the timed writes then change no metadata.
    plain
        .write_all_at(&vec![0u8; total.next_multiple_of(BLOCK)], 0)
        .expect("zero-fill");
    plain.sync_all().expect("sync");
    let file: File = if direct {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .expect("open O_DIRECT")
    } else {
        plain
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut end = 0usize;
    let bytes = log.bytes();
    while end + RECORD * round <= total {
        let from = end;
        for _ in 0..round {
            rng.fill(&mut bytes[end..end + RECORD]);
            end += RECORD;
        }
        if direct {
            let a = from / BLOCK * BLOCK;
            let b = end.next_multiple_of(BLOCK);
            file.write_all_at(&bytes[a..b], a as u64)
                .expect("direct write");
        } else {
            file.write_all_at(&bytes[from..end], from as u64)
                .expect("write");
        }
        file.sync_data().expect("fdatasync");
    }
}

/// Maps the file and reads one record per page in random page order;
/// returns the median nanoseconds per read and the major faults taken.
/// Every value read must be the one written (`log`).
fn read_back(path: &Path, total: usize, log: &mut Aligned) -> (f64, u64) {
    let file = File::open(path).expect("open for reading");
    // SAFETY: a read-only shared mapping of a file nobody writes meanwhile.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
    let pages = total / BLOCK;
    let mut order: Vec<usize> = (0..pages).collect();
    fastrand::Rng::with_seed(11).shuffle(&mut order);
    let faults = major_faults();
    let mut times = Vec::with_capacity(pages);
    let mut sum = 0u64;
    for p in order {
        let off = p * BLOCK + 100;
        let t = Instant::now();
        let v = u64::from_le_bytes(map[off..off + 8].try_into().expect("8 bytes"));
        times.push(t.elapsed().as_nanos() as f64);
        sum = sum.wrapping_add(v);
        let want = u64::from_le_bytes(log.bytes()[off..off + 8].try_into().expect("8 bytes"));
        assert_eq!(v, want, "page {p} reads back other bytes than written");
    }
    std::hint::black_box(sum);
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], major_faults() - faults)
}

fn main() {
    let mib = env_num("EMDB_DR_MIB", 32);
    let round = env_num("EMDB_DR_ROUND", 16).max(1);
    let dir: PathBuf = std::env::var_os("EMDB_DR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/direct-reads"));
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    // Whole rounds only, so that every page read lies in written records.
    let total = (mib << 20) / BLOCK * BLOCK;
    let mut log = Aligned::new(total + BLOCK);
    println!("{mib} MiB of {RECORD}-byte records, {round} per durable round");
    println!("| writes | median ns per first read of a page | major faults | pages |");
    println!("|---|---:|---:|---:|");
    for (name, direct) in [
        ("buffered pwrite + fdatasync", false),
        ("O_DIRECT + fdatasync", true),
    ] {
        let path = dir.join(if direct { "direct.log" } else { "buffered.log" });
        write_log(&path, &mut log, total, round, direct);
        let (ns, faults) = read_back(&path, total, &mut log);
        println!("| {name} | {ns:.0} | {faults} | {} |", total / BLOCK);
        let _ = std::fs::remove_file(&path);
    }
}
