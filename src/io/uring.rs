//! The io_uring backend. One ring per shard core, created on the core thread
//! with `SINGLE_ISSUER | DEFER_TASKRUN` (or SQPOLL when asked for). A chain of
//! operations is one submission of linked SQEs (`IOSQE_IO_LINK`), so an
//! fdatasync starts only after every write ahead of it completed.

use std::io;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::IoBackend;
use super::{Io, Op};

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
    /// A wait failed with a chain submitted: the ring takes no more work
    /// (SQEs the kernel never took stay queued, and must never be
    /// submitted).
    stopped: bool,
    /// Operations of that chain may still be running (their completions
    /// could not be reaped): the caller must never free its buffers.
    unreaped: bool,
    /// Test hook: the next wait fails with this errno after submitting.
    #[cfg(test)]
    fail_next_wait: Option<i32>,
}

/// `io_uring_enter` flag: wait for completions.
const IORING_ENTER_GETEVENTS: u32 = 1;

fn stopped() -> io::Error {
    io::Error::other("io_uring backend stopped after a failed submission")
}

/// How long a failed chain's in-flight operations are waited for before
/// their buffers are declared unreaped.
const REAP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

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
        Ok(UringIo {
            ring,
            stopped: false,
            unreaped: false,
            #[cfg(test)]
            fail_next_wait: None,
        })
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
        if self.stopped {
            return Err(stopped());
        }
        // Everything that can fail is checked before the first SQE is
        // queued: a queued SQE left behind would be submitted by the next
        // enter, naming a buffer we no longer own.
        let mut fds = [0i32; RING_ENTRIES as usize];
        for (i, op) in ops.iter().enumerate() {
            fds[i] = match *op {
                Op::Write { target, .. }
                | Op::WriteDsync { target, .. }
                | Op::Sync { target }
                | Op::SyncRange { target } => file_fd(target)?,
            };
        }
        let mut lens = [0usize; RING_ENTRIES as usize];
        {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < n {
                return Err(io::Error::other("io_uring submission queue full"));
            }
            for (i, op) in ops.iter().enumerate() {
                let first_skip = if i == 0 { skip } else { 0 };
                let fd = types::Fd(fds[i]);
                let entry = match *op {
                    Op::Write { offset, buf, .. } | Op::WriteDsync { offset, buf, .. } => {
                        let buf = &buf[first_skip..];
                        // One SQE writes at most u32::MAX bytes; the caller
                        // keeps chunks far below that, and a short count is
                        // finished by the resubmission loop anyway.
                        let len = buf.len().min(1 << 30);
                        lens[i] = len;
                        let flags = if matches!(op, Op::WriteDsync { .. }) {
                            libc::RWF_DSYNC
                        } else {
                            0
                        };
                        opcode::Write::new(fd, buf.as_ptr(), len as u32)
                            .offset(offset + first_skip as u64)
                            .rw_flags(flags)
                            .build()
                    }
                    Op::Sync { .. } => opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build(),
                    Op::SyncRange { .. } => {
                        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                        opcode::SyncFileRange::new(fd, 0)
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
                // while the kernel may still use one: it waits below for
                // every completion of the chain, also when a wait fails; if
                // even that is impossible, it marks the ring stranded, and
                // the caller (`Io::buffers_in_flight`) keeps the buffers
                // alive for good. Room for all `n` entries was checked
                // above, so this push cannot fail half-way.
                unsafe {
                    sq.push(&entry)
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
        }
        let mut results = [0i32; RING_ENTRIES as usize];
        let mut seen = 0;
        while seen < n {
            match self.wait_for(n - seen) {
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
                Err(e) => {
                    self.reap_after_failure(n, &mut seen, &mut results);
                    return Err(e);
                }
            }
            self.reap(n, &mut seen, &mut results);
        }
        for (i, op) in ops.iter().enumerate() {
            let r = results[i];
            if r < 0 {
                let err = io::Error::from_raw_os_error(-r);
                return match (op, -r) {
                    (Op::Write { .. } | Op::WriteDsync { .. }, libc::EINTR | libc::EAGAIN) => {
                        Ok(Err((i, if i == 0 { skip } else { 0 })))
                    }
                    _ => Err(err),
                };
            }
            if let Op::Write { buf, .. } | Op::WriteDsync { buf, .. } = op {
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

    /// Submits what is queued and waits for `want` completions.
    fn wait_for(&mut self, want: usize) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(errno) = self.fail_next_wait.take() {
            self.ring.submit()?;
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.ring.submit_and_wait(want)
    }

    /// Takes the chain's completions from the queue.
    fn reap(&mut self, n: usize, seen: &mut usize, results: &mut [i32]) {
        for cqe in self.ring.completion() {
            let i = cqe.user_data() as usize;
            if i < n {
                results[i] = cqe.result();
                *seen += 1;
            }
        }
    }

    /// A wait failed with a chain submitted: waits, submitting nothing new,
    /// until every SQE the kernel took has completed. SQEs it never took are
    /// never submitted: the ring takes no more work. If the in-flight ones
    /// cannot be reaped within `REAP_PATIENCE`, they are left `unreaped`.
    fn reap_after_failure(&mut self, n: usize, seen: &mut usize, results: &mut [i32]) {
        // From here on nothing queued may reach the kernel.
        self.stopped = true;
        self.unreaped = true;
        let deadline = std::time::Instant::now() + REAP_PATIENCE;
        loop {
            let unconsumed = {
                let mut sq = self.ring.submission();
                sq.sync();
                sq.len()
            };
            let in_flight = n.saturating_sub(unconsumed + *seen);
            // With SQPOLL the kernel thread may still take queued entries:
            // those must complete too.
            let polled = self.ring.params().is_setup_sqpoll();
            if in_flight == 0 && (unconsumed == 0 || !polled) {
                self.unreaped = false;
                return;
            }
            if std::time::Instant::now() >= deadline {
                return;
            }
            // SAFETY: to_submit = 0 submits nothing; GETEVENTS only waits
            // for and posts completions. No argument is passed.
            let waited = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    0,
                    in_flight.max(1) as u32,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            };
            if waited.is_err() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.reap(n, seen, results);
        }
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
        if self.stopped {
            return Err(stopped());
        }
        super::posix::PosixIo.run(ops)
    }

    fn buffers_in_flight(&self) -> bool {
        self.unreaped
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Storage;
    use std::os::unix::fs::FileExt;

    /// A wait that fails with the chain submitted must not return while the
    /// kernel can still read the chain's buffers: every completion is reaped
    /// first, so none is left to arrive later, and reusing the buffer right
    /// after the error cannot change what reaches the file.
    #[test]
    fn a_failed_wait_reaps_the_chain_before_returning() {
        let mut io = match UringIo::new(None) {
            Ok(io) => io,
            Err(e) => {
                eprintln!("io_uring unavailable here ({e}); nothing to test");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        let target = Storage::File(file);
        let mut buf = vec![7u8; 4 << 20];
        io.fail_next_wait = Some(libc::EFAULT);
        let r = io.run(&[
            Op::Write {
                target: &target,
                offset: 0,
                buf: &buf,
            },
            Op::Sync { target: &target },
        ]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EFAULT));
        assert!(!io.buffers_in_flight(), "every completion was reaped");
        // Nothing of the chain may complete after the return.
        buf.fill(0);
        // SAFETY: submits nothing, only waits briefly for completions.
        let _ = unsafe {
            io.ring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(io.ring.completion().len(), 0, "a completion arrived late");
        let Storage::File(f) = &target else {
            unreachable!()
        };
        let mut back = vec![0u8; 4 << 20];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back.iter().all(|&b| b == 7), "the file got reused bytes");
        // The ring takes no more work after such a failure.
        assert!(io
            .run(&[Op::Sync { target: &target }])
            .is_err_and(|e| e.to_string().contains("stopped")));
    }
}
