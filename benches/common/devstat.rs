//! Device flush counts for the benchmarks: field 16 (flush requests
//! completed) of `/sys/block/<disk>/stat`, for the disk holding a directory.
//! Shared by `benches/engine.rs` and `benches/compare` (included with
//! `#[path]`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The `stat` file of the whole disk under `dir`: st_dev ->
/// `/sys/dev/block/MAJ:MIN`, then its parent when that node is a partition.
/// An error says why it can't be had (no sysfs, fewer than 16 fields).
pub fn find_dev_stat(dir: &Path) -> Result<PathBuf, String> {
    let dev = fs::metadata(dir).map_err(|e| e.to_string())?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let mut sys = fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    if sys.join("partition").exists() {
        sys = sys
            .parent()
            .ok_or("partition without parent")?
            .to_path_buf();
    }
    let stat = sys.join("stat");
    let s = fs::read_to_string(&stat).map_err(|e| format!("{}: {e}", stat.display()))?;
    let fields = s.split_whitespace().count();
    if fields < 16 {
        return Err(format!(
            "{} has only {fields} fields (no field 16)",
            stat.display()
        ));
    }
    Ok(stat)
}

/// Field 16 of a disk's `stat` file: flush requests completed.
pub fn read_flushes(stat: &Path) -> Option<u64> {
    let s = fs::read_to_string(stat).ok()?;
    s.split_whitespace().nth(15)?.parse().ok()
}
