//! Every change the engine makes to the file system outside the log path:
//! directories, new files, renames, removals, and the writes and syncs of
//! segment headers, the manifest, hint files and the lock file.
//!
//! Two rules hold for every call site, and this module is where they live:
//! - **Owner-only, exclusive creation.** New files are created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600, new directories with mode
//!   0700 (the umask can only narrow them). An existing entry, a symlink
//!   included, is never followed, truncated or overwritten in place: creation
//!   fails with `AlreadyExists` and a message naming the path.
//! - **A directory entry is durable only after its directory is fsynced.**
//!   Callers pair every create, rename and remove with [`Files::sync_dir`]
//!   before they rely on the entry (ARCHITECTURE.md has the table of which
//!   fsync covers which operation). [`Files::create_dir_all`] syncs the parent
//!   of every directory it creates.
//!
//! With the `fault-injection` feature a [`FaultPlan`](super::fault::FaultPlan)
//! can watch every call, so that its power-loss model knows which directory
//! entries and which bytes were durable; without it these are plain system
//! calls.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every file emdb creates.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory emdb creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// The file-system operations of one database (cheap to clone).
#[derive(Clone, Default)]
pub(crate) struct Files {
    #[cfg(feature = "fault-injection")]
    plan: Option<super::fault::FaultPlan>,
    /// The database is opened read-only: every change is refused, and
    /// existing files are opened for reading only.
    read_only: bool,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Files")
    }
}

/// Runs `$body` against the fault plan, if there is one.
macro_rules! with_plan {
    ($self:ident, |$p:ident| $body:expr) => {{
        #[cfg(feature = "fault-injection")]
        if let Some($p) = &$self.plan {
            $body;
        }
    }};
}

