//! The database lock: one process at a time, within a process one open at a
//! time, `lock_holder` / `break_lock`, and recovery of the lock after the
//! holder is killed with SIGKILL.
//!
//! Other processes are this test binary re-executed
//! (`std::env::current_exe()`) with `EMDB_LOCK_TEST_ROLE` naming what the child
//! does; it reports on stdout in lines starting with `EMDB_CHILD `.
//! `EMDB_IO_BACKEND=uring|portable cargo test --test lock`.

use emdb::{Emdb, Error, LockHolder};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROLE_ENV: &str = "EMDB_LOCK_TEST_ROLE";
const DIR_ENV: &str = "EMDB_LOCK_TEST_DIR";
const PREFIX: &str = "EMDB_CHILD ";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn kind(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "Ok".to_string(),
        Err(Error::LockBusy { .. }) => "LockBusy".to_string(),
        Err(e) => format!("Err:{e:?}"),
    }
}

fn report(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PREFIX}{line}").unwrap();
    out.flush().unwrap();
}

/// What a child process does; returns normally only for roles that end by themselves.
fn child_main(role: &str, dir: &Path) {
    match role {
        // Try the lock held by the parent.
        "probe" => {
            let r = Emdb::open(dir).map(|_| ());
            report(&format!("open={}", kind(&r)));
            let r = Emdb::builder().path(dir).build().map(|_| ());
            report(&format!("build={}", kind(&r)));
            match Emdb::lock_holder(dir) {
                Ok(Some(h)) => report(&format!("holder={}", h.pid)),
                Ok(None) => report("holder=none"),
                Err(e) => report(&format!("holder=Err:{e:?}")),
            }
            let r = Emdb::break_lock(dir);
            report(&format!("break={}", kind(&r)));
            let r = Emdb::open(dir).map(|_| ());
            report(&format!("open_after_break={}", kind(&r)));
        }
        // Open, write, flush, report, then more writes without a flush, report,
        // and wait to be killed.
        "hold" => {
            let db = Emdb::open(dir).expect("child open");
            for i in 0..500 {
                db.insert(format!("flushed-{i}"), format!("value-{i}"))
                    .expect("insert");
            }
            db.flush().expect("flush");
            report(&format!("flushed pid={}", std::process::id()));
            for i in 0..500 {
                db.insert(format!("unflushed-{i}"), format!("value-{i}"))
                    .expect("insert");
            }
            report("unflushed-written");
            // Wait to be killed; give up after a while so that an orphan does not linger.
            thread::sleep(Duration::from_secs(300));
            std::process::exit(3);
        }
        other => panic!("unknown child role {other}"),
    }
}

fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some((
        role,
        PathBuf::from(std::env::var(DIR_ENV).expect("dir env")),
    ))
}

struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl ChildProc {
    fn spawn(test_name: &str, role: &str, dir: &Path) -> ChildProc {
        let mut child = Command::new(std::env::current_exe().expect("current_exe"))
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(DIR_ENV, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = after_marker(&line, PREFIX) {
                    if tx.send(rest.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let s2 = stderr.clone();
        thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr_pipe.read_to_string(&mut buf);
            s2.lock().unwrap().push_str(&buf);
        });
        ChildProc {
            child,
            lines: rx,
            stderr,
        }
    }

    /// The next report line; a hang guard (not a timing assertion) fails the test
    /// if the child says nothing for two minutes.
    fn next(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "child reported nothing more; its stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
        }
    }

    fn expect(&mut self, key: &str) -> String {
        let l = self.next();
        match l.strip_prefix(&format!("{key}=")) {
            Some(v) => v.to_string(),
            None => panic!(
                "expected {key}=..., child said {l:?}; stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }

    fn wait_success(mut self) {
        let st = self.child.wait().expect("wait child");
        thread::sleep(Duration::from_millis(50));
        assert!(
            st.success(),
            "child failed: {st:?}\n{}",
            self.stderr.lock().unwrap()
        );
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL child");
        let st = self.child.wait().expect("wait child");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(9),
            "child was not killed by SIGKILL: {st:?}"
        );
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_holder_is(h: &LockHolder, pid: u32, before_ms: u64, ctx: &str) {
    assert_eq!(h.pid, pid, "{ctx}: lock holder pid");
    let after = now_millis();
    assert!(
        h.acquired_at_unix_millis + 60_000 >= before_ms
            && h.acquired_at_unix_millis <= after + 60_000,
        "{ctx}: acquired_at_unix_millis {} not within the test's run ({before_ms}..{after})",
        h.acquired_at_unix_millis
    );
    if let Some(v) = &h.crate_version {
        assert_eq!(v, env!("CARGO_PKG_VERSION"), "{ctx}: crate_version");
    }
}

#[test]
fn second_process_gets_lock_busy_while_we_hold_the_database() {
    const NAME: &str = "second_process_gets_lock_busy_while_we_hold_the_database";
    if let Some((role, dir)) = child_role() {
        child_main(&role, &dir);
        return;
    }
    let t = tmp();
    let dir = t.path().join("db");
    let before = now_millis();
    let db = Emdb::open(&dir).expect("open");
    db.insert("parent", "p").unwrap();
    db.flush().unwrap();

    let mut child = ChildProc::spawn(NAME, "probe", &dir);
    assert_eq!(
        child.expect("open"),
        "LockBusy",
        "Emdb::open in a second process"
    );
    assert_eq!(
        child.expect("build"),
        "LockBusy",
        "builder open in a second process"
    );
    assert_eq!(
        child.expect("holder"),
        std::process::id().to_string(),
        "lock_holder seen from the other process"
    );
    assert_eq!(
        child.expect("break"),
        "LockBusy",
        "break_lock from another process while we are alive"
    );
    assert_eq!(
        child.expect("open_after_break"),
        "LockBusy",
        "refused break_lock must leave the lock in place"
    );
    child.wait_success();

    // Our handle is unaffected.
    assert_eq!(db.get("parent").unwrap(), Some(b"p".to_vec()));
    db.insert("still-writable", "w").unwrap();
    db.flush().unwrap();
    let h = Emdb::lock_holder(&dir).unwrap().expect("holder while open");
    assert_holder_is(&h, std::process::id(), before, "after the probe");
}

#[test]
fn lock_holder_reports_our_pid_while_open_and_none_after_close() {
    let t = tmp();
    let dir = t.path().join("db");
    assert!(
        matches!(Emdb::lock_holder(&dir), Ok(None) | Err(Error::Io(_))),
        "lock_holder on a path that was never opened"
    );
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        matches!(Emdb::lock_holder(&dir), Ok(None)),
        "lock_holder on an empty directory"
    );
    let before = now_millis();
    let db = Emdb::open(&dir).expect("open");
    let h = Emdb::lock_holder(&dir).unwrap().expect("holder while open");
    assert_holder_is(&h, std::process::id(), before, "while open");
    drop(db);
    let h = Emdb::lock_holder(&dir).unwrap();
    assert!(
        h.is_none(),
        "nobody holds the lock after close, lock_holder says {h:?}"
    );
}

#[test]
fn break_lock_on_a_live_holder_is_refused() {
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::open(&dir).expect("open");
    db.insert("k", "v").unwrap();
    let r = Emdb::break_lock(&dir);
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "break_lock on our own live lock: {r:?}"
    );
    // Nothing changed: still ours, still exclusive, still writable.
    let h = Emdb::lock_holder(&dir)
        .unwrap()
        .expect("holder after refused break");
    assert_eq!(h.pid, std::process::id());
    assert!(
        matches!(Emdb::open(&dir), Err(Error::LockBusy { .. })),
        "refused break_lock released the lock"
    );
    db.insert("k2", "v2").unwrap();
    db.flush().unwrap();
    drop(db);
    let db = Emdb::open(&dir).expect("reopen");
    assert_eq!(db.get("k2").unwrap(), Some(b"v2".to_vec()));
}

#[test]
fn opening_the_same_path_twice_in_one_process_is_lock_busy() {
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::open(&dir).expect("open");
    match Emdb::open(&dir) {
        Err(Error::LockBusy { path }) => {
            assert!(
                path.starts_with(&dir)
                    || dir.starts_with(&path)
                    || path.canonicalize().ok() == dir.canonicalize().ok(),
                "LockBusy names {} for {}",
                path.display(),
                dir.display()
            );
        }
        other => panic!("second open in the same process: {:?}", other.err()),
    }
    let r = Emdb::builder().path(&dir).build();
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "builder open: {:?}",
        r.err()
    );
    // Another spelling of the same directory is the same database.
    let other_spelling = t.path().join(".").join("db");
    let r = Emdb::open(&other_spelling);
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "open via {}: {:?}",
        other_spelling.display(),
        r.err()
    );
    // A clone holds the database after the original handle is dropped.
    let clone = db.clone_handle();
    drop(db);
    assert!(
        matches!(Emdb::open(&dir), Err(Error::LockBusy { .. })),
        "open while a clone lives"
    );
    drop(clone);
    let db = Emdb::open(&dir).expect("open after every handle dropped");
    db.insert("k", "v").unwrap();
}

#[test]
fn reopen_after_drop_succeeds_repeatedly() {
    let t = tmp();
    let dir = t.path().join("db");
    for i in 0..10 {
        let db = Emdb::open(&dir).unwrap_or_else(|e| panic!("open #{i}: {e:?}"));
        assert_eq!(db.len().unwrap(), i);
        db.insert(format!("k{i}"), "v").unwrap();
    }
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), 10);
}

