//! The background check of the frames recovery took from hint files.
//!
//! Recovery trusts a segment's hint file for where its records are and
//! does not read the frames, so their checksums are unchecked at open:
//! `Segment::verify_below` marks them, and every read of such a frame
//! checks its CRC first, each time (the whole frame must then be read: a
//! hot `get` cost 117 ns after a reopen against 75 ns in the process that
//! wrote it). This thread reads each marked segment once, front to back,
//! with `pread` into a buffer (mapping the whole log would put it in the
//! process's resident memory), and checks every frame below the mark. When
//! all of them pass it lowers the segment's mark to zero: reads of it then
//! check no CRC, as reads of frames this process wrote or recovery scanned.
//! A frame that fails (or bytes that are not frames) ends the check of
//! its segment and leaves the mark: a read of that frame reports the
//! damage as before.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::io::Storage;
use crate::log::frame::{self, MIN_FRAME, SEGMENT_HEADER_LEN};
use crate::log::segment::Segment;

/// Bytes read at a time (a larger frame is read whole).
const READ: usize = 1 << 20;

/// The background check (see the module doc); stopped and joined at close.
pub(crate) struct Scrubber {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scrubber {
    /// Starts checking the marked ones of `segs`; `None` if none is marked.
    /// The thread holds neither the engine nor the segments it is not
    /// checking (a segment compaction retires meanwhile goes, with its
    /// files, as it would without the check).
    pub(crate) fn start(segs: Vec<Arc<Segment>>) -> std::io::Result<Option<Scrubber>> {
        let marked: Vec<_> = segs
            .iter()
            .filter(|s| s.verify_below.load(Ordering::Acquire) > 0)
            .map(Arc::downgrade)
            .collect();
        if marked.is_empty() {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("emdb-scrub".into())
            .spawn(move || {
                let mut buf = Vec::new();
                for seg in &marked {
                    if stop2.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Some(seg) = seg.upgrade() {
                        check_segment(&seg, &stop2, &mut buf);
                    }
                }
            })?;
        Ok(Some(Scrubber {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops the thread (within one read of [`READ`] bytes) and waits.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Checks every frame of `seg` below its mark and lowers the mark to zero
/// if all pass; true if it did.
pub(crate) fn check_segment(seg: &Segment, stop: &AtomicBool, buf: &mut Vec<u8>) -> bool {
    let Storage::File(file) = &seg.storage else {
        return false;
    };
    let mark = seg.verify_below.load(Ordering::Acquire);
    // Frames lie back to back from the header to the data's end; the mark
    // is a frame boundary (where recovery's scan began) or the capacity.
    let end = (mark as usize).min(seg.data_end.load(Ordering::Acquire) as usize);
    let mut off = SEGMENT_HEADER_LEN;
    // `buf` holds the file's bytes from `base` on.
    let mut base = off;
    buf.clear();
    while off < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let Some(len) = frame_len(file, buf, &mut base, off, end) else {
            return false;
        };
        if !fill(file, buf, &mut base, off, len, end) {
            return false;
        }
        let at = off - base;
        match frame::decode(&buf[at..at + len]) {
            Ok(f) if f.len == len => off += len,
            _ => return false,
        }
    }
    off == end
        && seg
            .verify_below
            .compare_exchange(mark, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// The length field of the frame at `off`, read into `buf` if need be;
/// `None` if it cannot be a frame ending by `end`.
fn frame_len(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    base: &mut usize,
    off: usize,
    end: usize,
) -> Option<usize> {
    if !fill(file, buf, base, off, 4, end) {
        return None;
    }
    let at = off - *base;
    let len = u32::from_le_bytes(buf[at..at + 4].try_into().ok()?) as usize;
    (len >= MIN_FRAME && off + len <= end).then_some(len)
}

/// Makes `buf` hold bytes `[off, off + len)` (reading from `off` on, at
/// least [`READ`] bytes, none past `end`, when it does not); false on a
/// read error.
fn fill(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    base: &mut usize,
    off: usize,
    len: usize,
    end: usize,
) -> bool {
    if off >= *base && off + len <= *base + buf.len() {
        return true;
    }
    let want = len.max(READ).min(end - off);
    if want < len {
        return false;
    }
    buf.resize(want, 0);
    *base = off;
    file.read_exact_at(buf, off as u64).is_ok()
}
