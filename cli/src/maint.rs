//! Maintenance with a progress bar: compact, backup, checkpoint. The call
//! runs on a thread of its own while this one draws
//! `Emdb::maintenance_progress` every 50 ms. The bar goes to stderr, and
//! only when stderr is a terminal; the summary goes to stdout.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use emdb::{Emdb, MaintenanceTask};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fail::Failure;
use crate::fmt::{count, size};
use crate::open;

/// Runs `op` on its own thread, drawing its progress until it returns.
/// `expected` is the bar's length until the call reports its own total.
fn with_bar<T: Send>(
    db: &Emdb,
    (task, expected): (MaintenanceTask, u64),
    label: &'static str,
    op: impl FnOnce() -> emdb::Result<T> + Send,
) -> emdb::Result<T> {
    let terminal = std::io::stderr().is_terminal();
    let target = if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(expected.max(1)), target);
    let template = if task == MaintenanceTask::Checkpoint {
        "{msg:>10} [{wide_bar}] {human_pos}/{human_len} entries  ETA {eta}"
    } else {
        "{msg:>10} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}  ETA {eta}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar.tick();
    let result = std::thread::scope(|s| {
        let h = s.spawn(op);
        while !h.is_finished() {
            if let Some(p) = db.maintenance_progress().filter(|p| p.task == task) {
                bar.set_length(p.total.max(1));
                bar.set_position(p.done);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        h.join()
    });
    // Done: the bar ends full, on its own line.
    let ok = matches!(result, Ok(Ok(_)));
    if ok {
        bar.set_position(bar.length().unwrap_or(0));
    }
    bar.finish();
    if terminal {
        eprintln!();
    }
    result.unwrap_or_else(|_| Err(emdb::Error::Io(std::io::Error::other("the call panicked"))))
}

pub fn compact(path: &Path, threshold: Option<f64>) -> Result<u8, Failure> {
    let db = open::writable(path, |b| match threshold {
        Some(t) => b.compaction_threshold(t),
        None => b,
    })?;
    let fail = |e| Failure::emdb(e, path);
    let before = db.stats().map_err(fail)?;
    let started = Instant::now();
    let expected = before.dead_bytes + before.live_bytes;
    with_bar(&db, (MaintenanceTask::Compact, expected), "compact", || {
        db.compact()
    })
    .map_err(fail)?;
    let after = db.stats().map_err(fail)?;
    db.close().map_err(fail)?;
    if after.compactions == 0 {
        println!(
            "nothing to compact: no segment is {:.0}% dead ({} dead bytes in all; --threshold \
             lowers the bar)",
            threshold.unwrap_or(0.4) * 100.0,
            size(before.dead_bytes)
        );
        return Ok(0);
    }
    println!(
        "compacted {} in {:.2} s: {} of segment files retired, {} of live records moved; \
         segments {} -> {}, files on disk {} -> {}, dead bytes {} -> {}",
        path.display(),
        started.elapsed().as_secs_f64(),
        size(after.bytes_reclaimed),
        size(after.bytes_moved),
        before.segments,
        after.segments,
        size(before.file_size_bytes),
        size(after.file_size_bytes),
        size(before.dead_bytes),
        size(after.dead_bytes),
    );
    Ok(0)
}

pub fn backup(path: &Path, dest: &Path) -> Result<u8, Failure> {
    // Read-only: a backup changes nothing in the database it copies.
    let db = open::read_only(path)?;
    let fail = |e| Failure::emdb(e, path);
    let st = db.stats().map_err(fail)?;
    let started = Instant::now();
    let expected = (MaintenanceTask::Backup, st.logical_size_bytes);
    with_bar(&db, expected, "backup", || db.backup_to(dest)).map_err(fail)?;
    db.close().map_err(fail)?;
    println!(
        "backed up {} records ({}) to {} in {:.2} s; every file of the copy is fsynced",
        count(st.live_records),
        size(st.logical_size_bytes),
        dest.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

pub fn checkpoint(path: &Path) -> Result<u8, Failure> {
    let db = open::writable(path, |b| b)?;
    let fail = |e| Failure::emdb(e, path);
    let st = db.stats().map_err(fail)?;
    let started = Instant::now();
    let expected = (MaintenanceTask::Checkpoint, st.live_records);
    with_bar(&db, expected, "checkpoint", || db.checkpoint()).map_err(fail)?;
    db.close().map_err(fail)?;
    println!(
        "checkpointed {} in {:.2} s: hint files for {} segment(s) and {} records; the next \
         open loads them instead of replaying the log",
        path.display(),
        started.elapsed().as_secs_f64(),
        st.segments,
        count(st.live_records)
    );
    Ok(0)
}
