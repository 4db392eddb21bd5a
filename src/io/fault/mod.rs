//! A fault-injecting wrapper around a real backend (cargo feature
//! `fault-injection`), for tests.
//!
//! It can fail the Nth write, sync or segment preallocation with a chosen
//! errno, make a write short (a prefix reaches the file, then the error),
//! and simulate a power loss: with [`FaultPlan::track_durable`] it records,
//! for every write, the bytes it overwrote, and follows which writes a
//! completed `fdatasync` (or `sync_file_range` followed by a device flush)
//! made durable. After [`FaultPlan::power_off`] every I/O fails, and
//! [`FaultPlan::durable_image`] builds a copy of the directory holding only
//! what was durable, plus, at random, whole or sector-torn pieces of the
//! writes that were not, as a disk may have kept them.
//!
//! The model covers directory entries too, as a file system that keeps only
//! what was fsynced does: every file created, renamed or removed through
//! [`Files`](super::files::Files) (segments, hint files, the manifest, the
//! lock file, the database directory and its new ancestors) survives only
//! once its directory was fsynced after the change. Segment headers, the
//! manifest and hint files follow the same rules as the log: their bytes and
//! their size are durable after an `fdatasync` of the file. A file replaced
//! or removed while an older durable entry still names it is kept (its bytes
//! at that moment) for the image. Two directories swapped by
//! `renameat2(RENAME_EXCHANGE)` (`Files::exchange`, the encryption rewrites)
//! keep their old names until their parent is fsynced after the swap.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FaultPoint, Io, Op, Storage};
use model::Namespace;
pub use model::{ImagePolicy, ImageReport};

mod model;
use super::IoBackend;

/// Sector size of the simulated disk: a torn write keeps whole sectors.
pub const SECTOR: u64 = 512;

/// Faults to inject into a database's I/O. Cheap to clone; every clone
/// controls the same plan, so a test keeps one and passes one to
/// `EmdbBuilder::fault_plan`. Counts cover all shard cores and the
/// segment-preparation threads of that database.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    state: Arc<Mutex<PlanState>>,
}

#[derive(Debug, Default)]
struct PlanState {
    /// (ops of this kind to let through first, errno).
    fail_write: Option<(u64, i32)>,
    fail_sync: Option<(u64, i32)>,
    fail_fallocate: Option<(u64, i32)>,
    /// Every preallocation fails with ENOSPC while set.
    no_space: bool,
    /// (writes to let through, bytes of the next one that reach the file,
    /// errno returned for it).
    short_write: Option<(u64, usize, i32)>,
    /// Ops (writes and syncs) to let through before the power goes off.
    power_off_after: Option<u64>,
    /// File changes outside the log path to let through before the power
    /// goes off.
    file_changes_left: Option<u64>,
    writes: u64,
    syncs: u64,
    fallocates: u64,
    faults_injected: u64,
    syncs_after_fault: u64,
    powered_off: bool,
    /// Whether writes and directory entries are recorded for `durable_image`.
    tracking: bool,
    /// Ticks for record ids and sync stamps.
    clock: u64,
    /// Writes not known to be durable, in the order they were issued.
    volatile: Vec<Record>,
    /// Records made durable so far, and of those, how many by a device
    /// flush after `sync_file_range`.
    durable_records: u64,
    /// Directory entries and file identities (with tracking).
    ns: Namespace,
}

/// A write whose durability is not established yet.
#[derive(Debug)]
struct Record {
    id: u64,
    /// The file written (see `Namespace::ids`).
    file: u64,
    offset: u64,
    /// The bytes the write replaced.
    old: Vec<u8>,
    /// `Some(stamp)` once `sync_file_range` wrote it back: durable after
    /// the next device flush that starts after `stamp`.
    written_back: Option<u64>,
    /// Issued after the power went off (as the model orders it): never on
    /// the disk.
    doomed: bool,
}

/// How a fault at an op is delivered.
#[derive(Clone, Copy)]
enum Fault {
    Errno(i32),
    /// The write reaches the file for its first `usize` bytes, then fails.
    Short(usize, i32),
    /// The op is issued (a write may reach the disk), then the power goes off.
    PowerOff,
}

impl FaultPlan {
    /// An empty plan: nothing fails.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets `after` more writes through, then fails the next one with
    /// `errno` (for example `libc::EIO` or `libc::ENOSPC`). One-shot.
    pub fn fail_write(&self, after: u64, errno: i32) {
        self.lock().fail_write = Some((after, errno));
    }

