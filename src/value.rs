//! `ValueRef`: a value read without copying, valid for as long as it is held.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::log::segment::{Held, Segment};

/// A value returned by `get_zerocopy`. It points into the segment's file
/// mapping and keeps that segment alive, so it stays valid across later
/// writes, file growth, segment rotation and compaction. Values not yet
/// written to the file are handed back as an owned copy inside it.
pub struct ValueRef<'a> {
    repr: Repr,
    _handle: PhantomData<&'a ()>,
}

enum Repr {
    Mapped {
        _seg: Held,
        ptr: *const u8,
        len: usize,
    },
    Owned(Vec<u8>),
}

// SAFETY: `ptr` points into an immutable region of a mapping owned by the
// segment held beside it; Segment is Send + Sync.
unsafe impl Send for ValueRef<'_> {}
// SAFETY: as above; the bytes are never mutated.
unsafe impl Sync for ValueRef<'_> {}

impl ValueRef<'_> {
    pub(crate) fn mapped(seg: Arc<Segment>, bytes: &[u8]) -> ValueRef<'static> {
        ValueRef {
            repr: Repr::Mapped {
                ptr: bytes.as_ptr(),
                len: bytes.len(),
                _seg: Held::new(seg),
            },
            _handle: PhantomData,
        }
    }

    pub(crate) fn owned(v: Vec<u8>) -> ValueRef<'static> {
        ValueRef {
            repr: Repr::Owned(v),
            _handle: PhantomData,
        }
    }

    /// The value's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.repr {
            // SAFETY: see the Send impl: the region is mapped and immutable
            // for as long as `_seg` lives, which is as long as self.
            Repr::Mapped { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            Repr::Owned(v) => v,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the value out (or moves it, if it was already owned).
    pub fn into_vec(self) -> Vec<u8> {
        match self.repr {
            Repr::Owned(v) => v,
            Repr::Mapped { .. } => self.as_slice().to_vec(),
        }
    }

    /// Copies the value out.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }
}

impl Deref for ValueRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for ValueRef<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq<[u8]> for ValueRef<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for ValueRef<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for ValueRef<'_> {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for ValueRef<'_> {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for ValueRef<'_> {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl PartialEq for ValueRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueRef").field(&self.as_slice()).finish()
    }
}
