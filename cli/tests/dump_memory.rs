//! `emdb dump` streams: dumping 1M records costs no more memory than
//! opening the database does. Peak resident memory (from `wait4`) of
//! `emdb dump` is compared with that of `emdb stats` on the same database:
//! the open (its index, and the log pages recovery read) is common to both,
//! and the dump may add only its snapshot of record locations (8 bytes a
//! record) and its buffers. Collecting the output before writing it would
//! add more than the output's own size (about 30 MB here).
//!
//! A test binary of its own, so no other test's children run meanwhile.

use std::path::Path;
use std::process::{Command, Stdio};

const RECORDS: u64 = 1_000_000;
/// What the dump may add to the open's peak: the location snapshot (8 MB)
/// and slack for allocator behaviour, well under the output's size.
const MARGIN_BYTES: u64 = 24 << 20;

/// Runs `emdb args`, stdout discarded, and returns its peak RSS in bytes.
// The child is reaped by wait4, which also gives its rusage.
#[allow(clippy::zombie_processes)]
fn peak_rss(args: &[&str]) -> u64 {
    let child = Command::new(env!("CARGO_BIN_EXE_emdb"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run emdb");
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for this child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a child of ours, a valid status and rusage pointer.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(r, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "emdb {args:?} failed: {status}"
    );
    ru.ru_maxrss as u64 * 1024
}

fn fill(dir: &Path) {
    let db = emdb::Emdb::builder().path(dir).build().unwrap();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..RECORDS {
        batch.push((format!("key:{i:012}"), format!("value-{i:08}")));
        if batch.len() == 10_000 {
            db.insert_many(batch.drain(..)).unwrap();
        }
    }
    db.close().unwrap();
}

#[test]
fn dump_of_a_million_records_stays_bounded() {
    let d = tempfile::tempdir().unwrap();
    fill(d.path());
    let path = d.path().to_str().unwrap();
    let open = peak_rss(&["stats", path]);
    for format in ["tsv", "json"] {
        let dump = peak_rss(&["dump", path, "--format", format]);
        eprintln!(
            "peak RSS: stats {} MiB, dump --format {format} {} MiB",
            open >> 20,
            dump >> 20
        );
        assert!(
            dump <= open + MARGIN_BYTES,
            "dump --format {format} peaked at {dump} bytes, the open alone at {open}"
        );
    }
}
