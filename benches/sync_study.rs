//! fsync-coalescing study: a standalone model of emdb's durable write path.
//!
//! # What it measures
//!
//! One "core" thread owns a log file. `T` writer threads each loop: build a
//! 210-byte record (24 B key + 150 B value + 36 B header, random bytes),
//! append it under a mutex to a shared in-memory tail buffer, then park until
//! the core says that record is durable (one `unpark` per record, as the
//! engine does). The core loop is group commit: take everything appended since
//! the last round, write it at the file's tail, make it durable with the
//! strategy under test, then publish the new durable sequence number and wake
//! every writer of that round. Records that arrive while a round is in flight
//! go into the next round. A writer is woken only after the round that covers
//! its record has finished its write AND its durability step (fdatasync,
//! RWF_DSYNC, or the linked fdatasync's completion).
//!
//! The model does not use emdb's code: every strategy runs on the same
//! mechanism, so rows differ only in how the bytes reach the disk.
//!
//! Per row (strategy, T) it reports: durable records/s; p50 and p99 latency
//! from a writer's append to its wake-up (every record is sampled); device
//! flush requests completed during the run (field 16 of
//! `/sys/block/<disk>/stat`, see `benches/common/devstat.rs`; it counts the
//! whole disk, so other processes' flushes show up too: the study also prints
//! the idle background flush rate, measured for one run's length before and
//! after the rows) and records per device flush; CPU time per durable record from `getrusage(RUSAGE_SELF)` (user +
//! sys, whole process). A second table breaks CPU time down into the core
//! thread, the writer threads (`RUSAGE_THREAD` each) and the kernel's io_uring
//! threads (`iou-wrk-*`, `iou-sqp-*`, read from `/proc/self/task/*/schedstat`)
//! to check whether `RUSAGE_SELF` includes io-wq work: it does. io-wq workers
//! and the SQPOLL thread are created with `create_io_thread()`, i.e. as
//! threads of our thread group, so their CPU time is part of the process's
//! rusage; in the breakdown table `self - core - writers` matches the `iou-*`
//! column to within a few ms, except for up to ~0.1 s at T = 1000 that is
//! thread exit and `join` of the writers, outside their own `RUSAGE_THREAD`
//! window (see docs/bench/sync-study-2026-12-06.md for measured figures).
//!
//! # How to run
//!
//! ```text
//! cargo bench --bench sync_study
//! EMDB_STUDY_SECS=5 EMDB_STUDY_T=1,16 EMDB_STUDY_ROWS='O_DIRECT;SQPOLL' cargo bench --bench sync_study
//! ```
//!
//! Environment:
//! - `EMDB_STUDY_SECS`: seconds per (strategy, T) run, default 2.
//! - `EMDB_STUDY_T`: comma-separated writer thread counts, default `1,16,64,1000`.
//! - `EMDB_STUDY_ROWS`: run only strategies whose name contains this
//!   (case-insensitive); several alternatives separated by `;`.
//! - `EMDB_STUDY_REPS`: runs per (strategy, T), default 1; with more, the row
//!   with the median records/s is reported.
//! - `EMDB_STUDY_DIR`: directory for the log files (must be on a real disk,
//!   not tmpfs); default `$CARGO_TARGET_DIR/study-data`, else
//!   `<crate>/target/study-data`. Each run uses a fresh file in a temp dir.
//! - `EMDB_STUDY_FILE_MIB`: log file size; default 128 MiB per second of run
//!   (at least 64 MiB). Should a run fill it, the core wraps to offset 0 and
//!   the wrap is reported.
//! - `EMDB_STUDY_OUT`: also write the tables to this file.
//!
//! # Strategies
//!
//! Ring flags are given in brackets: `SI+DT+COOP` is
//! `SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN`, as the engine uses. Every ring
//! row reaps both CQEs with `submit_and_wait`.
//!
//! 1. `pwrite + fdatasync`: plain syscalls on the core thread, buffered I/O.
//! 2. `ring: write -> linked fdatasync`: one `IORING_OP_WRITE` linked
//!    (`IOSQE_IO_LINK`) to `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`.
//! 3. `ring write + fdatasync syscall`: the write on the ring, wait for its
//!    CQE, then the `fdatasync` syscall on the core thread.
//! 4. `pwritev2 RWF_DSYNC`: one buffered syscall that writes and syncs.
//! 5. `O_DIRECT + fdatasync`: `pwrite` of whole 4 KiB blocks from the aligned
//!    tail buffer (the partial last block is rewritten each round), then
//!    `fdatasync` (a device cache flush; no metadata since the file is
//!    pre-zeroed).
//! 6. `O_DIRECT + RWF_DSYNC`: as 5 with one `pwritev2(RWF_DSYNC)` (FUA write
//!    or write + flush, as the block layer decides).
//! 7. `ring: O_DIRECT write -> linked fdatasync`: as 2 on an O_DIRECT file.
//! 8. `ring + registered file + fixed buffer`: `WriteFixed` on a registered
//!    file (`types::Fixed`) from registered buffers (both tail buffers are
//!    registered), linked to fdatasync; one buffered row (8a) and one O_DIRECT
//!    row (8b).
//! 9. `ring, io-wq max workers N` (N = 1, 2): as 2 after
//!    `IORING_REGISTER_IOWQ_MAX_WORKERS` with `[N, 0]` (bounded workers = N,
//!    unbounded unchanged).
//! 10. `ring DT+SI on (no COOP)` vs `ring flags off`: as 2 with
//!     `SINGLE_ISSUER|DEFER_TASKRUN` only, and with no setup flags at all.
//!     Row 2 is the engine's set (`SI+DT+COOP`).
//! 11. `ring SQPOLL idle 100 ms`: as 2 on a ring set up with `SQPOLL` (no
//!     other flags: `DEFER_TASKRUN` is not allowed with `SQPOLL`).
//!
//! Buffered rows use a file pre-sized with `fallocate` (and fsynced) before the
//! run, as a log segment would be. O_DIRECT rows use a file pre-zeroed with
//! O_DIRECT writes and fdatasynced before the run, so the run changes no
//! metadata. If the kernel refuses a ring flag or registration, the row shows
//! the error instead of figures.

