//! Memory for the in-memory indexes in 2 MiB pages.
//!
//! [`HugeMap`] is an anonymous mapping aligned to 2 MiB and advised
//! `MADV_HUGEPAGE` (the hash index's large tables live in one). [`Arena`]
//! hands out buffers of the ordered index's blocks from such mappings: a
//! range scan touches a block or two per shard for every seek, and a block
//! on the general heap sits in its own 4 KiB pages, so each one cost a TLB
//! miss, whose page walk is itself a cache miss or several under
//! virtualization (ARCHITECTURE.md, "Range scans", has the figures).
//!
//! An arena serves requests in size classes, eight per doubling, from
//! chunks it never gives back while it lives: a freed buffer goes on its
//! class's free list for the next request of that class. Chunks start small
//! (a set of a few keys holds one KiB, not 2 MiB) and double up to
//! [`HUGE_PAGE`]; only chunks of that size are huge-page mappings. Requests
//! above [`LARGE`] bytes (blocks of very long keys) go to the general
//! allocator. The owner (one `SortedKeys`, used only under its shard's
//! lock) frees every buffer it took before the arena drops.

use std::alloc::Layout;
use std::ptr::NonNull;

/// A huge page (x86-64 and aarch64 with 4 KiB base pages).
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private mapping of a whole number of huge pages, aligned to
/// one and advised `MADV_HUGEPAGE`: zero-filled as it is touched, unmapped
/// when dropped.
pub(crate) struct HugeMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned memory, like a `Box<[u8]>`; access to its
// bytes goes through its owner's rules.
unsafe impl Send for HugeMap {}
// SAFETY: as above; `HugeMap` itself hands out only a raw pointer.
unsafe impl Sync for HugeMap {}

