//! On-disk structures: frames, segment files, the manifest and hint files.

pub(crate) mod frame;
pub(crate) mod hint;
pub(crate) mod manifest;
pub(crate) mod segment;
pub(crate) mod segtable;