    /// Lets `after` more syncs (fdatasync or sync_file_range) through, then
    /// fails the next one with `errno`. One-shot.
    pub fn fail_sync(&self, after: u64, errno: i32) {
        self.lock().fail_sync = Some((after, errno));
    }

    /// Lets `after` more segment preallocations through, then fails the
    /// next one with `errno` (after the file was created, as a real
    /// `fallocate` failure would). One-shot.
    pub fn fail_fallocate(&self, after: u64, errno: i32) {
        self.lock().fail_fallocate = Some((after, errno));
    }

    /// While `full` holds, every segment preallocation fails with `ENOSPC`:
    /// a disk with no room for a new segment file.
    pub fn set_no_space(&self, full: bool) {
        self.lock().no_space = full;
    }

    /// Lets `after` more writes through; the next one writes only its first
    /// `keep` bytes and then fails with `errno`, as a write cut short by a
    /// full disk does. One-shot.
    pub fn short_write(&self, after: u64, keep: usize, errno: i32) {
        self.lock().short_write = Some((after, keep, errno));
    }

    /// Starts recording writes and directory entries for
    /// [`FaultPlan::durable_image`]. Call before the database opens (before
    /// its directory is created, to model that too).
    pub fn track_durable(&self) {
        self.lock().tracking = true;
    }

    /// Cuts the power now: every later write, sync or file change fails
    /// with `EIO`, and operations in flight report `EIO` even if they
    /// completed.
    pub fn power_off(&self) {
        self.lock().powered_off = true;
    }

    /// Lets `after` more operations (writes and syncs) through, then cuts
    /// the power while the next one is issued: a write reaches the live
    /// file (the image may keep it torn), its caller gets `EIO`.
    pub fn power_off_after(&self, after: u64) {
        self.lock().power_off_after = Some(after);
    }

    /// Lets `after` more file changes outside the log path through
    /// (creations, writes, syncs, renames and removals by `Files`: the
    /// manifest, hint files, the keyring, the lock file), then cuts the
    /// power as the next one is issued; it fails with `EIO`.
    pub fn power_off_after_file_changes(&self, after: u64) {
        self.lock().file_changes_left = Some(after);
    }

    /// Whether the power is off.
    pub fn powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Writes issued so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Syncs issued so far (the failed ones included).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Segment preallocations attempted so far.
    pub fn fallocates(&self) -> u64 {
        self.lock().fallocates
    }

    /// Faults injected so far (a power loss counts once).
    pub fn faults_injected(&self) -> u64 {
        self.lock().faults_injected
    }

    /// Syncs issued after the first injected fault.
    pub fn syncs_after_fault(&self) -> u64 {
        self.lock().syncs_after_fault
    }

    /// Writes recorded as durable so far (with `track_durable`).
    pub fn durable_writes(&self) -> u64 {
        self.lock().durable_records
    }