impl HugeMap {
    /// At least `bytes` (rounded up to huge pages); `None` if the mapping
    /// fails.
    pub(crate) fn new(bytes: usize) -> Option<HugeMap> {
        let len = bytes.max(1).next_multiple_of(HUGE_PAGE);
        let over = len + HUGE_PAGE;
        // SAFETY: a fresh private anonymous mapping; nothing else refers
        // to it. The unaligned head and tail are unmapped right away.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                over,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return None;
            }
            let start = p as usize;
            let aligned = start.next_multiple_of(HUGE_PAGE);
            if aligned > start {
                libc::munmap(p, aligned - start);
            }
            let tail = start + over - (aligned + len);
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            // Advice only: without THP the memory works the same.
            #[cfg(target_os = "linux")]
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            Some(HugeMap {
                ptr: NonNull::new(aligned as *mut u8)?,
                len,
            })
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HugeMap {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with exactly this address and length;
        // the owner keeps no reference into it past this point.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The least buffer an arena hands out (a free buffer holds the link of
/// its class's free list).
const MIN: usize = 72;

/// The largest size class; larger requests go to the general allocator.
pub(crate) const LARGE: usize = 64 << 10;

/// Size classes: eight per doubling from [`MIN`] to [`LARGE`].
const CLASSES: usize = 80;

/// The first chunk's size; each next one doubles, up to [`HUGE_PAGE`]. A
/// set of a few keys (a small namespace) holds one such chunk.
const FIRST_CHUNK: usize = 1 << 10;

/// Alignment of every buffer (the blocks keep `u64`s first).
const ALIGN: usize = 8;

/// The class of a request of `size` bytes (at most [`LARGE`]) and that
/// class's size: the size rounded up to an eighth of its power of two.
#[inline]
fn class_of(size: usize) -> (usize, usize) {
    let s = size.max(MIN);
    // 2^k < s <= 2^(k+1), with k >= 6.
    let k = (usize::BITS - 1 - (s - 1).leading_zeros()) as usize;
    let step = 1 << (k - 3);
    let c = s.next_multiple_of(step);
    ((k - 6) * 8 + (c >> (k - 3)) - 9, c)
}

/// A buffer from an [`Arena`]: where it starts and its size (its class's,
/// or the exact size of a large one). A zero-sized buffer is dangling and
/// was never allocated.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) cap: usize,
}

impl Buf {
    /// The empty buffer (nothing to free).
    pub(crate) const EMPTY: Buf = Buf {
        ptr: NonNull::<u64>::dangling().cast(),
        cap: 0,
    };
}

/// Where an arena's chunk lives.
enum Chunk {
    Heap(NonNull<u8>, Layout),
    Huge(HugeMap),
}

/// Buffers in size classes from chunks of 2 MiB pages (see the module doc).
pub(crate) struct Arena {
    /// Each class's free buffers, linked through their first eight bytes.
    free: [*mut u8; CLASSES],
    /// The current chunk's unused span.
    bump: usize,
    end: usize,
    chunks: Vec<Chunk>,
    /// Bytes of every chunk and large buffer held.
    held: usize,
    /// Bytes of the chunks that are huge-page mappings.
    mapped: usize,
    /// Bytes of the buffers handed out and not freed.
    in_use: usize,
    /// Bytes of the buffers on the free lists.
    free_bytes: usize,
}

// SAFETY: an arena owns its chunks; its raw pointers point only into them,
// and its owner uses it (and the buffers it handed out) under one lock.
unsafe impl Send for Arena {}
// SAFETY: as above; no method mutates through `&self`.
unsafe impl Sync for Arena {}

impl Default for Arena {
    fn default() -> Arena {
        Arena {
            free: [std::ptr::null_mut(); CLASSES],
            bump: 0,
            end: 0,
            chunks: Vec::new(),
            held: 0,
            mapped: 0,
            in_use: 0,
            free_bytes: 0,
        }
    }
}

impl Arena {
    /// A buffer of at least `size` bytes, aligned to 8; its `cap` may be
    /// larger (the class's size), and all of it may be used.
    pub(crate) fn alloc(&mut self, size: usize) -> Buf {
        if size == 0 {
            return Buf::EMPTY;
        }
        if size > LARGE {
            let cap = size.next_multiple_of(ALIGN);
            let layout = Layout::from_size_align(cap, ALIGN).expect("buffer size");
            // SAFETY: the layout is non-zero.
            let ptr = unsafe { std::alloc::alloc(layout) };
            let Some(ptr) = NonNull::new(ptr) else {
                std::alloc::handle_alloc_error(layout)
            };
            self.held += cap;
            self.in_use += cap;
            return Buf { ptr, cap };
        }
        let (class, cap) = class_of(size);
        self.in_use += cap;
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free buffer of this class holds the next one's
            // address in its first eight bytes (written by `free`).
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            self.free_bytes -= cap;
            return Buf {
                ptr: NonNull::new(head).expect("not null"),
                cap,
            };
        }
        if self.end - self.bump < cap {
            self.new_chunk(cap);
        }
        assert!(self.end - self.bump >= cap, "a new chunk holds the request");
        let ptr = self.bump as *mut u8;
        self.bump += cap;
        Buf {
            ptr: NonNull::new(ptr).expect("inside a chunk"),
            cap,
        }
    }

