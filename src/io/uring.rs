//! The io_uring backend. One ring per shard core, created on the core thread
//! with `SINGLE_ISSUER | DEFER_TASKRUN` (or SQPOLL when asked for). A chain of
//! operations is one submission of linked SQEs (`IOSQE_IO_LINK`), so an
//! fdatasync starts only after every write ahead of it completed.

use std::io;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{Io, Op};
use crate::builder::IoBackend;

const RING_ENTRIES: u32 = 64;
/// Bounded io-wq workers per ring: fsyncs always run there, and more workers
/// than cores only add contention on this machine.
const IOWQ_MAX_WORKERS: u32 = 2;

/// The descriptor of a file target; memory storage never reaches io_uring.
fn file_fd(target: &super::Storage) -> io::Result<i32> {
    target
        .fd()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "memory storage on io_uring"))
}

pub(crate) struct UringIo {
    ring: IoUring,
}

fn build_ring(sqpoll_idle_ms: Option<u32>) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    match sqpoll_idle_ms {
        // DEFER_TASKRUN cannot be combined with SQPOLL.
        Some(idle) => {
            b.setup_sqpoll(idle);
        }
        None => {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        }
    }
    b.build(RING_ENTRIES)
}

/// Sets up a ring exactly as the cores do and checks that the opcodes they
/// use are supported.
pub(crate) fn probe(sqpoll_idle_ms: Option<u32>) -> io::Result<()> {
    let ring = build_ring(sqpoll_idle_ms)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for code in [
        opcode::Write::CODE,
        opcode::Fsync::CODE,
        opcode::SyncFileRange::CODE,
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks write or fsync",
            ));
        }
    }
    Ok(())
}

impl UringIo {
    pub(crate) fn new(sqpoll_idle_ms: Option<u32>) -> io::Result<Self> {
        let ring = build_ring(sqpoll_idle_ms)?;
        // Best effort: older kernels do not know this registration.
        let _ = ring
            .submitter()
            .register_iowq_max_workers(&mut [IOWQ_MAX_WORKERS, IOWQ_MAX_WORKERS]);
        Ok(UringIo { ring })
    }

    /// Submits `ops` as one linked chain; the first write starts `skip`
    /// bytes in. Returns how far the chain got: `Ok(())` when all completed,
    /// or `Err(Progress)` naming the op to resume from.
    fn submit_chain(
        &mut self,
        ops: &[Op<'_>],
        skip: usize,
    ) -> io::Result<Result<(), (usize, usize)>> {
        let n = ops.len();
        debug_assert!(n > 0 && n <= RING_ENTRIES as usize);
        let mut lens = [0usize; RING_ENTRIES as usize];
        {
            let mut sq = self.ring.submission();
            for (i, op) in ops.iter().enumerate() {
                let first_skip = if i == 0 { skip } else { 0 };
                let entry = match *op {
                    Op::Write {
                        target,
                        offset,
                        buf,
                    } => {
                        let fd = file_fd(target)?;
                        let buf = &buf[first_skip..];
                        // One SQE writes at most u32::MAX bytes; the caller
                        // keeps chunks far below that, and a short count is
                        // finished by the resubmission loop anyway.
                        let len = buf.len().min(1 << 30);
                        lens[i] = len;
                        opcode::Write::new(types::Fd(fd), buf.as_ptr(), len as u32)
                            .offset(offset + first_skip as u64)
                            .build()
                    }
                    Op::Sync { target } => {
                        let fd = file_fd(target)?;
                        opcode::Fsync::new(types::Fd(fd))
                            .flags(types::FsyncFlags::DATASYNC)
                            .build()
                    }
                    Op::SyncRange { target } => {
                        let fd = file_fd(target)?;
                        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                        opcode::SyncFileRange::new(types::Fd(fd), 0)
                            .offset(0)
                            .flags(flags)
                            .build()
                    }
                };
                let flags = if i + 1 < n {
                    squeue::Flags::IO_LINK
                } else {
                    squeue::Flags::empty()
                };
                let entry = entry.flags(flags).user_data(i as u64);
                // SAFETY: every buffer named by an SQE is borrowed from `ops`,
                // which outlives this call, and this call does not return
                // until every SQE of the chain has completed (below), so the
                // kernel never touches a buffer after we give it back.
                unsafe {
                    sq.push(&entry)
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
        }
        let mut results = [0i32; RING_ENTRIES as usize];
        let mut seen = 0;
        while seen < n {
            match self.ring.submit_and_wait(n - seen) {
                Ok(_) => {}
                // Interrupted, or the completion queue is momentarily full:
                // wait again. Returning now would leave SQEs in flight that
                // still read our buffers.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                if i < n {
                    results[i] = cqe.result();
                    seen += 1;
                }
            }
        }
        for (i, op) in ops.iter().enumerate() {
            let r = results[i];
            if r < 0 {
                let err = io::Error::from_raw_os_error(-r);
                return match (op, -r) {
                    (Op::Write { .. }, libc::EINTR | libc::EAGAIN) => {
                        Ok(Err((i, if i == 0 { skip } else { 0 })))
                    }
                    _ => Err(err),
                };
            }
            if let Op::Write { buf, .. } = op {
                let done = r as usize;
                let base = if i == 0 { skip } else { 0 };
                if done == 0 && lens[i] > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "io_uring write made no progress",
                    ));
                }
                if base + done < buf.len() {
                    // Short write: the rest of the chain was cancelled.
                    return Ok(Err((i, base + done)));
                }
            }
        }
        Ok(Ok(()))
    }
}

impl Io for UringIo {
    fn kind(&self) -> IoBackend {
        IoBackend::Uring
    }

    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run_linked(ops)
    }

    /// A chain at most one caller waits on runs as plain system calls on
    /// the core thread (`pwrite`, `fdatasync`): a buffered write SQE mostly
    /// completes in an io-wq worker on this kernel, and an fsync SQE always
    /// does, and for a lone waiter those thread hops cost more than the
    /// ring saves (see ARCHITECTURE.md, "io_uring choices").
    fn run_latency_bound(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        super::posix::PosixIo.run(ops)
    }
}

impl UringIo {
    fn run_linked(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        let mut start = 0;
        let mut skip = 0;
        while start < ops.len() {
            let end = (start + RING_ENTRIES as usize).min(ops.len());
            match self.submit_chain(&ops[start..end], skip)? {
                Ok(()) => {
                    start = end;
                    skip = 0;
                }
                Err((i, s)) => {
                    start += i;
                    skip = s;
                }
            }
        }
        Ok(())
    }
}
