//! The narrow I/O interface a shard core drives, and its backends: io_uring,
//! portable (positional writes + `fdatasync`) and memory.
//!
//! A core hands its backend a short chain of operations (writes at the log
//! tail, fdatasyncs) and the backend runs them in order, each starting after
//! the previous one completed, and returns when all are done or one failed.
//! On io_uring the chain is one submission of linked SQEs.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use memmap2::{MmapOptions, MmapRaw};

pub(crate) use files::Files;

#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
pub(crate) mod files;
mod memory;
pub(crate) mod posix;
#[cfg(target_os = "linux")]
mod uring;

/// Which disk I/O backend runs the shard cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoBackend {
    /// io_uring where the kernel allows it, else portable. The environment
    /// variable `EMDB_IO_BACKEND=uring|portable` overrides `Auto`.
    #[default]
    Auto,
    /// io_uring (Linux): linked write + fdatasync submissions. Opening fails
    /// if the kernel refuses io_uring.
    Uring,
    /// Positional writes and `fdatasync` system calls.
    Portable,
    /// No files (`Emdb::open_in_memory`). Only reported by `stats()`.
    Memory,
}

impl std::fmt::Display for IoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "io_uring",
            IoBackend::Portable => "portable",
            IoBackend::Memory => "memory",
        })
    }
}

/// Where a segment's bytes live.
pub(crate) enum Storage {
    File(File),
    /// An anonymous mapping standing in for a file (`open_in_memory`).
    Memory(MmapRaw),
}

impl Storage {
    pub(crate) fn fd(&self) -> Option<RawFd> {
        match self {
            Storage::File(f) => Some(f.as_raw_fd()),
            Storage::Memory(_) => None,
        }
    }
}

/// One step of a chain.
#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    /// Write all of `buf` at `offset`.
    Write {
        target: &'a Storage,
        offset: u64,
        buf: &'a [u8],
    },
    /// Write all of `buf` at `offset`, durable when it returns
    /// (`pwritev2(RWF_DSYNC)`: the data, the metadata needed to read it,
    /// and a device flush). It covers only its own bytes: the core uses it
    /// only when nothing else written to the file is waiting for a sync.
    WriteDsync {
        target: &'a Storage,
        offset: u64,
        buf: &'a [u8],
    },
    /// `fdatasync` the target.
    Sync { target: &'a Storage },
    /// `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` over the whole
    /// target: its dirty pages reach the device, without a device flush and
    /// without file metadata. Durable only once a later device flush (any
    /// fdatasync on the same device) completes, and only for files whose
    /// blocks were already allocated and written (zero-filled segments).
    SyncRange { target: &'a Storage },
}

/// A disk (or memory) backend owned by one shard core thread.
pub(crate) trait Io: Send {
    /// Which backend this is.
    fn kind(&self) -> IoBackend;
    /// Runs `ops` in order, each after the previous completed. Finishes short
    /// writes and retries `EINTR`/`EAGAIN`; any other failure is returned and
    /// the rest of the chain is not run. A failed sync is never retried.
    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()>;

    /// Like `run`, for a chain whose latency matters more than coalescing
    /// (at most one caller waits on it). Backends may run it differently.
    fn run_latency_bound(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run(ops)
    }

    /// After a failed `run`: whether the kernel may still read buffers of
    /// that chain (their operations could not be waited for). The caller
    /// must then keep those buffers alive for good; the backend refuses
    /// further work.
    fn buffers_in_flight(&self) -> bool {
        false
    }
}

/// Where a file change outside the backends happens, for fault injection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FaultPoint {
    /// Preallocating a new segment file.
    Fallocate,
    /// Any other file change outside the log path: creating a segment,
    /// storing the manifest, writing hint files.
    Metadata,
}

/// Creates the backend for one core. Called on the core thread itself, since
/// an io_uring set up with `SINGLE_ISSUER` only accepts its creator's
/// submissions.
pub(crate) fn create(kind: IoBackend, sqpoll_idle_ms: Option<u32>) -> io::Result<Box<dyn Io>> {
    create_backend(kind, sqpoll_idle_ms)
}

