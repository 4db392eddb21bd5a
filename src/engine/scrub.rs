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
use crate::log::frame::{self, SEGMENT_HEADER_LEN};
use crate::log::segment::{frame_len, Segment};

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
    let end = seg.unverified_end() as usize;
    let mut off = SEGMENT_HEADER_LEN;
    let mut view = View {
        file,
        buf,
        base: off,
        end,
    };
    view.buf.clear();
    while off < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let Some(len) = view.get(off, 4).and_then(frame_len) else {
            return false;
        };
        match view.get(off, len).map(frame::decode) {
            Some(Ok(f)) if f.len == len => off += len,
            _ => return false,
        }
    }
    off == end
        && seg
            .verify_below
            .compare_exchange(mark, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
}

/// A window of a segment file, `buf` holding its bytes from `base` on,
/// read with `pread`; nothing at or past `end` is read.
struct View<'a> {
    file: &'a std::fs::File,
    buf: &'a mut Vec<u8>,
    base: usize,
    end: usize,
}

impl View<'_> {
    /// Bytes `[off, off + len)`, read from `off` on (at least [`READ`]
    /// bytes) when the window does not hold them; `None` past `end` or on
    /// a read error.
    fn get(&mut self, off: usize, len: usize) -> Option<&[u8]> {
        if off + len > self.end {
            return None;
        }
        if off < self.base || off + len > self.base + self.buf.len() {
            self.buf.resize(len.max(READ).min(self.end - off), 0);
            self.base = off;
            self.file.read_exact_at(self.buf, off as u64).ok()?;
        }
        let at = off - self.base;
        Some(&self.buf[at..at + len])
    }
}
