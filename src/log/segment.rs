//! One segment: a preallocated append-only file of frames, its read-only
//! mapping, and its shadow (the tail buffer).
//!
//! The shadow is an anonymous mapping as large as the segment, addressed by
//! segment offset. Writers copy each frame into the shadow at its reserved
//! offset under the shard lock; the core writes `[written, reserved)` of the
//! shadow to the file and then advances `written`; pages of the shadow below
//! `written` are later given back to the kernel and `released` says how far.
//! A frame never changes once appended, so readers need no lock:
//! - below `written` they read the file mapping (zero-copy);
//! - above it they read the shadow and then check `released`: if the pages
//!   were discarded meanwhile, the frame is in the file and they read it again
//!   from there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use memmap2::MmapRaw;

use super::frame::{self, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::config::Config;
use crate::io::{self, FaultPoint, Storage};
use std::io as stdio;

const MADV_POPULATE_WRITE: libc::c_int = 23;
/// The first allocation of a new segment file; it grows from there.
pub(crate) const INITIAL_ALLOCATION: u32 = 1 << 20;
/// The page cache's largest folio, which a file view maps with one TLB
/// entry (x86-64's 2 MiB page): the core writes each aligned region of
/// this size whole the first time (zeros ahead of the data), and the page
/// cache then holds it as one folio where the kernel makes large folios
/// for the file system (Linux 6.16 and later on ext4, earlier on XFS);
/// elsewhere it costs a zero write per region and nothing else.
pub(crate) const REGION: u32 = 2 << 20;
/// The largest growth step of a segment file.
const MAX_GROWTH_STEP: u32 = 4 << 20;

/// How much a file of `have` bytes grows at once: doubling while small, then
/// `MAX_GROWTH_STEP` at a time (at most that much preallocated and unused).
fn growth_step(have: u32) -> u32 {
    have.clamp(INITIAL_ALLOCATION, MAX_GROWTH_STEP)
}
/// Segments stay addressable by a 32-bit offset.
const MAX_LEN: u32 = !4095;

pub(crate) struct Segment {
    pub id: u32,
    /// The shard whose log this segment is part of.
    #[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
    pub shard: u32,
    /// Data keys of the append sessions this process used here (encrypted
    /// databases; see `crate::crypt`).
    #[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
    pub keys: crate::crypt::KeyCache,
    /// Size of both mappings: the most the segment can hold.
    pub cap: u32,
    /// Bytes of the file allocated (preallocated zeros or data): appends
    /// stay below it, readers never read past it.
    allocated: AtomicU32,
    pub path: Option<PathBuf>,
    pub storage: Storage,
    /// File operations (watched by a fault plan, if any).
    files: io::Files,
    /// Compaction retired this segment: its file (and hint file) is removed
    /// as soon as no [`Held`] claim on it is left (see [`Held`]).
    retired: AtomicBool,
    /// Live [`Held`] claims: iterators, streams and `ValueRef`s.
    holders: AtomicUsize,
    /// The files were removed (once).
    unlinked: AtomicBool,
    /// Read view of the file. For memory storage it is the storage itself.
    file_map: Option<MmapRaw>,
    /// The tail buffer; `None` for segments recovered read-only.
    shadow: Option<MmapRaw>,
    /// Bytes `[0, written)` are in the file (or the memory storage).
    pub written: AtomicU32,
    /// Shadow bytes below this were discarded.
    released: AtomicU32,
    /// Shadow pages below this were faulted in ahead of writers.
    prefaulted: AtomicU32,
    /// Frames below this offset were never checksum-verified by this
    /// process (recovery took them from hint files): reads verify them.
    pub verify_below: AtomicU32,
    /// No more frames will be appended.
    pub sealed: AtomicBool,
    /// Bytes of the frames in this segment that the index points to (live
    /// records). Everything else between the header and the data's end is
    /// dead: overwritten or removed records, tombstones, markers.
    pub live_bytes: AtomicU64,
    /// Where the frames end: bytes `[SEGMENT_HEADER_LEN, data_end)` hold
    /// frames (live or dead). Kept by appends (under the shard lock) and
    /// set by recovery.
    pub data_end: AtomicU32,
    /// Every block below this offset was written (data or zeros) and that
    /// was made durable, so writes below it change no file metadata: they
    /// are durable after `sync_file_range` plus any later device flush.
    /// Advanced by the core at each fdatasync, to `filled_upto`.
    pub zeroed_upto: AtomicU32,
    /// Every byte below this offset was written to the file, data or
    /// zeros, not necessarily durably: the core fills ahead of the data
    /// with zeros, a whole [`REGION`] at a time (`core_loop::fill_ahead`).
    /// Only the core changes it.
    pub filled_upto: AtomicU32,
}

// SAFETY: the raw mappings are only written through the protocols described
// in the module doc: the shadow at offsets reserved under the shard lock, the
// memory storage by the core thread beyond `written`. All shared reads are of
// bytes that are immutable once published.
unsafe impl Send for Segment {}
// SAFETY: see above.
unsafe impl Sync for Segment {}

pub(crate) fn file_name(shard: u32, id: u32) -> String {
    format!("{shard:03}-{id:08}.seg")
}

pub(crate) fn hint_name(shard: u32, id: u32) -> String {
    format!("{shard:03}-{id:08}.hint")
}

/// Parses `SSS-NNNNNNNN.seg` into (shard, id).
pub(crate) fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".seg")?;
    let (s, i) = stem.split_once('-')?;
    Some((s.parse().ok()?, i.parse().ok()?))
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            self.unlink();
            // A checkpoint that listed the segment before it was retired may
            // have written its hint file after the unlink: nothing holds the
            // segment now, so nothing writes it again.
            if let Some(path) = &self.path {
                let _ = self.files.remove(&path.with_extension("hint"));
            }
        }
    }
}