#[path = "common/devstat.rs"]
mod devstat;

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

const RECORD: usize = 210;
const KEY: usize = 24;
const VALUE: usize = 150;
const HEADER: usize = RECORD - KEY - VALUE;
// The header holds length fields and a sequence number (16 bytes) + 20 bytes of filler.
const _: () = assert!(HEADER == 36);
const BLOCK: usize = 4096;
const WRITER_STACK: usize = 64 * 1024;
const UD_WRITE: u64 = 1;
const UD_SYNC: u64 = 2;

// ---------------------------------------------------------------------------
// Strategies

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN (the engine's flags).
    Engine,
    /// SINGLE_ISSUER | DEFER_TASKRUN.
    SiDt,
    /// No setup flags.
    Plain,
    /// SQPOLL with a 100 ms idle time.
    Sqpoll,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Plain syscalls: write (pwrite or pwritev2 RWF_DSYNC) then, unless
    /// `dsync`, fdatasync.
    Sys { dsync: bool },
    /// io_uring write; `link`: linked fdatasync on the ring, else the
    /// fdatasync syscall after the write's CQE.
    Ring {
        setup: Setup,
        link: bool,
        fixed: bool,
        iowq_max: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug)]
struct Strategy {
    name: &'static str,
    direct: bool,
    kind: Kind,
}

const fn ring(setup: Setup, link: bool, fixed: bool, iowq_max: Option<u32>) -> Kind {
    Kind::Ring {
        setup,
        link,
        fixed,
        iowq_max,
    }
}

const STRATEGIES: &[Strategy] = &[
    Strategy {
        name: "1 pwrite + fdatasync",
        direct: false,
        kind: Kind::Sys { dsync: false },
    },
    Strategy {
        name: "2 ring: write -> linked fdatasync [SI+DT+COOP]",
        direct: false,
        kind: ring(Setup::Engine, true, false, None),
    },
    Strategy {
        name: "3 ring write + fdatasync syscall [SI+DT+COOP]",
        direct: false,
        kind: ring(Setup::Engine, false, false, None),
    },
    Strategy {
        name: "4 pwritev2 RWF_DSYNC",
        direct: false,
        kind: Kind::Sys { dsync: true },
    },
    Strategy {
        name: "5 O_DIRECT + fdatasync",
        direct: true,
        kind: Kind::Sys { dsync: false },
    },
    Strategy {
        name: "6 O_DIRECT + RWF_DSYNC",
        direct: true,
        kind: Kind::Sys { dsync: true },
    },
    Strategy {
        name: "7 ring: O_DIRECT write -> linked fdatasync [SI+DT+COOP]",
        direct: true,
        kind: ring(Setup::Engine, true, false, None),
    },
    Strategy {
        name: "8a ring + reg file + fixed buf: write -> linked fdatasync [SI+DT+COOP]",
        direct: false,
        kind: ring(Setup::Engine, true, true, None),
    },
    Strategy {
        name: "8b ring + reg file + fixed buf: O_DIRECT write -> linked fdatasync [SI+DT+COOP]",
        direct: true,
        kind: ring(Setup::Engine, true, true, None),
    },
    Strategy {
        name: "9a ring, io-wq max workers 1: write -> linked fdatasync [SI+DT+COOP]",
        direct: false,
        kind: ring(Setup::Engine, true, false, Some(1)),
    },
    Strategy {
        name: "9b ring, io-wq max workers 2: write -> linked fdatasync [SI+DT+COOP]",
        direct: false,
        kind: ring(Setup::Engine, true, false, Some(2)),
    },
    Strategy {
        name: "10a ring DT+SI on (no COOP): write -> linked fdatasync",
        direct: false,
        kind: ring(Setup::SiDt, true, false, None),
    },
    Strategy {
        name: "10b ring flags off (no SI/DT/COOP): write -> linked fdatasync",
        direct: false,
        kind: ring(Setup::Plain, true, false, None),
    },
    Strategy {
        name: "11 ring SQPOLL idle 100 ms: write -> linked fdatasync",
        direct: false,
        kind: ring(Setup::Sqpoll, true, false, None),
    },
];