    /// Gives `buf` back (it must come from this arena's `alloc`, and
    /// nothing may use it after).
    pub(crate) fn free(&mut self, buf: Buf) {
        if buf.cap == 0 {
            return;
        }
        self.in_use -= buf.cap;
        if buf.cap > LARGE {
            let layout = Layout::from_size_align(buf.cap, ALIGN).expect("buffer size");
            // SAFETY: allocated in `alloc` with this layout.
            unsafe { std::alloc::dealloc(buf.ptr.as_ptr(), layout) };
            self.held -= buf.cap;
            return;
        }
        let (class, cap) = class_of(buf.cap);
        debug_assert_eq!(cap, buf.cap, "a class's size is its own class");
        // SAFETY: the buffer is at least MIN bytes, aligned to 8, and no
        // longer used: it now holds the free list's link.
        unsafe { buf.ptr.as_ptr().cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = buf.ptr.as_ptr();
        self.free_bytes += cap;
    }

    /// Starts a new chunk of at least `cap` bytes (at most [`LARGE`]),
    /// each twice the last up to a huge page (the rest of the last one is
    /// left unused).
    fn new_chunk(&mut self, cap: usize) {
        let size = match self.chunks.last() {
            None => FIRST_CHUNK,
            Some(Chunk::Heap(_, l)) => (l.size() * 2).min(HUGE_PAGE),
            Some(Chunk::Huge(m)) => m.len(),
        }
        .max(cap.next_power_of_two());
        let chunk = match (size == HUGE_PAGE).then(|| HugeMap::new(size)).flatten() {
            Some(m) => Chunk::Huge(m),
            None => {
                let layout = Layout::from_size_align(size, 64).expect("chunk size");
                // SAFETY: the layout is non-zero.
                let ptr = unsafe { std::alloc::alloc(layout) };
                let Some(ptr) = NonNull::new(ptr) else {
                    std::alloc::handle_alloc_error(layout)
                };
                Chunk::Heap(ptr, layout)
            }
        };
        let (start, len) = match &chunk {
            Chunk::Heap(p, l) => (p.as_ptr() as usize, l.size()),
            Chunk::Huge(m) => {
                self.mapped += m.len();
                (m.as_ptr() as usize, m.len())
            }
        };
        self.chunks.push(chunk);
        self.held += len;
        self.bump = start;
        self.end = start + len;
    }

    /// Bytes held from the system: chunks and large buffers.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Bytes of the chunks that are huge-page mappings (outside the
    /// general allocator).
    #[cfg(feature = "bench-internals")]
    pub(crate) fn mapped(&self) -> usize {
        self.mapped
    }

    /// Bytes of the buffers handed out and not given back.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Bytes of the buffers given back and waiting on the free lists.
    pub(crate) fn free_bytes(&self) -> usize {
        self.free_bytes
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for c in self.chunks.drain(..) {
            if let Chunk::Heap(p, l) = c {
                // SAFETY: allocated in `new_chunk` with this layout; the
                // owner freed (and stopped using) every buffer in it.
                unsafe { std::alloc::dealloc(p.as_ptr(), l) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_eighths_of_their_power_of_two_and_cover_every_size() {
        let mut last = (0, 0);
        for size in 1..=LARGE {
            let (class, cap) = class_of(size);
            assert!(
                cap >= size && cap >= MIN && cap % ALIGN == 0,
                "{size}: {cap}"
            );
            assert!(class < CLASSES, "{size}: class {class}");
            assert!(
                size <= MIN || cap - size < size / 8 + ALIGN,
                "{size}: {cap}"
            );
            assert_eq!(class_of(cap), (class, cap), "a class's size is its own");
            assert!((class, cap) >= last, "classes ascend with sizes");
            last = (class, cap);
        }
        assert_eq!(last, (CLASSES - 1, LARGE));
    }

    #[test]
    fn buffers_do_not_overlap_and_freed_ones_are_reused() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut arena = Arena::default();
        let mut live: Vec<(Buf, u8)> = Vec::new();
        for round in 0..20_000u32 {
            // Every few rounds a fresh arena, whose first chunks are
            // smaller than the larger classes.
            if round % 2_000 == 1_999 && round < 16_000 {
                for (buf, _) in live.drain(..) {
                    arena.free(buf);
                }
                assert_eq!(arena.in_use(), 0);
                arena = Arena::default();
            }
            if live.len() > 300 || (rng.bool() && !live.is_empty()) {
                let (buf, fill) = live.swap_remove(rng.usize(..live.len()));
                // SAFETY: a live buffer of `cap` bytes, written below.
                let bytes = unsafe { std::slice::from_raw_parts(buf.ptr.as_ptr(), buf.cap) };
                assert!(bytes.iter().all(|&b| b == fill), "round {round}");
                arena.free(buf);
            } else {
                let size = match rng.u8(0..10) {
                    0 => rng.usize(LARGE / 2..3 * LARGE),
                    _ => rng.usize(1..5000),
                };
                let buf = arena.alloc(size);
                assert!(buf.cap >= size && buf.ptr.as_ptr() as usize % ALIGN == 0);
                let fill = (round % 251) as u8;
                // SAFETY: a fresh buffer of `cap` bytes, ours alone.
                unsafe { std::ptr::write_bytes(buf.ptr.as_ptr(), fill, buf.cap) };
                live.push((buf, fill));
            }
        }
        let in_use: usize = live.iter().map(|(b, _)| b.cap).sum();
        assert_eq!(arena.in_use(), in_use);
        assert!(arena.held() >= in_use);
        let held = arena.held();
        for (buf, _) in live.drain(..) {
            arena.free(buf);
        }
        assert_eq!(arena.in_use(), 0);
        assert!(arena.free_bytes() <= arena.held());
        // The same requests again are served from the free lists.
        let again: Vec<Buf> = (0..100).map(|i| arena.alloc(100 + i)).collect();
        assert!(arena.held() <= held, "no new chunk for reused classes");
        for b in again {
            arena.free(b);
        }
    }
}
