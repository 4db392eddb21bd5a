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
//! What the simulation does not model: files written outside the log path
//! (segment headers and preallocation, manifest, hint files) are taken as
//! durable as written. Each of those paths syncs the file, and the
//! directory where an entry changes, before anything depends on it.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FaultPoint, Io, Op, Storage};
use crate::builder::IoBackend;

/// Sector size of the simulated disk: a torn write keeps whole sectors.
pub const SECTOR: u64 = 512;

/// Faults to inject into a database's I/O. Cheap to clone; every clone
/// controls the same plan, so a test keeps one and passes one to
/// `EmdbBuilder::fault_plan`. Counts cover all shard cores, the device
/// flusher and the segment-preparation threads of that database.
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
    writes: u64,
    syncs: u64,
    fallocates: u64,
    faults_injected: u64,
    syncs_after_fault: u64,
    powered_off: bool,
    /// Whether writes are recorded for `durable_image`.
    tracking: bool,
    /// Ticks for record ids and sync stamps.
    clock: u64,
    /// Writes not known to be durable, in the order they were issued.
    volatile: Vec<Record>,
    /// Records made durable so far, and of those, how many by a device
    /// flush after `sync_file_range`.
    durable_records: u64,
}

/// A write whose durability is not established yet.
#[derive(Debug)]
struct Record {
    id: u64,
    path: Arc<PathBuf>,
    offset: u64,
    /// The bytes the write replaced.
    old: Vec<u8>,
    /// `Some(stamp)` once `sync_file_range` wrote it back: durable after
    /// the next device flush that starts after `stamp`.
    written_back: Option<u64>,
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

/// What [`FaultPlan::durable_image`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageReport {
    /// Writes that were not durable at the power loss.
    pub volatile_writes: u64,
    /// Of those, writes the image keeps whole (the disk had written them).
    pub kept: u64,
    /// Writes the image keeps a sector-aligned prefix of.
    pub torn: u64,
    /// Writes the image reverts entirely.
    pub dropped: u64,
    /// Bytes restored to what they held before a volatile write.
    pub bytes_reverted: u64,
}

