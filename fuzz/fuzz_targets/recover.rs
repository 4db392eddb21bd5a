//! Recovery of a database directory built from the input: frames of every
//! kind with good checksums, then damaged, plus hint files and a manifest.
//! The open may fail with an error but not panic; an opened database must
//! read consistently, take a write and reopen to the same contents. See
//! `emdb::fuzz_api::recover_from_bytes`; an input whose first byte is odd
//! goes to `recover_encrypted_from_bytes` instead.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a plaintext image built frame by frame, or an
    // encrypted database written through the engine and then damaged.
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => {
            emdb::fuzz_api::recover_encrypted_from_bytes(rest);
        }
        _ => {
            emdb::fuzz_api::recover_from_bytes(data);
        }
    }
});
