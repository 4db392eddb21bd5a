//! The portable backend: positional writes and `fdatasync`, one system call
//! at a time.

use std::io;
use std::os::unix::fs::FileExt;

use super::IoBackend;
use super::{fdatasync, sync_range, write_dsync, Io, Op, Storage};

pub(crate) struct PosixIo;

impl Io for PosixIo {
    fn kind(&self) -> IoBackend {
        IoBackend::Portable
    }

    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        for op in ops {
            match *op {
                Op::Write {
                    target: Storage::File(f),
                    offset,
                    buf,
                } => {
                    // write_all_at finishes short writes and retries EINTR.
                    f.write_all_at(buf, offset)?;
                }
                Op::WriteDsync {
                    target: Storage::File(f),
                    offset,
                    buf,
                } => write_dsync(f, buf, offset)?,
                Op::Sync {
                    target: Storage::File(f),
                } => {
                    use std::os::fd::AsRawFd;
                    fdatasync(f.as_raw_fd())?;
                }
                Op::SyncRange {
                    target: Storage::File(f),
                } => {
                    use std::os::fd::AsRawFd;
                    sync_range(f.as_raw_fd())?;
                }
                Op::Write {
                    target: Storage::Memory(_),
                    ..
                }
                | Op::WriteDsync {
                    target: Storage::Memory(_),
                    ..
                }
                | Op::Sync {
                    target: Storage::Memory(_),
                }
                | Op::SyncRange {
                    target: Storage::Memory(_),
                } => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "memory storage on a disk backend",
                    ));
                }
            }
        }
        Ok(())
    }
}
