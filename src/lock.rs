//! The lock file: an OS advisory lock (`flock`) on `<db>/LOCK`, which also
//! records who holds it. The kernel drops the lock when its holder exits,
//! `kill -9` included.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::io::Files;

const FILE: &str = "LOCK";
/// How long `open` keeps trying a held lock before `Error::LockBusy`.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// Who holds a database's lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    /// Process id of the holder.
    pub pid: u32,
    /// When it took the lock, Unix milliseconds.
    pub acquired_at_unix_millis: u64,
    /// emdb version of the holder, if it wrote one.
    pub crate_version: Option<String>,
}

pub(crate) struct LockFile {
    _file: File,
}

fn try_flock(f: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own has no memory effects.
        let r = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// [`try_flock`] for up to `LOCK_RETRY`: a lock released a moment ago can
/// still be held by a child process another thread is spawning (it shares
/// the holder's open file descriptions until its exec).
fn retry_flock(f: &File, op: libc::c_int) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        if try_flock(f, op)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

impl LockFile {
    /// Takes the lock of `dir` or fails with `LockBusy`. Another handle of
    /// the same process counts as another holder.
    pub(crate) fn acquire(files: &Files, dir: &Path) -> Result<LockFile> {
        let path = dir.join(FILE);
        // Never through a symlink; a new file is 0600 and its entry is made
        // durable at once.
        let (file, created) = files.open_or_create(&path)?;
        if created {
            files.sync_dir(dir)?;
        }
        // Retried briefly before the database is called busy (see
        // `retry_flock`).
        if !retry_flock(&file, libc::LOCK_EX)? {
            return Err(Error::LockBusy {
                path: dir.to_path_buf(),
            });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let text = format!(
            "pid={}\nacquired_at_unix_millis={}\ncrate_version={}\n",
            std::process::id(),
            now,
            env!("CARGO_PKG_VERSION")
        );
        files.set_len(&file, 0)?;
        files.write_at(&file, text.as_bytes(), 0)?;
        Ok(LockFile { _file: file })
    }
}

impl LockFile {
    /// Takes the lock of `dir` shared, for a read-only open: without
    /// creating or writing the lock file. `None` when there is no lock file
    /// (a database never opened for writing, such as a backup); `LockBusy`
    /// while a writer holds it.
    pub(crate) fn acquire_shared(dir: &Path) -> Result<Option<LockFile>> {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(FILE))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !retry_flock(&file, libc::LOCK_SH)? {
            return Err(Error::LockBusy {
                path: dir.to_path_buf(),
            });
        }
        Ok(Some(LockFile { _file: file }))
    }
}

fn parse(text: &str) -> LockHolder {
    let mut h = LockHolder {
        pid: 0,
        acquired_at_unix_millis: 0,
        crate_version: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("pid", v)) => h.pid = v.trim().parse().unwrap_or(0),
            Some(("acquired_at_unix_millis", v)) => {
                h.acquired_at_unix_millis = v.trim().parse().unwrap_or(0)
            }
            Some(("crate_version", v)) => h.crate_version = Some(v.trim().to_string()),
            _ => {}
        }
    }
    h
}

fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The current holder of the lock of `dir`, or `None` if nobody holds it.
pub(crate) fn holder(dir: &Path) -> Result<Option<LockHolder>> {
    let path = dir.join(FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if retry_flock(&file, libc::LOCK_SH)? {
        // Nobody holds it (our shared lock is released when `file` drops).
        return Ok(None);
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(Some(parse(&text)))
}

/// Removes a stale lock (held by a descriptor whose recorded owner is
/// gone). Refuses with `LockBusy` while the recorded holder is alive and
/// still holds the lock, or while read-only handles hold it. A lock nobody
/// holds is left in place: there is nothing to break.
pub(crate) fn break_lock(dir: &Path) -> Result<()> {
    let path = dir.join(FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if retry_flock(&file, libc::LOCK_EX)? {
        // Held by nobody: nothing to break. The file stays, so read-only
        // opens keep a lock to share.
        return Ok(());
    }
    if try_flock(&file, libc::LOCK_SH)? {
        // Only shared holders: read-only handles, which are alive.
        return Err(Error::LockBusy {
            path: dir.to_path_buf(),
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    if pid_alive(parse(&text).pid) {
        return Err(Error::LockBusy {
            path: dir.to_path_buf(),
        });
    }
    // Held by a descriptor whose recorded owner is gone (inherited by a
    // child, say): unlinking makes the next open create and lock a fresh
    // file.
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}