/// A claim on a segment by something that reads it for an unbounded time:
/// an iterator or stream (its snapshot), or a `ValueRef`.
///
/// A retired segment's files are removed when its last claim goes, at once,
/// on the thread that drops it. The `Arc` alone does not decide that: the
/// segment tables readers load are freed through epoch reclamation, which
/// may keep a retired table (and its `Arc`s) alive for as long as any
/// thread of the process stays pinned. Removing the file early is safe: a
/// segment is read only through its mapping and its open descriptor, which
/// keep the unlinked inode readable until the last `Arc` goes.
pub(crate) struct Held(Arc<Segment>);

impl Held {
    pub(crate) fn new(seg: Arc<Segment>) -> Held {
        // SeqCst pairs with `retire`: of a claim taken as the segment is
        // retired, one side sees the other, and the files go once neither
        // holds them (early is fine, see above; late is not).
        seg.holders.fetch_add(1, Ordering::SeqCst);
        Held(seg)
    }
}

impl std::ops::Deref for Held {
    type Target = Arc<Segment>;
    fn deref(&self) -> &Arc<Segment> {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.holders.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.retired.load(Ordering::SeqCst)
        {
            self.0.unlink();
        }
    }
}

impl Segment {
    /// This segment as encryption sees it.
    #[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
    pub(crate) fn place(&self) -> crate::crypt::Place<'_> {
        crate::crypt::Place {
            shard: self.shard,
            segment: self.id,
            keys: &self.keys,
        }
    }

    /// Marks the segment retired (no longer listed by the manifest): its
    /// files go now if nothing [`Held`] it, else when the last claim does.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        if self.holders.load(Ordering::SeqCst) == 0 {
            self.unlink();
        }
    }

    /// Removes the segment file and its hint file, once. Best effort: a
    /// file left behind is unlisted, and the next open removes it as an
    /// orphan. The unlinks need no directory sync for the same reason.
    fn unlink(&self) {
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(path) = &self.path {
            let _ = self.files.remove(path);
            let _ = self.files.remove(&path.with_extension("hint"));
        }
    }

    /// Creates a new, empty segment of `config.segment_size` bytes: a
    /// preallocated file with its header, made durable, or a memory region
    /// when `dir` is `None`. A failure removes the file it created.
    pub(crate) fn create(
        dir: Option<&Path>,
        header: SegmentHeader,
        config: &Config,
    ) -> stdio::Result<Segment> {
        let cap = config.segment_size as u32;
        let head = header.encode();
        let (storage, file_map, path) = match dir {
            Some(dir) => {
                let path = dir.join(file_name(header.shard, header.segment));
                let files = config.files();
                files.fault_point(FaultPoint::Metadata)?;
                // Exclusive: an entry already at this path (a planted
                // symlink, a stale file) is reported, never reused.
                let file = files.create_new(&path)?;
                let made = (|| {
                    files.fault_point(FaultPoint::Fallocate)?;
                    files.preallocate(&file, INITIAL_ALLOCATION.min(cap) as u64)?;
                    files.write_at(&file, &head, 0)?;
                    // Data and size durable; the entry becomes durable with
                    // the manifest that lists it (same directory, synced
                    // after the rename).
                    files.sync_data(&file)?;
                    io::map_file(&file, cap as usize)
                })();
                match made {
                    Ok(map) => (Storage::File(file), Some(map), Some(path)),
                    Err(e) => {
                        // Give the space back (a full disk is the usual
                        // cause); the file is not listed anywhere yet.
                        drop(file);
                        let _ = files.remove(&path);
                        return Err(e);
                    }
                }
            }
            None => {
                let map = io::map_anon(cap as usize)?;
                // SAFETY: the mapping is fresh, private to us and at least
                // SEGMENT_HEADER_LEN long (cap >= 4096).
                unsafe {
                    std::ptr::copy_nonoverlapping(head.as_ptr(), map.as_mut_ptr(), head.len())
                };
                (Storage::Memory(map), None, None)
            }
        };
        let allocated = match &storage {
            Storage::File(_) => INITIAL_ALLOCATION.min(cap),
            Storage::Memory(_) => cap,
        };
        Ok(Segment {
            shard: header.shard,
            keys: Default::default(),
            id: header.segment,
            cap,
            files: config.files(),
            retired: AtomicBool::new(false),
            holders: AtomicUsize::new(0),
            unlinked: AtomicBool::new(false),
            allocated: AtomicU32::new(allocated),
            path,
            storage,
            file_map,
            shadow: Some(io::map_anon(cap as usize)?),
            written: AtomicU32::new(SEGMENT_HEADER_LEN as u32),
            released: AtomicU32::new(0),
            prefaulted: AtomicU32::new(0),
            verify_below: AtomicU32::new(0),
            sealed: AtomicBool::new(false),
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU32::new(SEGMENT_HEADER_LEN as u32),
            // The header was written and synced.
            zeroed_upto: AtomicU32::new(SEGMENT_HEADER_LEN as u32),
            filled_upto: AtomicU32::new(SEGMENT_HEADER_LEN as u32),
        })
    }

    /// Opens an existing segment file. When `extend_to` is given (the last
    /// segment of a shard, to be appended to), it is mapped and gets a
    /// shadow that large, so appends can go on up to it; the file itself
    /// grows as they need it (`ensure_allocated`).
    pub(crate) fn open(
        files: &io::Files,
        path: &Path,
        id: u32,
        extend_to: Option<u32>,
    ) -> stdio::Result<Segment> {
        let file = files.open_rw(path)?;
        let len = file.metadata()?.len().min(MAX_LEN as u64) as u32;
        let cap = extend_to.map_or(len, |want| want.max(len));
        let map = if cap == 0 {
            None
        } else {
            Some(io::map_file(&file, cap as usize)?)
        };
        let shadow = match extend_to {
            Some(_) if cap > 0 => Some(io::map_anon(cap as usize)?),
            _ => None,
        };
        // The shard is in the file's name (recovery checks it against the
        // header before using the segment).
        let shard = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
            .map_or(0, |(s, _)| s);
        Ok(Segment {
            shard,
            keys: Default::default(),
            id,
            cap,
            files: files.clone(),
            retired: AtomicBool::new(false),
            holders: AtomicUsize::new(0),
            unlinked: AtomicBool::new(false),
            allocated: AtomicU32::new(len),
            path: Some(path.to_path_buf()),
            storage: Storage::File(file),
            file_map: map,
            shadow,
            written: AtomicU32::new(len),
            released: AtomicU32::new(len),
            prefaulted: AtomicU32::new(0),
            verify_below: AtomicU32::new(0),
            sealed: AtomicBool::new(extend_to.is_none()),
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU32::new(0),
            // Set by recovery once the append point is known and synced.
            zeroed_upto: AtomicU32::new(0),
            filled_upto: AtomicU32::new(len),
        })
    }

    /// Makes the file at least `upto` bytes long (preallocated zeros), so a
    /// write below `upto` changes no file size. Grows in steps (see
    /// `growth_step`), up to `cap`: a new database stays small, and the last
    /// segment of a shard never holds more than one step unused. Several
    /// callers may race; the file never shrinks.
    pub(crate) fn ensure_allocated(&self, files: &io::Files, upto: u32) -> stdio::Result<()> {
        let have = self.allocated.load(Ordering::Acquire);
        if upto <= have {
            return Ok(());
        }
        let Storage::File(file) = &self.storage else {
            return Ok(());
        };
        let want = upto
            .max(have.saturating_add(growth_step(have)))
            .min(self.cap)
            .max(upto);
        files.fault_point(FaultPoint::Fallocate)?;
        files.preallocate(file, want as u64)?;
        self.allocated.fetch_max(want, Ordering::AcqRel);
        Ok(())
    }

    /// Whether appends at `reserved` are near the end of the allocation,
    /// and the file should grow by a step now (ahead of them).
    pub(crate) fn wants_growth(&self, reserved: u32) -> bool {
        let have = self.allocated();
        have < self.cap && have.saturating_sub(reserved) < growth_step(have) / 2
    }

    /// The allocation after the next step.
    pub(crate) fn next_allocation(&self) -> u32 {
        let have = self.allocated();
        have.saturating_add(growth_step(have)).min(self.cap)
    }

    /// Bytes of the file allocated so far.
    pub(crate) fn allocated(&self) -> u32 {
        self.allocated.load(Ordering::Acquire)
    }

    /// The whole segment as the file holds it. Only for recovery, before any
    /// append, and for reading below `written`.
    pub(crate) fn file_bytes(&self) -> &[u8] {
        let (ptr, len) = match (&self.file_map, &self.storage) {
            // Never past the end of the file: the mapping may be larger.
            (Some(m), _) => (m.as_ptr(), m.len().min(self.allocated() as usize)),
            (None, Storage::Memory(m)) => (m.as_ptr(), m.len()),
            (None, Storage::File(_)) => return &[],
        };
        // SAFETY: the mapping lives as long as self and is never unmapped
        // early; bytes below `written` are immutable.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Prepares the segment for appends starting at `end` (after recovery).
    /// The caller has synced the file, so the block holding `end` is written
    /// durably.
    pub(crate) fn set_append_point(&self, end: u32) {
        self.data_end.store(end, Ordering::Release);
        self.zeroed_upto.store(end, Ordering::Release);
        self.filled_upto.store(end, Ordering::Release);
        self.written.store(end, Ordering::Release);
        let page = (end as usize / io::page_size() * io::page_size()) as u32;
        self.released.store(page, Ordering::Release);
        self.sealed.store(false, Ordering::Release);
    }

    pub(crate) fn has_shadow(&self) -> bool {
        self.shadow.is_some()
    }

    /// Pointer to shadow byte `off`, for a writer holding the shard lock
    /// that reserved `[off, off + len)`.
    ///
    /// # Safety
    /// The caller must have reserved the range exclusively and it must lie
    /// within `cap`.
    #[allow(clippy::mut_from_ref)] // disjoint ranges, handed out under the shard lock
    pub(crate) unsafe fn shadow_mut(&self, off: u32, len: usize) -> &mut [u8] {
        let shadow = self
            .shadow
            .as_ref()
            .expect("appends only go to segments with a shadow");
        debug_assert!(off as usize + len <= shadow.len());
        // SAFETY: guaranteed by the caller: exclusive, in bounds.
        unsafe { std::slice::from_raw_parts_mut(shadow.as_mut_ptr().add(off as usize), len) }
    }

    /// Populates the shadow's page tables up to `upto` (page-rounded), so
    /// writers do not take page faults inside the shard lock. Contents are
    /// unchanged; racing writers are harmless.
    pub(crate) fn prefault_shadow(&self, upto: u32) {
        let Some(shadow) = &self.shadow else { return };
        let page = io::page_size() as u32;
        let upto = upto.min(self.cap) / page * page;
        let from = self
            .prefaulted
            .load(Ordering::Relaxed)
            .max(self.released.load(Ordering::Acquire));
        if upto <= from {
            return;
        }
        // SAFETY: the range lies inside the mapping; MADV_POPULATE_WRITE
        // only faults pages in (Linux 5.14+; an older kernel returns EINVAL,
        // which costs writers their own faults, nothing else).
        unsafe {
            libc::madvise(
                shadow.as_mut_ptr().add(from as usize).cast(),
                (upto - from) as usize,
                MADV_POPULATE_WRITE,
            );
        }
        self.prefaulted.store(upto, Ordering::Relaxed);
    }

    /// Shadow bytes `[from, to)` for the core to hand to the kernel.
    pub(crate) fn shadow_range(&self, from: u32, to: u32) -> &[u8] {
        match &self.shadow {
            // SAFETY: [from, to) was fully appended before the core took it
            // and is never modified again; it lies within the mapping.
            Some(s) => unsafe {
                std::slice::from_raw_parts(s.as_ptr().add(from as usize), (to - from) as usize)
            },
            None => &[],
        }
    }

    /// Discards shadow pages below `upto` (rounded down to a page), which
    /// must already be in the file.
    pub(crate) fn release_shadow(&self, upto: u32) {
        let Some(shadow) = &self.shadow else { return };
        let upto = (upto as usize / io::page_size() * io::page_size()) as u32;
        let from = self.released.load(Ordering::Acquire);
        if upto <= from {
            return;
        }
        debug_assert!(upto <= self.written.load(Ordering::Acquire));
        // Publish first: a reader that copies discarded (zero) bytes must
        // then see the new mark and re-read from the file.
        self.released.store(upto, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        io::discard(shadow, from as usize, (upto - from) as usize);
    }

    /// Calls `f` with the bytes of the frame at `off` and returns its result,
    /// or `None` if no plausible frame is there. `f` may be called twice
    /// (shadow read invalidated by a concurrent discard), so it must not have
    /// side effects beyond its return value.
    #[inline]
    pub(crate) fn with_frame<R>(&self, off: u32, mut f: impl FnMut(&[u8]) -> R) -> Option<R> {
        match self.in_file(off) {
            InFile::Frame(b) => return Some(f(b)),
            InFile::Implausible => return None,
            InFile::NotWritten => {}
        }
        let off = off as usize;
        let shadow = self.shadow.as_ref()?;
        let r = shadow_range(shadow, off, 4)
            .and_then(frame_len)
            .and_then(|len| shadow_range(shadow, off, len))
            .map(&mut f);
        fence(Ordering::SeqCst);
        if (self.released.load(Ordering::SeqCst) as usize) <= off {
            return r;
        }
        // Discarded while we read: by now the frame is in the file.
        let written = self.written.load(Ordering::Acquire) as usize;
        let len = frame_len(self.file_range(off, 4)?)?;
        (off + len <= written)
            .then(|| self.file_range(off, len).map(f))
            .flatten()
    }

    /// The file bytes `[off, off + len)`, below `written`, without copying.
    pub(crate) fn mapped(&self, off: u32, len: u32) -> Option<&[u8]> {
        let end = off as usize + len as usize;
        if end <= self.written.load(Ordering::Acquire) as usize {
            self.file_range(off as usize, len as usize)
        } else {
            None
        }
    }

    /// The frame at `off` when it lies wholly in the file below `written`
    /// (bytes that never change): read in place, once. `None` otherwise
    /// (a frame still in the shadow, or no plausible frame), for
    /// [`with_frame`](Segment::with_frame) to settle.
    #[inline]
    pub(crate) fn written_frame(&self, off: u32) -> Option<&[u8]> {
        match self.in_file(off) {
            InFile::Frame(b) => Some(b),
            InFile::NotWritten | InFile::Implausible => None,
        }
    }

    /// What the file's written bytes hold at `off`: its view asked for
    /// once, the frame's length read in place (a scan reads every record
    /// through here).
    #[inline]
    fn in_file(&self, off: u32) -> InFile<'_> {
        let off = off as usize;
        let written = self.written.load(Ordering::Acquire) as usize;
        if off + frame::MIN_FRAME > written {
            return InFile::NotWritten;
        }
        let Some((ptr, cap)) = self.view() else {
            return InFile::Implausible;
        };
        if off + 4 > cap {
            return InFile::Implausible;
        }
        // SAFETY: `off + 4` is within the view (checked), below `written`
        // (bytes that never change).
        let head = unsafe { std::slice::from_raw_parts(ptr.add(off), 4) };
        let Some(len) = frame_len(head) else {
            return InFile::Implausible;
        };
        // Compared as room left after `off` (both checks above leave some),
        // so no sum can wrap.
        if len > written - off {
            return InFile::NotWritten;
        }
        if len > cap - off {
            return InFile::Implausible;
        }
        // SAFETY: `[off, off + len)` is within the view and below
        // `written` (both checked); the mapping lives as long as self.
        InFile::Frame(unsafe { std::slice::from_raw_parts(ptr.add(off), len) })
    }

    /// Starts loading the cache lines of bytes `[off, off + len)` (a
    /// scan asks for a frame's lines this way before it reads the frame).
    #[inline]
    pub(crate) fn prefetch(&self, off: u32, len: usize) {
        let Some((ptr, _)) = self.view() else {
            return;
        };
        let end = off as usize + len;
        let mut line = off as usize & !63;
        loop {
            crate::index::prefetch(ptr.wrapping_add(line));
            line += 64;
            if line >= end {
                break;
            }
        }
    }

    /// The file's read view (its mapping, or the memory storage) and its
    /// length; `None` when the file is not mapped.
    #[inline]
    fn view(&self) -> Option<(*const u8, usize)> {
        match (&self.file_map, &self.storage) {
            (Some(m), _) => Some((m.as_ptr(), m.len())),
            (None, Storage::Memory(m)) => Some((m.as_ptr(), m.len())),
            (None, Storage::File(_)) => None,
        }
    }

    /// A slice of just `[off, off + len)` of the file view: never one that
    /// covers bytes another thread may be writing.
    fn file_range(&self, off: usize, len: usize) -> Option<&[u8]> {
        let (ptr, cap) = self.view()?;
        if off.checked_add(len)? > cap {
            return None;
        }
        // SAFETY: in bounds (checked); the mapping lives as long as self, and
        // callers ask only for ranges below `written`, which never change.
        Some(unsafe { std::slice::from_raw_parts(ptr.add(off), len) })
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.allocated() as u64
    }

    /// Whether a read of the frame at `off` must check its CRC (it came
    /// from a hint file and the background check has not reached it).
    #[inline]
    pub(crate) fn needs_crc(&self, off: u32) -> bool {
        off < self.verify_below.load(Ordering::Relaxed)
    }

    /// Where the frames whose CRC reads must check end: they lie back to
    /// back from the header to here ([`Segment::verify_below`], a frame
    /// boundary or the capacity, capped by the data's end).
    pub(crate) fn unverified_end(&self) -> u32 {
        let mark = self.verify_below.load(Ordering::Acquire);
        mark.min(self.data_end.load(Ordering::Acquire))
    }

    /// Bytes of frames whose CRC reads must check.
    pub(crate) fn unverified_bytes(&self) -> u64 {
        self.unverified_end()
            .saturating_sub(SEGMENT_HEADER_LEN as u32) as u64
    }

    /// Bytes of frames in the segment that no live record holds.
    pub(crate) fn dead_bytes(&self) -> u64 {
        let data = (self.data_end.load(Ordering::Acquire) as u64)
            .saturating_sub(SEGMENT_HEADER_LEN as u64);
        data.saturating_sub(self.live_bytes.load(Ordering::Relaxed))
    }
}

/// A slice of just `[off, off + len)` of a shadow.
fn shadow_range(shadow: &MmapRaw, off: usize, len: usize) -> Option<&[u8]> {
    if off.checked_add(len)? > shadow.len() {
        return None;
    }
    // SAFETY: in bounds (checked). The range holds a frame that was fully
    // appended before its location was published; appenders write other
    // ranges, and a concurrent discard only turns these bytes into zeros,
    // which the caller detects through `released`.
    Some(unsafe { std::slice::from_raw_parts(shadow.as_ptr().add(off), len) })
}

/// What a segment's file holds at an offset ([`Segment::in_file`]).
enum InFile<'a> {
    /// A frame wholly below what was written: its bytes.
    Frame(&'a [u8]),
    /// Not (wholly) written to the file yet: the shadow may hold it.
    NotWritten,
    /// Written bytes that hold no plausible frame.
    Implausible,
}

/// The length field of a frame, if plausible.
pub(crate) fn frame_len(b: &[u8]) -> Option<usize> {
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let len = u32::from_le_bytes(b) as usize;
    (len >= frame::MIN_FRAME).then_some(len)
}