fn create_backend(kind: IoBackend, sqpoll_idle_ms: Option<u32>) -> io::Result<Box<dyn Io>> {
    match kind {
        IoBackend::Memory => Ok(Box::new(memory::MemoryIo)),
        IoBackend::Portable => Ok(Box::new(posix::PosixIo)),
        #[cfg(target_os = "linux")]
        IoBackend::Uring => Ok(Box::new(uring::UringIo::new(sqpoll_idle_ms)?)),
        _ => {
            let _ = sqpoll_idle_ms;
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring is not available",
            ))
        }
    }
}

/// Decides the disk backend at open: `Auto` probes io_uring with the exact
/// setup flags and opcodes the cores use, and falls back to portable on any
/// refusal. A forced `Uring` that the kernel refuses is an error.
pub(crate) fn resolve(requested: IoBackend, sqpoll_idle_ms: Option<u32>) -> io::Result<IoBackend> {
    match requested {
        IoBackend::Auto => Ok(if probe_uring(sqpoll_idle_ms).is_ok() {
            IoBackend::Uring
        } else {
            IoBackend::Portable
        }),
        IoBackend::Uring => probe_uring(sqpoll_idle_ms).map(|()| IoBackend::Uring),
        other => Ok(other),
    }
}

fn probe_uring(sqpoll_idle_ms: Option<u32>) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        uring::probe(sqpoll_idle_ms)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sqpoll_idle_ms;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring needs Linux",
        ))
    }
}

/// Maps `len` bytes of a file read-only. The file must be at least `len`
/// long.
pub(crate) fn map_file(file: &File, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw_read_only(file)
}

/// An anonymous, lazily committed mapping of `len` zero bytes.
pub(crate) fn map_anon(len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_anon().map(MmapRaw::from)
}

/// Gives the pages of `[offset, offset + len)` of an anonymous mapping back
/// to the kernel; they read as zeros afterwards.
pub(crate) fn discard(map: &MmapRaw, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    debug_assert!(offset % page_size() == 0 && offset + len <= map.len());
    // SAFETY: the range lies inside the mapping (checked by the caller's
    // arithmetic) and MADV_DONTNEED on a private anonymous mapping only
    // replaces its pages with zero pages; the mapping stays valid.
    unsafe {
        libc::madvise(
            map.as_mut_ptr().add(offset).cast(),
            len,
            libc::MADV_DONTNEED,
        );
    }
}

pub(crate) fn page_size() -> usize {
    4096
}

/// `sync_file_range` of a whole file: write its dirty pages and wait.
pub(crate) fn sync_range(fd: RawFd) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    loop {
        // SAFETY: sync_file_range on a descriptor we own has no memory effects.
        let r = unsafe { libc::sync_file_range(fd, 0, 0, flags) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `pwritev2(RWF_DSYNC)` of all of `buf` at `offset`: each call's bytes are
/// durable when it returns; a short write continues from where it stopped.
/// Where the kernel does not know the flag, `pwrite` and `fdatasync`.
pub(crate) fn write_dsync(f: &std::fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        let iov = libc::iovec {
            iov_base: rest.as_ptr() as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over a live slice; the kernel only reads it.
        let r = unsafe {
            libc::pwritev2(
                f.as_raw_fd(),
                &iov,
                1,
                (offset + done as u64) as libc::off_t,
                libc::RWF_DSYNC,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) if done == 0 => {
                    f.write_all_at(buf, offset)?;
                    return fdatasync(f.as_raw_fd());
                }
                _ => return Err(e),
            }
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev2 wrote nothing",
            ));
        }
        done += r as usize;
    }
    Ok(())
}

/// `fdatasync` with `EINTR` retried. A real failure is returned, never
/// retried.
pub(crate) fn fdatasync(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: fdatasync on a descriptor we own has no memory effects.
        let r = unsafe { libc::fdatasync(fd) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
