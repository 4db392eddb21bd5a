//! Operation sequences with reopens and injected write and sync faults,
//! checked against a `BTreeMap` model. The interpreter is shared with the
//! seeded property test `tests/fault_model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/ops_model.rs"]
#[allow(dead_code)]
mod ops_model;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    if let Err(msg) = ops_model::run(data, dir.path()) {
        panic!("emdb disagrees with the model: {msg}");
    }
});