impl Files {
    /// Plain system calls, watched by `plan` when there is one.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn watched(plan: Option<super::fault::FaultPlan>) -> Files {
        Files {
            plan,
            read_only: false,
        }
    }

    /// These operations, refusing every change (a read-only open).
    pub(crate) fn read_only(mut self, on: bool) -> Files {
        self.read_only = on;
        self
    }

    /// `Err` when the database is opened read-only: the last guard that
    /// keeps such an open from changing a byte.
    #[inline]
    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::ReadOnlyFilesystem,
                "the database is opened read-only",
            ));
        }
        Ok(())
    }

    /// Gives the fault plan (feature `fault-injection`) a chance to fail a
    /// file change outside the backends. Free without the feature or a plan.
    #[inline]
    pub(crate) fn fault_point(&self, point: super::FaultPoint) -> io::Result<()> {
        with_plan!(self, |plan| plan.at(point)?);
        let _ = point;
        Ok(())
    }

    /// `io` itself, or wrapped by the fault plan if there is one.
    pub(crate) fn wrap_backend(&self, io: Box<dyn super::Io>) -> Box<dyn super::Io> {
        #[cfg(feature = "fault-injection")]
        if let Some(plan) = &self.plan {
            return Box::new(super::fault::FaultIo {
                inner: io,
                plan: plan.clone(),
            });
        }
        io
    }

    /// Creates `dir` and every missing ancestor, each with mode 0700, and
    /// makes each new entry durable by syncing its parent. An existing
    /// directory is left as it is.
    pub(crate) fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.writable()?;
        // The ancestors that do not exist yet, outermost first.
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(p) = at {
            if p.as_os_str().is_empty() {
                break;
            }
            match fs::symlink_metadata(p) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(p),
                Err(e) => return Err(e),
            }
            at = p.parent();
        }
        for p in missing.into_iter().rev() {
            with_plan!(self, |plan| plan.fs_check()?);
            match fs::DirBuilder::new().mode(DIR_MODE).create(p) {
                Ok(()) => {}
                // Created by someone else meanwhile: theirs to make durable,
                // but syncing the parent below costs little and covers it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(e),
            }
            let parent = match p.parent() {
                Some(q) if !q.as_os_str().is_empty() => q,
                _ => Path::new("."),
            };
            self.sync_dir(parent)?;
        }
        Ok(())
    }

    /// Creates a new, empty file for reading and writing, exclusively, with
    /// mode 0600. Never follows or reuses an existing entry.
    pub(crate) fn create_new(&self, path: &Path) -> io::Result<File> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_check()?);
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        match made {
            Ok(f) => {
                with_plan!(self, |plan| plan.fs_created_file(&f));
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; emdb creates its files exclusively and will not \
                     follow or overwrite an entry it did not create (remove it if it does \
                     not belong to this database)",
                    path.display()
                ),
            )),
            Err(e) => Err(e),
        }
    }

    /// Opens an existing file of the database for reading and writing
    /// (reading only in a read-only open), without following a symlink.
    pub(crate) fn open_rw(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(!self.read_only)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    }

    /// Opens the file at `path`, creating it (mode 0600) if it is missing.
    /// Never follows a symlink. Returns whether it was created.
    pub(crate) fn open_or_create(&self, path: &Path) -> io::Result<(File, bool)> {
        loop {
            match self.open_rw(path) {
                Ok(f) => return Ok((f, false)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match self.create_new(path) {
                Ok(f) => return Ok((f, true)),
                // Created by another opener meanwhile: open theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_write(file, offset, buf)?);
        file.write_all_at(buf, offset)
    }

    /// Sets the length of `file` (the lock file's text is rewritten so).
    pub(crate) fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_set_len(file, len)?);
        file.set_len(len)
    }

    /// `fdatasync`: the file's data and size are durable afterwards (its
    /// directory entry is not; see [`Files::sync_dir`]). Never retried.
    pub(crate) fn sync_data(&self, file: &File) -> io::Result<()> {
        self.writable()?;
        #[cfg(feature = "fault-injection")]
        let stamp = match &self.plan {
            Some(plan) => Some(plan.fs_sync_begin()?),
            None => None,
        };
        use std::os::fd::AsRawFd;
        super::fdatasync(file.as_raw_fd())?;
        #[cfg(feature = "fault-injection")]
        if let (Some(plan), Some(stamp)) = (&self.plan, stamp) {
            plan.fs_sync_end(file, stamp)?;
        }
        Ok(())
    }

    /// Allocates `len` bytes for `file` (zeros), or extends it sparsely where
    /// the file system has no `fallocate`.
    pub(crate) fn preallocate(&self, file: &File, len: u64) -> io::Result<()> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_check()?);
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on a descriptor we own has no memory effects.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(len),
            _ => Err(e),
        }
    }

    /// Renames `from` over `to` (atomic; durable after `sync_dir` of the
    /// directory). If `to` exists, `from` first takes its permission bits,
    /// so a file the owner opened up to others stays so when replaced.
    pub(crate) fn replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_check()?);
        match fs::symlink_metadata(to) {
            Ok(m) if m.is_file() => {
                let mode = m.permissions().mode() & 0o7777;
                if mode != FILE_MODE {
                    fs::set_permissions(from, fs::Permissions::from_mode(mode))?;
                }
            }
            _ => {}
        }
        let rename = || fs::rename(from, to);
        #[cfg(feature = "fault-injection")]
        if let Some(plan) = &self.plan {
            return plan.fs_unlinking(to, rename);
        }
        rename()
    }

    /// Writes `bytes` durably to a new file `tmp` (a stale one is removed
    /// first, never opened: a symlink's target stays untouched) and renames
    /// it over `path`. Atomic; durable once the caller syncs the directory.
    pub(crate) fn write_replace(&self, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.writable()?;
        self.remove(tmp)?;
        let f = self.create_new(tmp)?;
        self.write_at(&f, bytes, 0)?;
        self.sync_data(&f)?;
        drop(f);
        self.replace(tmp, path)
    }

    /// Swaps two directories of one parent atomically
    /// (`renameat2(RENAME_EXCHANGE)`); durable after `sync_dir` of the
    /// parent. Fails with the OS error where the file system lacks it.
    #[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
    pub(crate) fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.writable()?;
        let op = || exchange_dirs(a, b);
        #[cfg(feature = "fault-injection")]
        if let Some(plan) = &self.plan {
            return plan.fs_exchanging(a, b, op);
        }
        op()
    }

    /// Removes the directory tree at `p` (missing is fine), its files
    /// through [`remove`](Files::remove). Durable after `sync_dir` of the
    /// parent.
    pub(crate) fn remove_tree(&self, p: &Path) -> io::Result<()> {
        self.writable()?;
        let entries = match fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            if e.file_type()?.is_dir() {
                self.remove_tree(&e.path())?;
            } else {
                self.remove(&e.path())?;
            }
        }
        with_plan!(self, |plan| plan.fs_check()?);
        match fs::remove_dir(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the file at `path` (a symlink itself, never its target).
    /// Missing is not an error. Durable after `sync_dir` of the directory.
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        self.writable()?;
        with_plan!(self, |plan| plan.fs_check()?);
        let remove = || match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        #[cfg(feature = "fault-injection")]
        if let Some(plan) = &self.plan {
            return plan.fs_unlinking(path, remove);
        }
        remove()
    }

    /// Makes the entries of `dir` (files created, renamed or removed in it)
    /// durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.writable()?;
        #[cfg(feature = "fault-injection")]
        let before = match &self.plan {
            Some(plan) => Some(plan.fs_sync_dir_begin(dir)?),
            None => None,
        };
        File::open(dir)?.sync_all()?;
        #[cfg(feature = "fault-injection")]
        if let (Some(plan), Some(before)) = (&self.plan, before) {
            plan.fs_synced_dir(before)?;
        }
        Ok(())
    }

    /// A database at `dir` is about to be opened (or created): lets a fault
    /// plan learn where its directory model starts.
    pub(crate) fn opening(&self, dir: &Path) {
        with_plan!(self, |plan| plan.fs_opening(dir));
        let _ = dir;
    }
}

/// `renameat2(a, b, RENAME_EXCHANGE)`.
#[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
fn exchange_dirs(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
