//! The decoders of frames, segment headers, manifests and hint files on
//! arbitrary bytes (raw, or a valid image built from the input and then
//! damaged): see `emdb::fuzz_api::fuzz_decode`. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    emdb::fuzz_api::fuzz_decode(data);
});