/// Which volatile writes a durable image keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePolicy {
    /// Only what was made durable: every volatile write is reverted.
    DurableOnly,
    /// Each volatile write independently: reverted (half the time), kept
    /// whole, or torn after a random number of whole sectors. Models a disk
    /// that wrote back some dirty pages, in any order, before the loss.
    Random,
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

    /// Starts recording writes for [`FaultPlan::durable_image`]. Call before
    /// the database opens.
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

    /// Builds in `out` (created, must not exist) the directory a restart
    /// after the power loss would find: a copy of `live` whose volatile
    /// writes are reverted or kept as `policy` and `seed` decide. Call once
    /// the database is closed (or abandoned) after [`FaultPlan::power_off`].
    pub fn durable_image(
        &self,
        live: &Path,
        out: &Path,
        policy: ImagePolicy,
        seed: u64,
    ) -> io::Result<ImageReport> {
        let st = self.lock();
        if !st.tracking {
            return Err(io::Error::other("durable_image needs track_durable()"));
        }
        fs::create_dir(out)?;
        for e in fs::read_dir(live)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::copy(e.path(), out.join(e.file_name()))?;
            }
        }
        let live = fs::canonicalize(live)?;
        let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        let mut report = ImageReport::default();
        // Newest first: a byte takes the value of the newest kept write
        // covering it, else the old bytes of the oldest reverted write
        // newer than every kept one, which is what the disk held.
        let mut decided: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
        for r in st.volatile.iter().rev() {
            let rel = match r.path.strip_prefix(&live) {
                Ok(rel) => rel.to_path_buf(),
                Err(_) => continue,
            };
            let (from, to) = (r.offset, r.offset + r.old.len() as u64);
            report.volatile_writes += 1;
            let cut = match policy {
                ImagePolicy::DurableOnly => from,
                ImagePolicy::Random => match splitmix(&mut rng) % 4 {
                    0 | 1 => from,
                    2 => to,
                    _ => {
                        let first = from.div_ceil(SECTOR) * SECTOR;
                        let sectors = to.saturating_sub(first) / SECTOR;
                        if first >= to || sectors == 0 {
                            from
                        } else {
                            first + (splitmix(&mut rng) % (sectors + 1)) * SECTOR
                        }
                    }
                },
            };
            if cut == from {
                report.dropped += 1;
            } else if cut == to {
                report.kept += 1;
            } else {
                report.torn += 1;
            }
            let done = decided.entry(rel.clone()).or_default();
            let file = OpenOptions::new().write(true).open(out.join(&rel))?;
            for (a, b) in subtract((cut, to), done) {
                let s = (a - from) as usize..(b - from) as usize;
                file.write_all_at(&r.old[s], a)?;
                report.bytes_reverted += b - a;
            }
            if cut > from {
                insert_interval(done, (from, cut));
            }
        }
        Ok(report)
    }

    /// Index of the first op of `ops` to fail, and how.
    fn decide(st: &mut PlanState, ops: &[Op<'_>]) -> Option<(usize, Fault)> {
        for (i, op) in ops.iter().enumerate() {
            let is_sync = !matches!(op, Op::Write { .. });
            if is_sync {
                st.syncs += 1;
                if st.faults_injected > 0 {
                    st.syncs_after_fault += 1;
                }
            } else {
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
            if !is_sync {
                if let Some((after, keep, errno)) = st.short_write {
                    if after == 0 {
                        st.short_write = None;
                        st.faults_injected += 1;
                        return Some((i, Fault::Short(keep, errno)));
                    }
                    st.short_write = Some((after - 1, keep, errno));
                }
            }
            let slot = if is_sync {
                &mut st.fail_sync
            } else {
                &mut st.fail_write
            };
            if let Some((after, errno)) = *slot {
                if after == 0 {
                    *slot = None;
                    st.faults_injected += 1;
                    return Some((i, Fault::Errno(errno)));
                }
                *slot = Some((after - 1, errno));
            }
        }
        None
    }

    /// A file operation outside the backends is about to happen.
    pub(crate) fn at(&self, point: FaultPoint) -> io::Result<()> {
        let mut st = self.lock();
        if st.powered_off {
            return Err(io::Error::from_raw_os_error(libc::EIO));
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

pub(crate) struct FaultIo {
    pub inner: Box<dyn Io>,
    pub plan: FaultPlan,
}

impl FaultIo {
    fn run_with(&mut self, ops: &[Op<'_>], latency: bool) -> io::Result<()> {
        let eio = || io::Error::from_raw_os_error(libc::EIO);
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
        match fault {
            Some(Fault::Errno(errno)) => return Err(io::Error::from_raw_os_error(errno)),
            Some(Fault::Short(keep, errno)) => {
                if let Op::Write {
                    target,
                    offset,
                    buf,
                } = ops[upto]
                {
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
                return Err(io::Error::from_raw_os_error(errno));
            }
            Some(Fault::PowerOff) => {
                self.plan.power_off();
                return Err(eio());
            }
            None => {}
        }
        let mut st = self.plan.lock();
        if st.powered_off {
            return Err(eio());
        }
        if st.tracking {
            settle(&mut st, &ops[..upto], start, &ids);
        }
        Ok(())
    }
}

/// Records the writes of a chain about to be issued, with the bytes each
/// replaces (a later write of the chain over an earlier one replaces the
/// earlier one's bytes). Returns the records' ids, one per op (0 for syncs).
fn record_writes(st: &mut PlanState, ops: &[Op<'_>]) -> io::Result<Vec<u64>> {
    let mut ids = Vec::with_capacity(ops.len());
    for (j, op) in ops.iter().enumerate() {
        let Op::Write {
            target: Storage::File(f),
            offset,
            buf,
        } = *op
        else {
            ids.push(0);
            continue;
        };
        use std::os::fd::AsRawFd;
        let path = Arc::new(fd_path(f.as_raw_fd())?);
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
        for earlier in &ops[..j] {
            if let Op::Write {
                target: Storage::File(g),
                offset: o2,
                buf: b2,
            } = *earlier
            {
                if g.as_raw_fd() != f.as_raw_fd() {
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
        }
        st.clock += 1;
        ids.push(st.clock);
        st.volatile.push(Record {
            id: st.clock,
            path,
            offset,
            old,
            written_back: None,
        });
    }
    Ok(ids)
}

/// Applies what a completed chain made durable. A sync covers the writes to
/// its file issued before it, by this chain or before the chain started,
/// and, as a device flush, everything written back by `sync_file_range`
/// before that. Writes that other threads issued while the chain ran are
/// not counted: the engine cannot rely on them.
fn settle(st: &mut PlanState, ops: &[Op<'_>], start: u64, ids: &[u64]) {
    let mut own: Vec<u64> = Vec::new();
    let mut own_stamps: Vec<u64> = Vec::new();
    for (j, op) in ops.iter().enumerate() {
        let covered = |r: &Record, path: &Path| {
            r.path.as_path() == path && (r.id <= start || own.contains(&r.id))
        };
        match *op {
            Op::Write { .. } => own.push(ids[j]),
            Op::SyncRange {
                target: Storage::File(f),
            } => {
                use std::os::fd::AsRawFd;
                let Ok(path) = fd_path(f.as_raw_fd()) else {
                    continue;
                };
                st.clock += 1;
                let stamp = st.clock;
                own_stamps.push(stamp);
                for r in st.volatile.iter_mut() {
                    if r.written_back.is_none() && covered(r, &path) {
                        r.written_back = Some(stamp);
                    }
                }
            }
            Op::Sync {
                target: Storage::File(f),
            } => {
                use std::os::fd::AsRawFd;
                let Ok(path) = fd_path(f.as_raw_fd()) else {
                    continue;
                };
                let before = st.volatile.len();
                st.volatile.retain(|r| {
                    let flushed = match r.written_back {
                        Some(s) => s <= start || own_stamps.contains(&s),
                        None => false,
                    };
                    !(flushed || covered(r, &path))
                });
                st.durable_records += (before - st.volatile.len()) as u64;
            }
            _ => {}
        }
    }
}

fn fd_path(fd: RawFd) -> io::Result<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{fd}"))
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The parts of `[a, b)` not covered by the sorted, disjoint `set`.
fn subtract((a, b): (u64, u64), set: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    for &(s, e) in set {
        if e <= at || s >= b {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// Adds `[a, b)` to the sorted, disjoint `set`, merging overlaps.
fn insert_interval(set: &mut Vec<(u64, u64)>, (mut a, mut b): (u64, u64)) {
    let mut out = Vec::with_capacity(set.len() + 1);
    for &(s, e) in set.iter() {
        if e < a || s > b {
            out.push((s, e));
        } else {
            a = a.min(s);
            b = b.max(e);
        }
    }
    out.push((a, b));
    out.sort_unstable();
    *set = out;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_arithmetic() {
        let mut set = Vec::new();
        insert_interval(&mut set, (10, 20));
        insert_interval(&mut set, (30, 40));
        assert_eq!(subtract((0, 50), &set), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(subtract((12, 18), &set), vec![]);
        assert_eq!(subtract((15, 35), &set), vec![(20, 30)]);
        insert_interval(&mut set, (20, 30));
        assert_eq!(set, vec![(10, 40)]);
        assert_eq!(subtract((5, 45), &set), vec![(5, 10), (40, 45)]);
    }

    #[test]
    fn image_keeps_only_synced_writes() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        fs::create_dir(&live).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(live.join("a.seg"))
            .unwrap();
        f.set_len(4096).unwrap();
        let plan = FaultPlan::new();
        plan.track_durable();
        let mut io = FaultIo {
            inner: Box::new(super::super::posix::PosixIo),
            plan: plan.clone(),
        };
        let s = Storage::File(f);
        io.run(&[
            Op::Write {
                target: &s,
                offset: 0,
                buf: &[1; 100],
            },
            Op::Sync { target: &s },
        ])
        .unwrap();
        io.run(&[Op::Write {
            target: &s,
            offset: 100,
            buf: &[2; 1500],
        }])
        .unwrap();
        // Written back but never followed by a device flush: not durable.
        io.run(&[Op::SyncRange { target: &s }]).unwrap();
        io.run(&[Op::Write {
            target: &s,
            offset: 50,
            buf: &[3; 100],
        }])
        .unwrap();
        plan.power_off();
        assert!(io
            .run(&[Op::Write {
                target: &s,
                offset: 0,
                buf: &[9; 10],
            }])
            .is_err());
        let out = t.path().join("img");
        let rep = plan
            .durable_image(&live, &out, ImagePolicy::DurableOnly, 1)
            .unwrap();
        assert_eq!(rep.volatile_writes, 2);
        let img = fs::read(out.join("a.seg")).unwrap();
        assert_eq!(&img[..100], &[1; 100][..]);
        assert!(img[100..].iter().all(|&b| b == 0));
        // Random images: every byte is one of the values a write put there
        // or the durable one, and torn writes keep whole sectors.
        for seed in 0..64 {
            let out = t.path().join(format!("img{seed}"));
            plan.durable_image(&live, &out, ImagePolicy::Random, seed)
                .unwrap();
            let img = fs::read(out.join("a.seg")).unwrap();
            assert!(img[..50].iter().all(|&b| b == 1));
            assert!(img[50..100].iter().all(|&b| b == 1 || b == 3));
            assert!(img[100..150].iter().all(|&b| b == 0 || b == 2 || b == 3));
            assert!(img[150..1600].iter().all(|&b| b == 0 || b == 2));
        }
    }
}
