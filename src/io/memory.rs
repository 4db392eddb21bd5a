//! The memory backend behind `Emdb::open_in_memory`: a "write" copies into an
//! anonymous mapping that stands in for the segment file; a sync does nothing.

use std::io;

use super::IoBackend;
use super::{Io, Op, Storage};

pub(crate) struct MemoryIo;

impl Io for MemoryIo {
    fn kind(&self) -> IoBackend {
        IoBackend::Memory
    }

    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        for op in ops {
            match *op {
                Op::Write {
                    target: Storage::Memory(map),
                    offset,
                    buf,
                } => {
                    let end = (offset as usize).checked_add(buf.len());
                    if end.is_none_or(|e| e > map.len()) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "write past the segment",
                        ));
                    }
                    // SAFETY: the destination range is inside the mapping
                    // (checked above). Only this core thread writes to it,
                    // and readers read only ranges below the segment's
                    // published `written` mark, which this write is beyond.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            buf.as_ptr(),
                            map.as_mut_ptr().add(offset as usize),
                            buf.len(),
                        );
                    }
                }
                Op::Sync { .. } | Op::SyncRange { .. } => {}
                Op::Write {
                    target: Storage::File(_),
                    ..
                }
                | Op::WriteDsync { .. } => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "file storage on the memory backend",
                    ));
                }
            }
        }
        Ok(())
    }
}