// ---------------------------------------------------------------------------
// Aligned tail buffer (safe: an over-allocated Vec, used from its first
// 4096-aligned byte; it is never pushed to, so its heap block never moves)

struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    cap: usize,
    /// Index of this buffer in the ring's registered buffer table.
    index: u16,
}

impl AlignedBuf {
    fn new(cap: usize, index: u16) -> Self {
        let cap = cap.div_ceil(BLOCK) * BLOCK;
        let raw = vec![0u8; cap + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        assert!(start < BLOCK, "cannot align the tail buffer");
        AlignedBuf {
            raw,
            start,
            cap,
            index,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.cap]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.cap]
    }
    fn iovec(&mut self) -> libc::iovec {
        let b = self.bytes_mut();
        libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state between writers and the core

struct Tail {
    buf: AlignedBuf,
    /// Bytes used in `buf` (the carried partial block for O_DIRECT + records).
    len: usize,
    /// Sequence number of the last appended record (records count from 1).
    last_seq: u64,
    /// Writers whose records are in `buf`, one entry per record.
    waiters: Vec<Thread>,
    /// The core waits on `core_cv` for records.
    core_idle: bool,
    /// Set by main once every writer has exited: the core drains and stops.
    done: bool,
}

struct Shared {
    tail: Mutex<Tail>,
    core_cv: Condvar,
    /// Every record with a sequence number <= this is durable.
    durable: AtomicU64,
    /// Writers stop appending.
    stop: AtomicBool,
    /// The core hit an error: writers give up waiting.
    failed: AtomicBool,
}

struct WriterOut {
    lat_ns: Vec<u64>,
    cpu: Duration,
}

fn writer(shared: &Shared, barrier: &Barrier, seed: u64) -> WriterOut {
    let mut rng = fastrand::Rng::with_seed(seed);
    let me = thread::current();
    let mut lat_ns = Vec::with_capacity(1024);
    let mut rec = [0u8; RECORD];
    barrier.wait();
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    'run: while !shared.stop.load(Ordering::Relaxed) {
        // Header: u32 record length, u16 key length, u16 value length,
        // u64 sequence number (filled in under the lock), 20 random bytes
        // (stand-in for checksum / timestamp); then key and value.
        rng.fill(&mut rec[8..]);
        rec[0..4].copy_from_slice(&(RECORD as u32).to_le_bytes());
        rec[4..6].copy_from_slice(&(KEY as u16).to_le_bytes());
        rec[6..8].copy_from_slice(&(VALUE as u16).to_le_bytes());
        let t0 = Instant::now();
        let (seq, wake_core) = {
            let mut t = shared.tail.lock().unwrap();
            let at = t.len;
            t.last_seq += 1;
            let seq = t.last_seq;
            let dst = &mut t.buf.bytes_mut()[at..at + RECORD];
            dst.copy_from_slice(&rec);
            dst[8..16].copy_from_slice(&seq.to_le_bytes());
            t.len += RECORD;
            t.waiters.push(me.clone());
            (seq, std::mem::take(&mut t.core_idle))
        };
        if wake_core {
            shared.core_cv.notify_one();
        }
        while shared.durable.load(Ordering::Acquire) < seq {
            if shared.failed.load(Ordering::Acquire) {
                break 'run;
            }
            thread::park();
        }
        lat_ns.push(t0.elapsed().as_nanos() as u64);
    }
    WriterOut {
        lat_ns,
        cpu: cpu_time(libc::RUSAGE_THREAD).saturating_sub(cpu0),
    }
}

// ---------------------------------------------------------------------------
// Durability step

#[derive(Default)]
struct IoStats {
    short_writes: u64,
}

enum Persist {
    Sys {
        file: File,
        dsync: bool,
    },
    Ring {
        ring: Box<IoUring>,
        /// For the fdatasync syscall (row 3) and for plain-fd SQEs.
        file: File,
        fixed: bool,
        link: bool,
    },
}

fn build_ring(setup: Setup) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    match setup {
        Setup::Engine => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        }
        Setup::SiDt => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
        Setup::Plain => {}
        Setup::Sqpoll => {
            b.setup_sqpoll(100);
        }
    }
    b.build(8)
}

impl Persist {
    /// Runs on the core thread (SINGLE_ISSUER: the ring is created, registered
    /// and used by this thread only). `bufs` are the two tail buffers, which
    /// outlive the returned value.
    fn new(s: &Strategy, file: File, bufs: [libc::iovec; 2]) -> Result<Self, String> {
        match s.kind {
            Kind::Sys { dsync } => Ok(Persist::Sys { file, dsync }),
            Kind::Ring {
                setup,
                link,
                fixed,
                iowq_max,
            } => {
                let ring = build_ring(setup).map_err(|e| format!("ring setup {setup:?}: {e}"))?;
                if let Some(n) = iowq_max {
                    let mut max = [n, 0];
                    ring.submitter()
                        .register_iowq_max_workers(&mut max)
                        .map_err(|e| format!("register_iowq_max_workers({n}): {e}"))?;
                }
                if fixed {
                    ring.submitter()
                        .register_files(&[file.as_raw_fd()])
                        .map_err(|e| format!("register_files: {e}"))?;
                    // SAFETY: the two iovecs describe the two tail buffers,
                    // which live (without moving: their Vec is never resized)
                    // until after this ring is dropped: the core thread drops
                    // its `Persist` before its spare buffer, and the other
                    // buffer is owned by `Shared`, which main keeps until the
                    // core thread has been joined.
                    unsafe { ring.submitter().register_buffers(&bufs) }
                        .map_err(|e| format!("register_buffers: {e}"))?;
                }
                Ok(Persist::Ring {
                    ring: Box::new(ring),
                    file,
                    fixed,
                    link,
                })
            }
        }
    }