fn check_after_kill(dir: &Path) {
    let db = Emdb::open(dir).expect("open after the holder was killed");
    for i in 0..500 {
        assert_eq!(
            db.get(format!("flushed-{i}")).unwrap(),
            Some(format!("value-{i}").into_bytes()),
            "flushed-{i} was flushed before kill -9 but is missing"
        );
    }
    for i in 0..500 {
        let v = db.get(format!("unflushed-{i}")).unwrap();
        assert!(
            v.is_none() || v == Some(format!("value-{i}").into_bytes()),
            "unflushed-{i} has a wrong value"
        );
    }
    let h = Emdb::lock_holder(dir)
        .unwrap()
        .expect("holder after our open");
    assert_eq!(
        h.pid,
        std::process::id(),
        "lock_holder after we took over the lock"
    );
    assert!(
        matches!(Emdb::break_lock(dir), Err(Error::LockBusy { .. })),
        "break_lock on our live lock"
    );
    db.insert("parent-after-kill", "x").unwrap();
    db.flush().unwrap();
    drop(db);
    let db = Emdb::open(dir).expect("reopen");
    assert_eq!(db.get("parent-after-kill").unwrap(), Some(b"x".to_vec()));
}

#[test]
fn killed_holder_releases_the_lock_and_keeps_flushed_data() {
    const NAME: &str = "killed_holder_releases_the_lock_and_keeps_flushed_data";
    if let Some((role, dir)) = child_role() {
        child_main(&role, &dir);
        return;
    }
    let t = tmp();
    let dir = t.path().join("db");
    let mut child = ChildProc::spawn(NAME, "hold", &dir);
    let child_pid = child.child.id();
    assert_eq!(child.expect("flushed pid"), child_pid.to_string());
    assert_eq!(child.next(), "unflushed-written");

    // While the child lives it holds the lock.
    let r = Emdb::open(&dir);
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "open while the child holds the lock: {:?}",
        r.err()
    );
    let h = Emdb::lock_holder(&dir)
        .unwrap()
        .expect("holder while the child lives");
    assert_eq!(h.pid, child_pid, "lock_holder names the child");
    let r = Emdb::break_lock(&dir);
    assert!(
        matches!(r, Err(Error::LockBusy { .. })),
        "break_lock while the holder lives: {r:?}"
    );

    child.kill_9();

    // The holder is dead: lock_holder may still name it (stale record) or say nobody.
    match Emdb::lock_holder(&dir).unwrap() {
        None => {}
        Some(h) => assert_eq!(h.pid, child_pid, "stale lock record names another process"),
    }
    // The OS released the lock with the process: no break_lock needed.
    check_after_kill(&dir);
}

#[test]
fn break_lock_after_the_holder_was_killed_succeeds() {
    const NAME: &str = "break_lock_after_the_holder_was_killed_succeeds";
    if let Some((role, dir)) = child_role() {
        child_main(&role, &dir);
        return;
    }
    let t = tmp();
    let dir = t.path().join("db");
    let mut child = ChildProc::spawn(NAME, "hold", &dir);
    let child_pid = child.child.id();
    assert_eq!(child.expect("flushed pid"), child_pid.to_string());
    assert_eq!(child.next(), "unflushed-written");
    child.kill_9();

    let r = Emdb::break_lock(&dir);
    assert!(r.is_ok(), "break_lock on a dead holder: {r:?}");
    let h = Emdb::lock_holder(&dir).unwrap();
    assert!(
        h.is_none(),
        "after break_lock nobody holds the lock, lock_holder says {h:?}"
    );
    check_after_kill(&dir);
}

#[test]
fn a_child_holding_the_lock_blocks_us_until_it_dies() {
    const NAME: &str = "a_child_holding_the_lock_blocks_us_until_it_dies";
    if let Some((role, dir)) = child_role() {
        child_main(&role, &dir);
        return;
    }
    let t = tmp();
    let dir = t.path().join("db");
    let mut child = ChildProc::spawn(NAME, "hold", &dir);
    let child_pid = child.child.id();
    child.expect("flushed pid");
    // Repeated attempts while it lives are all refused, and do not disturb it.
    for _ in 0..5 {
        assert!(matches!(Emdb::open(&dir), Err(Error::LockBusy { .. })));
        assert_eq!(
            Emdb::lock_holder(&dir).unwrap().map(|h| h.pid),
            Some(child_pid)
        );
    }
    assert_eq!(child.next(), "unflushed-written");
    child.kill_9();
    let db = Emdb::open(&dir).expect("open after the child died");
    assert_eq!(db.get("flushed-499").unwrap(), Some(b"value-499".to_vec()));
}

/// The text after `marker` in a line of child output. libtest may print
/// `test NAME ... ` in front of the child's first line, so the marker is
/// searched anywhere in the line.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}