    /// Index of the first op of `ops` to fail, and how.
    fn decide(st: &mut PlanState, ops: &[Op<'_>]) -> Option<(usize, Fault)> {
        for (i, op) in ops.iter().enumerate() {
            // A write with RWF_DSYNC is both a write and a sync: either
            // kind of injected failure may hit it.
            let is_write = matches!(op, Op::Write { .. } | Op::WriteDsync { .. });
            let is_sync = !matches!(op, Op::Write { .. });
            if is_sync {
                st.syncs += 1;
                if st.faults_injected > 0 {
                    st.syncs_after_fault += 1;
                }
            }
            if is_write {
                st.writes += 1;
            }
            if let Some(after) = st.power_off_after {
                if after == 0 {
                    st.power_off_after = None;
                    st.faults_injected += 1;
                    return Some((i, Fault::PowerOff));
                }
                st.power_off_after = Some(after - 1);
            }
            if is_write {
                if let Some((after, keep, errno)) = st.short_write {
                    if after == 0 {
                        st.short_write = None;
                        st.faults_injected += 1;
                        return Some((i, Fault::Short(keep, errno)));
                    }
                    st.short_write = Some((after - 1, keep, errno));
                }
            }
            let mut slots: [Option<&mut Option<(u64, i32)>>; 2] = [None, None];
            if is_write {
                slots[0] = Some(&mut st.fail_write);
            }
            if is_sync {
                slots[1] = Some(&mut st.fail_sync);
            }
            let mut fired = None;
            for slot in slots.into_iter().flatten() {
                if let Some((after, errno)) = *slot {
                    if after == 0 {
                        *slot = None;
                        fired = Some(errno);
                        break;
                    }
                    *slot = Some((after - 1, errno));
                }
            }
            if let Some(errno) = fired {
                st.faults_injected += 1;
                return Some((i, Fault::Errno(errno)));
            }
        }
        None
    }

    /// A file operation outside the backends is about to happen.
    pub(crate) fn at(&self, point: FaultPoint) -> io::Result<()> {
        let mut st = self.lock();
        if st.powered_off {
            return Err(eio());
        }
        if let FaultPoint::Fallocate = point {
            st.fallocates += 1;
            if st.no_space {
                st.faults_injected += 1;
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            if let Some((after, errno)) = st.fail_fallocate {
                if after == 0 {
                    st.fail_fallocate = None;
                    st.faults_injected += 1;
                    return Err(io::Error::from_raw_os_error(errno));
                }
                st.fail_fallocate = Some((after - 1, errno));
            }
        }
        Ok(())
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

pub(crate) struct FaultIo {
    pub inner: Box<dyn Io>,
    pub plan: FaultPlan,
}

impl FaultIo {
    fn run_with(&mut self, ops: &[Op<'_>], latency: bool) -> io::Result<()> {
        let (upto, fault, start, ids) = {
            let mut st = self.plan.lock();
            if st.powered_off {
                return Err(eio());
            }
            let (upto, fault) = match FaultPlan::decide(&mut st, ops) {
                // A power loss lets its op be issued.
                Some((i, f @ Fault::PowerOff)) => (ops.len().min(i + 1), Some(f)),
                Some((i, f)) => (i, Some(f)),
                None => (ops.len(), None),
            };
            let start = st.clock;
            let ids = if st.tracking {
                record_writes(&mut st, &ops[..upto])?
            } else {
                Vec::new()
            };
            (upto, fault, start, ids)
        };
        if upto > 0 {
            let ran = if latency {
                self.inner.run_latency_bound(&ops[..upto])
            } else {
                self.inner.run(&ops[..upto])
            };
            if let Err(e) = ran {
                return Err(if self.plan.powered_off() { eio() } else { e });
            }
        }
        // The ops before the faulting one completed (a linked chain starts
        // each op only after the one before it), so what they made durable
        // is durable; a power loss at op i leaves op i issued, not settled.
        let completed = match fault {
            Some(Fault::PowerOff) => upto.saturating_sub(1),
            _ => upto,
        };
        {
            let mut st = self.plan.lock();
            if st.powered_off && !matches!(fault, Some(Fault::PowerOff)) {
                // Cut by a timer while the chain ran: take the cut to be
                // before the chain, so none of it reached the disk (a later
                // op of the chain on disk would imply the earlier ones'
                // syncs completed, which the caller can never learn).
                if st.tracking {
                    for r in st.volatile.iter_mut() {
                        if ids.contains(&r.id) {
                            r.doomed = true;
                        }
                    }
                }
                return Err(eio());
            }
            if st.tracking {
                settle(&mut st, &ops[..completed], start, &ids[..completed])?;
            }
        }
        match fault {
            Some(Fault::Errno(errno)) => Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::Short(keep, errno)) => {
                if let Op::Write {
                    target,
                    offset,
                    buf,
                }
                | Op::WriteDsync {
                    target,
                    offset,
                    buf,
                } = ops[upto]
                {
                    // The bytes that made it are not durable (taken as a
                    // plain write).
                    let part = [Op::Write {
                        target,
                        offset,
                        buf: &buf[..keep.min(buf.len())],
                    }];
                    {
                        let mut st = self.plan.lock();
                        if st.tracking {
                            record_writes(&mut st, &part)?;
                        }
                    }
                    self.inner.run(&part)?;
                }
                Err(io::Error::from_raw_os_error(errno))
            }
            Some(Fault::PowerOff) => {
                self.plan.power_off();
                Err(eio())
            }
            None => Ok(()),
        }
    }
}

/// Records one write about to be issued, with the bytes it replaces. Writes
/// `earlier` in the same chain (descriptor, offset, bytes) are issued before
/// it, so where they overlap it replaces their bytes. Returns its id.
fn record_write(
    st: &mut PlanState,
    f: &File,
    offset: u64,
    buf: &[u8],
    earlier: &[(RawFd, u64, &[u8])],
) -> io::Result<u64> {
    let file = st.ns.id_of_file(f)?;
    let mut old = vec![0u8; buf.len()];
    let mut got = 0;
    while got < old.len() {
        match f.read_at(&mut old[got..], offset + got as u64) {
            Ok(0) => break, // past the end: zeros
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    for &(fd, o2, b2) in earlier {
        if fd != f.as_raw_fd() {
            continue;
        }
        let (a, b) = (
            offset.max(o2),
            (offset + buf.len() as u64).min(o2 + b2.len() as u64),
        );
        if a < b {
            old[(a - offset) as usize..(b - offset) as usize]
                .copy_from_slice(&b2[(a - o2) as usize..(b - o2) as usize]);
        }
    }
    st.clock += 1;
    let id = st.clock;
    st.volatile.push(Record {
        id,
        file,
        offset,
        old,
        written_back: None,
        doomed: false,
    });
    Ok(id)
}

/// Records the writes of a chain about to be issued. Returns the records'
/// ids, one per op (0 for syncs).
fn record_writes(st: &mut PlanState, ops: &[Op<'_>]) -> io::Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(ops.len());
    let mut earlier: Vec<(RawFd, u64, &[u8])> = Vec::new();
    for op in ops {
        let (Op::Write {
            target: Storage::File(f),
            offset,
            buf,
        }
        | Op::WriteDsync {
            target: Storage::File(f),
            offset,
            buf,
        }) = *op
        else {
            ids.push(0);
            continue;
        };
        ids.push(record_write(st, f, offset, buf, &earlier)?);
        earlier.push((f.as_raw_fd(), offset, buf));
    }
    Ok(ids)
}

/// Applies what a completed chain made durable. A sync covers the writes to
/// its file issued before it, by this chain or before the chain started,
/// and, as a device flush, everything written back by `sync_file_range`
/// before that. Writes that other threads issued while the chain ran are
/// not counted: the engine cannot rely on them.
fn settle(st: &mut PlanState, ops: &[Op<'_>], start: u64, ids: &[u64]) -> io::Result<()> {
    let mut own: Vec<u64> = Vec::new();
    let mut own_stamps: Vec<u64> = Vec::new();
    for (j, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { .. } => own.push(ids[j]),
            Op::WriteDsync {
                target: Storage::File(f),
                ..
            } => {
                own.push(ids[j]);
                settle_dsync(st, f, ids[j]);
            }
            Op::SyncRange {
                target: Storage::File(f),
            } => {
                let file = st.ns.id_of_file(f)?;
                st.clock += 1;
                let stamp = st.clock;
                own_stamps.push(stamp);
                for r in st.volatile.iter_mut() {
                    let covered = r.file == file && (r.id <= start || own.contains(&r.id));
                    if r.written_back.is_none() && covered {
                        r.written_back = Some(stamp);
                    }
                }
            }
            Op::Sync {
                target: Storage::File(f),
            } => {
                let file = st.ns.id_of_file(f)?;
                settle_sync(st, file, f, start, &own, &own_stamps);
            }
            _ => {}
        }
    }
    Ok(())
}

/// A completed `RWF_DSYNC` write: its own bytes are durable. Taken as
/// nothing more (not as a device flush for other writes, nor as a sync of
/// other writes to the file), which is all the engine relies on.
fn settle_dsync(st: &mut PlanState, f: &File, id: u64) {
    let before = st.volatile.len();
    st.volatile.retain(|r| r.id != id);
    st.durable_records += (before - st.volatile.len()) as u64;
    if let (Ok(file), Ok(m)) = (st.ns.id_of_file(f), f.metadata()) {
        if let Some(len) = st.ns.durable_len.get_mut(&file) {
            *len = (*len).max(m.len());
        }
    }
}

/// A completed sync of `file` (as a device flush, too).
fn settle_sync(
    st: &mut PlanState,
    file: u64,
    f: &File,
    start: u64,
    own: &[u64],
    own_stamps: &[u64],
) {
    let before = st.volatile.len();
    st.volatile.retain(|r| {
        let flushed = match r.written_back {
            Some(s) => s <= start || own_stamps.contains(&s),
            None => false,
        };
        let covered = r.file == file && (r.id <= start || own.contains(&r.id));
        !(flushed || covered)
    });
    st.durable_records += (before - st.volatile.len()) as u64;
    if let Some(len) = st.ns.durable_len.get_mut(&file) {
        if let Ok(m) = f.metadata() {
            *len = m.len();
        }
    }
}

impl Io for FaultIo {
    fn kind(&self) -> IoBackend {
        self.inner.kind()
    }

    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run_with(ops, false)
    }

    fn run_latency_bound(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run_with(ops, true)
    }

    fn buffers_in_flight(&self) -> bool {
        self.inner.buffers_in_flight()
    }
}
