//! The device flusher: one fdatasync that makes several shards durable at
//! once, after each has put its data on the device with `sync_file_range`.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::shard::Shard;
use super::Ctx;
use crate::error::{Error, Result};
use crate::io::IoBackend;

/// Starts the device flusher: it serves multi-shard flushes with one
/// fdatasync after every involved shard has put its data on the device
/// (`sync_file_range`), so one device flush covers all of them. It syncs the
/// lock file, which has no dirty data: the call only flushes the device.
pub(super) fn start_flusher(
    ctx: &Arc<Ctx>,
    shards: &[Arc<Shard>],
    dir: &Path,
    backend: IoBackend,
) -> Result<JoinHandle<()>> {
    let config = ctx.config.clone();
    let anchor = crate::io::Storage::File(fs::File::open(dir.join("LOCK"))?);
    let ctx2 = ctx.clone();
    let shards: Vec<Arc<Shard>> = shards.to_vec();
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let t = std::thread::Builder::new()
        .name("emdb-flusher".into())
        .spawn(move || {
            let mut io = match config.backend(backend) {
                Ok(io) => {
                    let _ = tx.send(Ok(()));
                    io
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            run_flusher(&ctx2, &shards, &anchor, io.as_mut());
        })?;
    match rx.recv() {
        Ok(Ok(())) => {
            let _ = ctx.flusher.set(t.thread().clone());
            Ok(t)
        }
        Ok(Err(e)) => Err(Error::Io(e)),
        Err(_) => Err(Error::Io(io::Error::other(
            "device flusher exited during start",
        ))),
    }
}

/// Whether the filesystem of `dir` overwrites written blocks in place, so that
/// a write into an already written and synced block changes no metadata and
/// is durable after `sync_file_range` plus any device flush. True for ext4
/// and XFS; copy-on-write filesystems (btrfs, ZFS) allocate on every write,
/// so there every shard syncs its own file.
pub(super) fn overwrites_in_place(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `st` is a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    matches!(st.f_type as i64, EXT4 | XFS)
}

/// Longest the device flusher waits for shards still writing their part.
const MAX_FLUSH_GATHER: std::time::Duration = std::time::Duration::from_micros(200);

fn run_flusher(
    ctx: &Ctx,
    shards: &[Arc<Shard>],
    anchor: &crate::io::Storage,
    io: &mut dyn crate::io::Io,
) {
    let mut done = 0u64;
    let mut last_flush = std::time::Duration::ZERO;
    loop {
        let want = ctx.flush_requested.load(Ordering::Acquire);
        if want == done {
            if ctx.flusher_stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::park();
            continue;
        }
        // Let shards that are still putting their part of a shared flush on
        // the device finish, so that one device flush covers all of them.
        if ctx.flushes_in_flight.load(Ordering::Acquire) > 1 {
            let deadline = std::time::Instant::now() + (last_flush / 2).min(MAX_FLUSH_GATHER);
            while shards.iter().any(|s| s.shared_pending()) {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
        let want = ctx.flush_requested.load(Ordering::Acquire);
        // What each shard has on the device now; the flush below covers it.
        let snaps: Vec<_> = shards.iter().map(|s| s.stable_snapshot()).collect();
        let started = std::time::Instant::now();
        let result = io.run(&[crate::io::Op::Sync { target: anchor }]);
        last_flush = started.elapsed();
        match result {
            Ok(()) => {
                ctx.flusher_flushes.fetch_add(1, Ordering::Relaxed);
                for (s, snap) in shards.iter().zip(snaps) {
                    s.mark_durable(snap);
                }
            }
            Err(e) => {
                // Never retried: poison every shard and stop, so that no
                // later flush can be called durable over what this one lost.
                for s in shards {
                    s.poison_from_flusher(&e);
                }
                return;
            }
        }
        done = want;
    }
}
