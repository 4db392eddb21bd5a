//! Recovery of a database directory built from the input: frames of every
//! kind with good checksums, then damaged, plus hint files and a manifest.
//! The open may fail with an error but not panic; an opened database must
//! read consistently, take a write and reopen to the same contents. See
//! `emdb::fuzz_api::recover_from_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    emdb::fuzz_api::recover_from_bytes(data);
});
