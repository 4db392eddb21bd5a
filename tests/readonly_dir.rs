//! A directory the process may not write to. Root writes through permission
//! bits, so when the tests run as root (as in CI) the checks run in a child
//! process (this test binary, copied where anyone may run it) that drops to
//! the `nobody` user; as any other user they run in-process.
//!
//! 1. `open` in a read-only, empty directory is a clear `Error::Io`
//!    (permission denied), not a panic.
//! 2. An existing database whose files are writable but whose directory is
//!    not: it opens with everything, takes writes while its segments have
//!    room, gets `Error::Io` (permission denied) for the write that needs a
//!    new segment file, keeps everything acknowledged, and stays readable.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use emdb::{Emdb, Error};

const CHILD: &str = "EMDB_RO_CHILD";
const NOBODY: u32 = 65534;

fn builder(path: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(path)
        .shards(1)
        .segment_size(256 * 1024)
        .max_key_len(256)
        .max_value_len(4096)
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(1000, b'a' + (i % 26) as u8);
    v
}

fn is_permission_denied(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied)
}

/// Case 1, as an unprivileged user.
fn new_database_in_read_only_dir(dir: &Path) {
    match builder(dir).build() {
        Err(e) => assert!(
            is_permission_denied(&e),
            "expected permission denied, got {e:?}"
        ),
        Ok(_) => panic!("opened a database in a read-only directory"),
    }
    let sub = dir.join("db");
    match builder(&sub).build() {
        Err(e) => assert!(
            is_permission_denied(&e),
            "expected permission denied, got {e:?}"
        ),
        Ok(_) => panic!("created a database under a read-only directory"),
    }
    assert!(!sub.exists());
}

/// Case 2, as an unprivileged user: `db` holds keys `pre-0..100`.
fn existing_database_in_read_only_dir(db: &Path) {
    let h = builder(db).build().expect("an existing database opens");
    for i in 0..100 {
        assert_eq!(
            h.get(format!("pre-{i:04}")).expect("get").as_deref(),
            Some(&value(i)[..]),
            "pre-{i:04}"
        );
    }
    let mut acked = 0;
    let mut err = None;
    for i in 0..2000 {
        if let Err(e) = h
            .insert(format!("new-{i:04}"), value(i))
            .and_then(|()| h.flush())
        {
            err = Some(e);
            break;
        }
        acked = i + 1;
    }
    let err = err.expect("the write needing a new segment file must fail");
    assert!(is_permission_denied(&err), "got {err:?}");
    assert!(acked > 10, "only {acked} writes before the failure");
    for i in 0..acked {
        assert!(h.get(format!("new-{i:04}")).expect("get").is_some());
    }
    assert_eq!(h.len().expect("len"), 100 + acked);
    println!("acked {acked}");
}

fn prepare(base: &Path) -> (PathBuf, PathBuf) {
    let empty = base.join("empty");
    fs::create_dir(&empty).expect("mkdir");
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o555)).expect("chmod");
    let db = base.join("db");
    {
        let h = builder(&db).build().expect("create");
        for i in 0..100 {
            h.insert(format!("pre-{i:04}"), value(i)).expect("insert");
        }
        h.flush().expect("flush");
    }
    (empty, db)
}

fn run_child(exe: &Path, case: &str, path: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let out = Command::new(exe)
        .args([
            "--exact",
            "a_read_only_directory_gives_clear_errors",
            "--nocapture",
        ])
        .env(CHILD, format!("{case}:{}", path.display()))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("spawn child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {case} failed:\n{text}");
    text
}

#[test]
fn a_read_only_directory_gives_clear_errors() {
    if let Ok(role) = std::env::var(CHILD) {
        let (case, path) = role.split_once(':').expect("role");
        match case {
            "new" => new_database_in_read_only_dir(Path::new(path)),
            "existing" => existing_database_in_read_only_dir(Path::new(path)),
            other => panic!("unknown case {other}"),
        }
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let base = t.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).expect("chmod");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (empty, db) = prepare(base);
    if !root {
        new_database_in_read_only_dir(&empty);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o555)).expect("chmod");
        existing_database_in_read_only_dir(&db);
        fs::set_permissions(&db, fs::Permissions::from_mode(0o755)).expect("chmod");
    } else {
        // The child runs a copy of this binary that `nobody` may execute,
        // on files `nobody` owns, in a directory only root may write.
        let exe = base.join("test-bin");
        fs::copy(std::env::current_exe().expect("exe"), &exe).expect("copy exe");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
        run_child(&exe, "new", &empty);
        for e in fs::read_dir(&db).expect("read_dir") {
            let p = e.expect("entry").path();
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        fs::set_permissions(&db, fs::Permissions::from_mode(0o555)).expect("chmod");
        let out = run_child(&exe, "existing", &db);
        assert!(out.contains("acked "), "child output:\n{out}");
        fs::set_permissions(&db, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Back with write permission: everything acknowledged is there, and
    // writes work again.
    let h = builder(&db).build().expect("reopen");
    for i in 0..100 {
        assert!(h.get(format!("pre-{i:04}")).expect("get").is_some());
    }
    let new = (0..2000)
        .take_while(|i| h.get(format!("new-{i:04}")).expect("get").is_some())
        .count();
    assert!(
        new > 10,
        "the writes acknowledged in the read-only directory are gone"
    );
    h.insert("after", "x").expect("insert");
    h.flush().expect("flush");
}
