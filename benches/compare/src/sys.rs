//! Machine-level measurements: device flushes, process memory, disk usage and
//! the raw-device reference loop.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The block device that holds a directory, and its `stat` file.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub stat: PathBuf,
}

impl Device {
    /// Finds the whole disk under `dir` (see `devstat::find_dev_stat`).
    pub fn of_dir(dir: &Path) -> Option<Device> {
        let stat = crate::devstat::find_dev_stat(dir).ok()?;
        let name = stat.parent()?.file_name()?.to_string_lossy().into_owned();
        Some(Device { name, stat })
    }

    /// Field 16 of the stat file: flush requests completed by the device.
    pub fn flushes(&self) -> u64 {
        crate::devstat::read_flushes(&self.stat).unwrap_or(0)
    }
}

/// Resident set size of this process in bytes (anonymous + file-backed).
pub fn rss_bytes() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// User plus system CPU time of the whole process (every thread, the
/// stores' own threads and tokio's pools included), from `getrusage`.
pub fn cpu_time() -> Duration {
    // SAFETY: rusage is plain old data, so all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out pointer; it cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Bytes allocated on disk under `path` (st_blocks * 512, like `du`).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| disk_usage(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.blocks() * 512
    }
}

/// Result of one timed loop of durable operations.
pub struct LoopResult {
    pub ops: u64,
    pub secs: f64,
    pub device_flushes: u64,
}

/// The raw-device floor: `threads` threads each loop {pwrite 4 KiB at its own
/// offset; fdatasync} on one preallocated, already-synced file.
pub fn raw_device_loop(
    dir: &Path,
    threads: usize,
    dur: Duration,
    dev: Option<&Device>,
) -> std::io::Result<LoopResult> {
    const BLOCK: u64 = 4096;
    const SLOTS: u64 = 1024; // per thread
    let path = dir.join("raw-device.bin");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // Write every block once and sync, so the loop overwrites allocated,
    // initialised blocks and fdatasync has no metadata to persist.
    let zero = vec![0u8; (BLOCK * SLOTS) as usize];
    for t in 0..threads as u64 {
        file.write_all_at(&zero, t * BLOCK * SLOTS)?;
    }
    file.sync_all()?;
    let file = Arc::new(file);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let before = dev.map(Device::flushes).unwrap_or(0);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads as u64)
        .map(|t| {
            let (file, stop, ops) = (file.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let buf = vec![0xA5u8; BLOCK as usize];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    file.write_all_at(&buf, (t * SLOTS + i % SLOTS) * BLOCK)?;
                    file.sync_data()?;
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("raw-device thread panicked")?;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = dev.map(Device::flushes).unwrap_or(0);
    drop(file);
    let _ = fs::remove_file(&path);
    Ok(LoopResult {
        ops: ops.load(Ordering::Relaxed),
        secs,
        device_flushes: after.saturating_sub(before),
    })
}

/// First line of /proc/cpuinfo's "model name", and the CPU count.
pub fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{model} ({n} CPUs)")
}

pub fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Filesystem type of the mount that holds `dir` (longest matching mount point).
pub fn filesystem(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if dir.starts_with(f[1]) && best.as_ref().is_none_or(|b| f[1].len() > b.0) {
            best = Some((f[1].len(), f[2].to_string(), f[0].to_string()));
        }
    }
    best.map(|(_, fs, src)| format!("{fs} on {src}"))
        .unwrap_or_else(|| "unknown".into())
}

/// Model and rotational flag of the device, from sysfs.
pub fn disk_model(dev: &Device) -> String {
    let base = dev.stat.parent().map(Path::to_path_buf).unwrap_or_default();
    let read = |p: &str| {
        fs::read_to_string(base.join(p))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let size = read("size")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| format!("{:.0} GiB", s as f64 * 512.0 / (1u64 << 30) as f64))
        .unwrap_or_default();
    let rot = match read("queue/rotational").as_deref() {
        Some("0") => "non-rotational",
        Some("1") => "rotational",
        _ => "rotational: unknown",
    };
    let model = read("device/model").unwrap_or_else(|| "virtio block device".into());
    let wc = read("queue/write_cache").unwrap_or_default();
    format!(
        "/dev/{} ({model}, {size}, {rot}, write cache: {wc})",
        dev.name
    )
}