    /// Writes `buf[..len]` at `off` and makes it durable. Returns only when
    /// both are complete (or with an error).
    fn persist(
        &mut self,
        buf: &AlignedBuf,
        len: usize,
        off: u64,
        direct: bool,
        st: &mut IoStats,
    ) -> Result<(), String> {
        let data = &buf.bytes()[..len];
        match self {
            Persist::Sys { file, dsync: false } => {
                write_all_at(file, data, off, direct, st)?;
                file.sync_data().map_err(|e| format!("fdatasync: {e}"))
            }
            Persist::Sys { file, dsync: true } => {
                let mut done = 0;
                while done < len {
                    match pwritev2_dsync(file.as_raw_fd(), &data[done..], off + done as u64) {
                        Ok(0) => return Err("pwritev2: wrote 0 bytes".into()),
                        Ok(n) => {
                            if n < len - done {
                                st.short_writes += 1;
                            }
                            done += n;
                            check_aligned(direct, done, len)?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("pwritev2(RWF_DSYNC): {e}")),
                    }
                }
                Ok(())
            }
            Persist::Ring {
                ring,
                file,
                fixed,
                link,
            } => {
                let fd = file.as_raw_fd();
                let mut done = 0;
                while done < len {
                    let (w, f) = ring_write(ring, fd, *fixed, *link, buf, done, len, off)?;
                    if w < 0 {
                        return Err(format!("ring write: {}", io::Error::from_raw_os_error(-w)));
                    }
                    let n = w as usize;
                    if n == 0 || n > len - done {
                        return Err(format!("ring write: returned {n} of {}", len - done));
                    }
                    if n < len - done {
                        st.short_writes += 1;
                    }
                    done += n;
                    check_aligned(direct, done, len)?;
                    if let Some(f) = f {
                        // A short write breaks the link: the fdatasync is
                        // cancelled and runs again after the remainder.
                        if f == -libc::ECANCELED && done < len {
                            continue;
                        }
                        if f < 0 {
                            return Err(format!(
                                "ring fdatasync: {}",
                                io::Error::from_raw_os_error(-f)
                            ));
                        }
                    }
                }
                if !*link {
                    file.sync_data()
                        .map_err(|e| format!("fdatasync syscall: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

fn check_aligned(direct: bool, done: usize, len: usize) -> Result<(), String> {
    if direct && done < len && done % BLOCK != 0 {
        return Err(format!(
            "O_DIRECT short write left an unaligned remainder at {done} of {len}"
        ));
    }
    Ok(())
}

fn write_all_at(
    file: &File,
    data: &[u8],
    off: u64,
    direct: bool,
    st: &mut IoStats,
) -> Result<(), String> {
    let mut done = 0;
    while done < data.len() {
        match file.write_at(&data[done..], off + done as u64) {
            Ok(0) => return Err("pwrite: wrote 0 bytes".into()),
            Ok(n) => {
                if n < data.len() - done {
                    st.short_writes += 1;
                }
                done += n;
                check_aligned(direct, done, data.len())?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("pwrite: {e}")),
        }
    }
    Ok(())
}

fn pwritev2_dsync(fd: RawFd, data: &[u8], off: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `iov` points into `data`, borrowed for the whole call; the
    // kernel only reads it during this synchronous syscall.
    let n = unsafe { libc::pwritev2(fd, &iov, 1, off as libc::off_t, libc::RWF_DSYNC) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Submits one write of `buf[done..len]` at `off + done` (linked to an
/// fdatasync when `link`) and waits for every CQE it submitted. Returns the
/// write's result and the fdatasync's.
#[allow(clippy::too_many_arguments)]
fn ring_write(
    ring: &mut IoUring,
    fd: RawFd,
    fixed: bool,
    link: bool,
    buf: &AlignedBuf,
    done: usize,
    len: usize,
    off: u64,
) -> Result<(i32, Option<i32>), String> {
    let ptr = buf.bytes()[done..len].as_ptr();
    let n = u32::try_from(len - done).map_err(|_| "write too large".to_string())?;
    let at = off + done as u64;
    let write = if fixed {
        opcode::WriteFixed::new(types::Fixed(0), ptr, n, buf.index)
            .offset(at)
            .build()
    } else {
        opcode::Write::new(types::Fd(fd), ptr, n).offset(at).build()
    }
    .user_data(UD_WRITE);
    let mut entries = vec![];
    if link {
        let sync = if fixed {
            opcode::Fsync::new(types::Fixed(0))
        } else {
            opcode::Fsync::new(types::Fd(fd))
        }
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(UD_SYNC);
        entries.push(write.flags(squeue::Flags::IO_LINK));
        entries.push(sync);
    } else {
        entries.push(write);
    }
    // SAFETY: the write SQE points into `buf`, which the caller borrows for
    // this whole function, and this function does not return before it has
    // reaped the CQE of every SQE it pushed (the loop below; a failing
    // io_uring_enter other than EINTR/EAGAIN/EBUSY aborts the process rather
    // than return while the kernel may still read the buffer). With fixed
    // buffers, `buf` is one of the two registered buffers (`buf.index`).
    unsafe { ring.submission().push_multiple(&entries) }
        .map_err(|_| "submission queue full".to_string())?;
    let mut w = None;
    let mut f = None;
    let mut want = entries.len();
    while want > 0 {
        match ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                eprintln!("io_uring_enter failed with SQEs in flight: {e}; aborting");
                std::process::abort();
            }
        }
        for cqe in ring.completion() {
            match cqe.user_data() {
                UD_WRITE => w = Some(cqe.result()),
                UD_SYNC => f = Some(cqe.result()),
                other => {
                    eprintln!("unexpected CQE user_data {other}; aborting");
                    std::process::abort();
                }
            }
            want -= 1;
        }
    }
    Ok((w.expect("write CQE"), f))
}

// ---------------------------------------------------------------------------
// Core thread

#[derive(Default)]
struct CoreOut {
    rounds: u64,
    wraps: u64,
    short_writes: u64,
    bytes_written: u64,
    cpu: Duration,
    error: Option<String>,
}

struct CoreArgs {
    strategy: Strategy,
    file: File,
    file_size: u64,
    spare: AlignedBuf,
}

fn core(
    shared: &Shared,
    barrier: &Barrier,
    args: CoreArgs,
    ready: mpsc::Sender<Result<u32, String>>,
) -> CoreOut {
    let CoreArgs {
        strategy,
        file,
        file_size,
        mut spare,
    } = args;
    let direct = strategy.direct;
    let tid = thread_id();
    let bufs = [shared.tail.lock().unwrap().buf.iovec(), spare.iovec()];
    let mut persist = match Persist::new(&strategy, file, bufs) {
        Ok(p) => {
            ready.send(Ok(tid)).unwrap();
            p
        }
        Err(e) => {
            ready.send(Err(e)).unwrap();
            return CoreOut::default();
        }
    };
    let mut out = CoreOut::default();
    let mut st = IoStats::default();
    barrier.wait();
    let cpu0 = cpu_time(libc::RUSAGE_THREAD);
    // File offset of the first byte of the tail buffer, and the bytes of the
    // partial last block carried over at its start (O_DIRECT only).
    let mut base: u64 = 0;
    let mut carry = 0usize;
    let mut waiters: Vec<Thread> = Vec::new();
    loop {
        let (round_len, next_carry, last_seq) = {
            let mut t = shared.tail.lock().unwrap();
            while t.len == carry && !t.done {
                t.core_idle = true;
                t = shared.core_cv.wait(t).unwrap();
            }
            t.core_idle = false;
            if t.len == carry {
                break; // done, nothing pending
            }
            let len = t.len;
            std::mem::swap(&mut t.buf, &mut spare);
            std::mem::swap(&mut t.waiters, &mut waiters);
            let next_carry = if direct { len % BLOCK } else { 0 };
            t.buf.bytes_mut()[..next_carry].copy_from_slice(&spare.bytes()[len - next_carry..len]);
            t.len = next_carry;
            (len, next_carry, t.last_seq)
        };
        if out.error.is_none() {
            let write_len = if direct {
                round_len.div_ceil(BLOCK) * BLOCK
            } else {
                round_len
            };
            spare.bytes_mut()[round_len..write_len].fill(0);
            if base + write_len as u64 > file_size {
                base = 0;
                out.wraps += 1;
            }
            match persist.persist(&spare, write_len, base, direct, &mut st) {
                Ok(()) => {
                    out.rounds += 1;
                    out.bytes_written += write_len as u64;
                    shared.durable.store(last_seq, Ordering::Release);
                }
                Err(e) => {
                    out.error = Some(e);
                    shared.stop.store(true, Ordering::Relaxed);
                    shared.failed.store(true, Ordering::Release);
                }
            }
        }
        for w in waiters.drain(..) {
            w.unpark();
        }
        base += (round_len - next_carry) as u64;
        carry = next_carry;
    }
    out.cpu = cpu_time(libc::RUSAGE_THREAD).saturating_sub(cpu0);
    out.short_writes = st.short_writes;
    // The ring (and its buffer registration) goes before the spare buffer.
    drop(persist);
    drop(spare);
    out
}

// ---------------------------------------------------------------------------
// Measurement helpers

fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: `rusage` is plain integers, so all-zero is a valid value;
    // getrusage only writes into the struct we pass, valid for the call.
    let (rc, ru) = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        let rc = libc::getrusage(who, &mut ru);
        (rc, ru)
    };
    assert_eq!(rc, 0, "getrusage: {}", io::Error::last_os_error());
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// This thread's kernel id, from `/proc/thread-self` -> `<pid>/task/<tid>`.
fn thread_id() -> u32 {
    fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (ns, `schedstat` field 1) of every live `iou-*` thread of this
/// process (io-wq workers `iou-wrk-<tid>`, SQPOLL threads `iou-sqp-<tid>`).
fn iou_threads() -> Vec<(u32, String, u64)> {
    let mut v = vec![];
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return v;
    };
    for e in dir.flatten() {
        let p = e.path();
        let Ok(comm) = fs::read_to_string(p.join("comm")) else {
            continue;
        };
        let comm = comm.trim().to_string();
        if !comm.starts_with("iou-") {
            continue;
        }
        let ns = fs::read_to_string(p.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let tid = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        v.push((tid, comm, ns));
    }
    v
}

/// CPU time of `iou-*` threads between two snapshots (new threads count from 0).
fn iou_delta(before: &[(u32, String, u64)], after: &[(u32, String, u64)]) -> (Duration, usize) {
    let mut ns = 0;
    for (tid, _, t) in after {
        let t0 = before
            .iter()
            .find(|(b, _, _)| b == tid)
            .map_or(0, |(_, _, t)| *t);
        ns += t.saturating_sub(t0);
    }
    (Duration::from_nanos(ns), after.len())
}

/// Device flushes per second while the study does nothing, over one run's
/// length: what other processes contribute to the flush column.
fn background_flushes(cfg: &Config) -> Option<f64> {
    let t0 = Instant::now();
    let a = cfg.flushes.read()?;
    thread::sleep(cfg.secs);
    let b = cfg.flushes.read()?;
    Some(b.saturating_sub(a) as f64 / t0.elapsed().as_secs_f64())
}

struct Flushes(Option<PathBuf>);

impl Flushes {
    fn read(&self) -> Option<u64> {
        devstat::read_flushes(self.0.as_ref()?)
    }
}

// ---------------------------------------------------------------------------
// One run

struct RunResult {
    records: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
    flushes: Option<u64>,
    cpu_self: Duration,
    cpu_core: Duration,
    cpu_writers: Duration,
    cpu_iou: Duration,
    iou_threads: usize,
    rounds: u64,
    wraps: u64,
    short_writes: u64,
    mib_written: f64,
}

impl RunResult {
    fn rps(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

fn open_log(dir: &Path, name: &str, direct: bool, size: u64) -> Result<File, String> {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // The file stays open; its name can go now.
    fs::remove_file(&path).map_err(|e| format!("unlink: {e}"))?;
    if direct {
        // Pre-zero with O_DIRECT writes (nothing left in the page cache), then
        // fdatasync: during the run no block is unwritten and the size is fixed.
        let mut zeros = AlignedBuf::new(1 << 20, 0);
        zeros.bytes_mut().fill(0);
        let mut st = IoStats::default();
        let mut off = 0;
        while off < size {
            let n = (size - off).min(zeros.cap as u64) as usize;
            write_all_at(&file, &zeros.bytes()[..n], off, true, &mut st)?;
            off += n as u64;
        }
        file.sync_data()
            .map_err(|e| format!("pre-zero fdatasync: {e}"))?;
    } else {
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
        if rc != 0 {
            return Err(format!("fallocate: {}", io::Error::last_os_error()));
        }
        file.sync_all().map_err(|e| format!("fsync: {e}"))?;
    }
    Ok(file)
}

fn run(cfg: &Config, s: &Strategy, t: usize, rep: usize) -> Result<RunResult, String> {
    let name = format!("log-{}-{t}-{rep}", s.name.split(' ').next().unwrap_or("x"));
    let file = open_log(&cfg.dir, &name, s.direct, cfg.file_size)?;
    // Carry (< 1 block) + at most one outstanding record per writer.
    let cap = BLOCK + t * RECORD + BLOCK;
    let shared = Arc::new(Shared {
        tail: Mutex::new(Tail {
            buf: AlignedBuf::new(cap, 0),
            len: 0,
            last_seq: 0,
            waiters: Vec::with_capacity(t),
            core_idle: false,
            done: false,
        }),
        core_cv: Condvar::new(),
        durable: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failed: AtomicBool::new(false),
    });
    let barrier = Arc::new(Barrier::new(t + 2));
    let (ready_tx, ready_rx) = mpsc::channel();
    let args = CoreArgs {
        strategy: *s,
        file,
        file_size: cfg.file_size,
        spare: AlignedBuf::new(cap, 1),
    };
    let core_handle = {
        let shared = shared.clone();
        let barrier = barrier.clone();
        thread::Builder::new()
            .name("study-core".into())
            .spawn(move || core(&shared, &barrier, args, ready_tx))
            .map_err(|e| format!("spawn core: {e}"))?
    };
    match ready_rx.recv() {
        Ok(Ok(_tid)) => {}
        Ok(Err(e)) => {
            core_handle.join().unwrap();
            return Err(e);
        }
        Err(_) => return Err("core thread died during setup".into()),
    }
    let mut writers = Vec::with_capacity(t);
    for i in 0..t {
        let shared = shared.clone();
        let barrier = barrier.clone();
        let seed = fastrand::u64(..) ^ i as u64;
        let h = thread::Builder::new()
            .stack_size(WRITER_STACK)
            .spawn(move || writer(&shared, &barrier, seed))
            .map_err(|e| format!("spawn writer {i}: {e}"))?;
        writers.push(h);
    }
    barrier.wait();
    let t0 = Instant::now();
    let cpu0 = cpu_time(libc::RUSAGE_SELF);
    let fl0 = cfg.flushes.read();
    let iou0 = iou_threads();
    thread::sleep(cfg.secs);
    shared.stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<u64> = Vec::new();
    let mut cpu_writers = Duration::ZERO;
    for h in writers {
        let out = h.join().map_err(|_| "writer panicked".to_string())?;
        lat.extend_from_slice(&out.lat_ns);
        cpu_writers += out.cpu;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_self = cpu_time(libc::RUSAGE_SELF).saturating_sub(cpu0);
    let fl1 = cfg.flushes.read();
    let iou1 = iou_threads();
    {
        let mut tail = shared.tail.lock().unwrap();
        tail.done = true;
    }
    shared.core_cv.notify_one();
    let core_out = core_handle
        .join()
        .map_err(|_| "core panicked".to_string())?;
    if let Some(e) = core_out.error {
        return Err(e);
    }
    let durable = shared.durable.load(Ordering::Acquire);
    if durable != lat.len() as u64 {
        return Err(format!(
            "model error: {durable} records durable but {} writers woke",
            lat.len()
        ));
    }
    lat.sort_unstable();
    let pct = |p: usize| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[(lat.len() * p / 100).min(lat.len() - 1)] as f64 / 1000.0
    };
    let (cpu_iou, iou_threads) = iou_delta(&iou0, &iou1);
    Ok(RunResult {
        records: lat.len() as u64,
        secs,
        p50_us: pct(50),
        p99_us: pct(99),
        flushes: match (fl0, fl1) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        cpu_self,
        cpu_core: core_out.cpu,
        cpu_writers,
        cpu_iou,
        iou_threads,
        rounds: core_out.rounds,
        wraps: core_out.wraps,
        short_writes: core_out.short_writes,
        mib_written: core_out.bytes_written as f64 / (1 << 20) as f64,
    })
}

// ---------------------------------------------------------------------------
// Config, output

struct Config {
    secs: Duration,
    threads: Vec<usize>,
    rows: Vec<String>,
    reps: usize,
    dir: PathBuf,
    file_size: u64,
    flushes: Flushes,
    out: Option<PathBuf>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// The fs type of the mount holding `dir` (longest matching mount point).
fn fs_type(dir: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (_, mnt, ty) = (f.next()?, f.next()?, f.next()?);
        if dir.starts_with(mnt) && best.as_ref().is_none_or(|(l, _)| mnt.len() > *l) {
            best = Some((mnt.len(), ty.to_string()));
        }
    }
    best.map(|(_, t)| t)
}

fn config() -> Result<(Config, tempfile::TempDir), String> {
    let secs: f64 = env_or("EMDB_STUDY_SECS", 2.0);
    let threads = std::env::var("EMDB_STUDY_T")
        .unwrap_or_else(|_| "1,16,64,1000".into())
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("EMDB_STUDY_T: {e}"))?;
    if threads.contains(&0) {
        return Err("EMDB_STUDY_T: 0 writers".into());
    }
    let rows = std::env::var("EMDB_STUDY_ROWS")
        .unwrap_or_default()
        .split(';')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    let reps: usize = env_or("EMDB_STUDY_REPS", 1usize).max(1);
    let default_mib = ((secs * 128.0).ceil() as u64).max(64);
    let file_size = env_or("EMDB_STUDY_FILE_MIB", default_mib) << 20;
    let base = match std::env::var_os("EMDB_STUDY_DIR") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => PathBuf::from(t).join("study-data"),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/study-data"),
        },
    };
    fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    let base = fs::canonicalize(&base).map_err(|e| e.to_string())?;
    if let Some(ty) = fs_type(&base) {
        if ty == "tmpfs" || ty == "ramfs" {
            return Err(format!(
                "{} is on {ty}: fsync costs nothing there; set EMDB_STUDY_DIR to a real disk",
                base.display()
            ));
        }
    }
    let tmp = tempfile::tempdir_in(&base).map_err(|e| format!("tempdir: {e}"))?;
    let flushes = match devstat::find_dev_stat(tmp.path()) {
        Ok(p) => Flushes(Some(p)),
        Err(e) => {
            eprintln!("no device flush counts: {e}");
            Flushes(None)
        }
    };
    Ok((
        Config {
            secs: Duration::from_secs_f64(secs),
            threads,
            rows,
            reps,
            dir: tmp.path().to_path_buf(),
            file_size,
            flushes,
            out: std::env::var_os("EMDB_STUDY_OUT").map(PathBuf::from),
        },
        tmp,
    ))
}

const HEAD: &str = "| strategy | T | records/s | p50 µs | p99 µs | device flushes | records/flush | CPU µs/record |\n|---|---:|---:|---:|---:|---:|---:|---:|";
const CPU_HEAD: &str = "| strategy | T | rounds | records/round | CPU self ms | core ms | writers ms | iou-* ms (threads) | self − core − writers ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|";

fn row_line(name: &str, t: usize, r: &Result<RunResult, String>) -> String {
    match r {
        Err(e) => format!("| {name} | {t} | error: {e} | | | | | |"),
        Ok(r) => {
            let (fl, per) = match r.flushes {
                Some(f) if f > 0 => (f.to_string(), format!("{:.1}", r.records as f64 / f as f64)),
                Some(f) => (f.to_string(), "-".into()),
                None => ("n/a".into(), "n/a".into()),
            };
            format!(
                "| {name} | {t} | {:.0} | {:.0} | {:.0} | {fl} | {per} | {:.1} |",
                r.rps(),
                r.p50_us,
                r.p99_us,
                r.cpu_self.as_secs_f64() * 1e6 / r.records.max(1) as f64,
            )
        }
    }
}

fn cpu_line(name: &str, t: usize, r: &RunResult) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rest = r.cpu_self.as_secs_f64() - r.cpu_core.as_secs_f64() - r.cpu_writers.as_secs_f64();
    format!(
        "| {name} | {t} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} ({}) | {:.0} |",
        r.rounds,
        r.records as f64 / r.rounds.max(1) as f64,
        ms(r.cpu_self),
        ms(r.cpu_core),
        ms(r.cpu_writers),
        ms(r.cpu_iou),
        r.iou_threads,
        rest * 1e3,
    )
}

fn main() {
    let (cfg, _tmp) = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sync_study: {e}");
            std::process::exit(2);
        }
    };
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dev = cfg
        .flushes
        .0
        .as_ref()
        .map_or("n/a".into(), |p| p.display().to_string());
    let info = format!(
        "sync_study: {} s per run, T = {:?}, reps = {}, kernel {}, dir {}, device stat {dev}, log file {} MiB, {} CPUs",
        cfg.secs.as_secs_f64(),
        cfg.threads,
        cfg.reps,
        kernel.trim(),
        cfg.dir.display(),
        cfg.file_size >> 20,
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    eprintln!("{info}");
    // Other processes flush the same disk: measure that background rate, idle,
    // for one run's length before the study (and again after it).
    let bg_before = background_flushes(&cfg);
    println!("{HEAD}");
    let mut table = String::new();
    let mut cpu_table = String::new();
    let mut notes = String::new();
    for s in STRATEGIES {
        let lname = s.name.to_lowercase();
        if !cfg.rows.is_empty() && !cfg.rows.iter().any(|f| lname.contains(f)) {
            continue;
        }
        for &t in &cfg.threads {
            let mut results: Vec<Result<RunResult, String>> =
                (0..cfg.reps).map(|rep| run(&cfg, s, t, rep)).collect();
            // Median by records/s (errors sort first).
            results.sort_by(|a, b| {
                let k = |r: &Result<RunResult, String>| r.as_ref().map_or(-1.0, |r| r.rps());
                k(a).total_cmp(&k(b))
            });
            let r = results.swap_remove(results.len() / 2);
            let line = row_line(s.name, t, &r);
            println!("{line}");
            table.push_str(&line);
            table.push('\n');
            if let Ok(r) = &r {
                let _ = writeln!(cpu_table, "{}", cpu_line(s.name, t, r));
                if r.wraps > 0 || r.short_writes > 0 {
                    let _ = writeln!(
                        notes,
                        "- {} T={t}: {} wraps of the log file, {} short writes (retried)",
                        s.name, r.wraps, r.short_writes
                    );
                }
                eprintln!(
                    "  {} T={t}: {} records in {:.2} s, {} rounds, {:.1} MiB written",
                    s.name, r.records, r.secs, r.rounds, r.mib_written
                );
            }
        }
    }
    let bg_after = background_flushes(&cfg);
    let fmt_bg = |b: Option<f64>| b.map_or("n/a".to_string(), |b| format!("{b:.0}"));
    let bg = format!(
        "Background device flushes/s with the study idle (other processes on the disk): {} before, {} after the study.",
        fmt_bg(bg_before),
        fmt_bg(bg_after)
    );
    println!();
    println!("{bg}");
    println!();
    println!("CPU breakdown (RUSAGE_SELF vs per-thread; iou-* from /proc/self/task/*/schedstat):");
    println!();
    println!("{CPU_HEAD}");
    print!("{cpu_table}");
    if !notes.is_empty() {
        println!();
        print!("{notes}");
    }
    if let Some(out) = &cfg.out {
        let mut doc = String::new();
        let _ = writeln!(doc, "{info}\n\n{HEAD}\n{table}\n{bg}\n");
        let _ = writeln!(doc, "CPU breakdown:\n\n{CPU_HEAD}\n{cpu_table}");
        if !notes.is_empty() {
            let _ = writeln!(doc, "{notes}");
        }
        if let Err(e) = fs::write(out, doc) {
            eprintln!("write {}: {e}", out.display());
        }
    }
}
