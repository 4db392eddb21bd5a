//! The power-loss model: which directory entries, bytes and sizes a
//! restart would find, and [`FaultPlan::durable_image`], which builds that
//! directory. See the parent module for what is recorded and when.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{eio, record_write, settle_sync, FaultPlan, SECTOR};

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    /// A file, by its plan-wide id (see `Namespace::ids`).
    File(u64),
}

/// The directory-entry model: a directory's durable entries are the ones
/// it had at its last completed fsync, or when the model first saw it
/// (it existed before tracking began, and is taken as durable as it was).
/// A directory created since has no durable entries until it is synced, and
/// is itself durable only once its parent was synced after its creation.
/// The model reads the real listing at each sync, so an entry the engine
/// changed behind `Files`'s back is still judged by the syncs that followed.
#[derive(Debug, Default)]
pub(super) struct Namespace {
    /// Plan-wide id of each live file by (device, inode). An inode that lost
    /// its last name is forgotten, so a reused inode number gets a new id.
    ids: HashMap<(u64, u64), u64>,
    next_file: u64,
    /// Durable entries of every directory the model follows.
    dirs: HashMap<PathBuf, BTreeMap<OsString, Node>>,
    /// Durable size of files created since tracking began: their size at
    /// their last completed sync (0 before one).
    pub(super) durable_len: HashMap<u64, u64>,
    /// Bytes of files that lost their last name, for durable entries that
    /// may still name them.
    retired: HashMap<u64, Vec<u8>>,
    /// Directories swapped by `renameat2(RENAME_EXCHANGE)`, in order:
    /// (one path, the other, whether a sync of their parent made it
    /// durable). `dirs` follows each directory to its new name at once; until
    /// the swap is durable, a restart finds each name on the other one.
    swaps: Vec<(PathBuf, PathBuf, bool)>,
}

impl Namespace {
    fn id_of(&mut self, meta: &fs::Metadata) -> u64 {
        let key = (meta.dev(), meta.ino());
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        self.next_file += 1;
        self.ids.insert(key, self.next_file);
        self.next_file
    }

    pub(super) fn id_of_file(&mut self, f: &File) -> io::Result<u64> {
        Ok(self.id_of(&f.metadata()?))
    }

    /// The real entries of `dir` now.
    fn listing(&mut self, dir: &Path) -> io::Result<BTreeMap<OsString, Node>> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let meta = fs::symlink_metadata(e.path())?;
            let node = if meta.is_dir() {
                Node::Dir
            } else {
                Node::File(self.id_of(&meta))
            };
            out.insert(e.file_name(), node);
        }
        Ok(out)
    }

    /// The file at `path` loses this name: keep its bytes for durable
    /// entries that may still name it.
    fn unlinking(&mut self, path: &Path) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if !meta.is_file() {
            return;
        }
        let id = self.id_of(&meta);
        if let Ok(bytes) = fs::read(path) {
            self.retired.insert(id, bytes);
        }
        self.ids.remove(&(meta.dev(), meta.ino()));
    }
}

/// What [`FaultPlan::durable_image`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageReport {
    /// The database directory's own entry (or an ancestor's) was never made
    /// durable: the image holds no directory at all.
    pub directory_lost: bool,
    /// Directory entries whose durable state differs from the live one
    /// (created, renamed or removed without a later sync of their directory).
    pub entries_not_durable: u64,
    /// Writes that were not durable at the power loss.
    pub volatile_writes: u64,
    /// Of those, writes the image keeps whole (the disk had written them).
    pub kept: u64,
    /// Writes the image keeps a sector-aligned prefix of.
    pub torn: u64,
    /// Writes the image reverts entirely.
    pub dropped: u64,
    /// Bytes restored to what they held before a volatile write.
    pub bytes_reverted: u64,
}

/// Which volatile writes a durable image keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePolicy {
    /// Only what was made durable: every volatile write is reverted.
    DurableOnly,
    /// Each volatile write independently: reverted (half the time), kept
    /// whole, or torn after a random number of whole sectors. Models a disk
    /// that wrote back some dirty pages, in any order, before the loss.
    Random,
}

/// A directory's entries when its fsync began.
/// Also how many swaps there were then (a sync makes those durable).
pub(crate) struct DirSnapshot(Option<(PathBuf, BTreeMap<OsString, Node>, usize)>);

/// Where an image file's bytes come from.
enum Source {
    Live(PathBuf),
    Retired(u64),
}

impl FaultPlan {
    /// Builds in `out` (must not exist) the directory a restart after the
    /// power loss would find at `live`: the entries `live` had at its last
    /// completed fsync, holding their durable bytes plus the volatile writes
    /// `policy` and `seed` keep. If the entry of `live` itself (or of an
    /// ancestor created since tracking began) was never made durable, a
    /// restart finds no database: `out` is not created and the report says
    /// `directory_lost`. Call once the database is closed (or abandoned)
    /// after [`FaultPlan::power_off`].
    pub fn durable_image(
        &self,
        live: &Path,
        out: &Path,
        policy: ImagePolicy,
        seed: u64,
    ) -> io::Result<ImageReport> {
        let mut st = self.lock();
        if !st.tracking {
            return Err(io::Error::other("durable_image needs track_durable()"));
        }
        let live = fs::canonicalize(live)?;
        // A swap of `live` not yet durable: a restart finds at its name the
        // directory now at the other name (its durable entries and its
        // files followed it there).
        let here = match st
            .ns
            .swaps
            .iter()
            .rev()
            .find(|s| s.0 == live || s.1 == live)
        {
            Some((a, b, false)) => {
                if *a == live {
                    b.clone()
                } else {
                    a.clone()
                }
            }
            _ => live.clone(),
        };
        let mut report = ImageReport::default();
        // The chain from the highest directory the model follows down to
        // `live`: each entry durable in its parent, each directory on the way
        // with durable entries of its own.
        let top = live
            .ancestors()
            .filter(|a| st.ns.dirs.contains_key(*a))
            .last()
            .map(Path::to_path_buf);
        let durable: BTreeMap<OsString, Node> = match top {
            // Not followed at all: taken as durable as it is.
            None => st.ns.listing(&here)?,
            Some(top) => {
                let below: Vec<&Path> = live
                    .ancestors()
                    .take_while(|a| *a != top.as_path())
                    .collect();
                let mut parent = top.clone();
                for dir in below.into_iter().rev() {
                    let name = dir.file_name().unwrap_or_default();
                    let kept = st
                        .ns
                        .dirs
                        .get(&parent)
                        .is_some_and(|d| d.get(name) == Some(&Node::Dir));
                    if !kept {
                        report.directory_lost = true;
                        return Ok(report);
                    }
                    parent = dir.to_path_buf();
                }
                // A directory never synced since its creation has no durable
                // entries.
                st.ns.dirs.get(&here).cloned().unwrap_or_default()
            }
        };
        let now = st.ns.listing(&here)?;
        report.entries_not_durable = now
            .iter()
            .filter(|(n, node)| durable.get(*n) != Some(node))
            .count() as u64
            + durable.keys().filter(|n| !now.contains_key(*n)).count() as u64;
        let live_of: HashMap<u64, OsString> = now
            .iter()
            .filter_map(|(n, node)| match node {
                Node::File(id) => Some((*id, n.clone())),
                Node::Dir => None,
            })
            .collect();
        fs::create_dir(out)?;
        let mut names_of: HashMap<u64, Vec<PathBuf>> = HashMap::new();
        for (name, node) in &durable {
            let Node::File(id) = node else { continue };
            let to = out.join(name);
            let src = match (live_of.get(id), st.ns.retired.contains_key(id)) {
                (Some(n), _) => Source::Live(here.join(n)),
                (None, true) => Source::Retired(*id),
                (None, false) => {
                    return Err(io::Error::other(format!(
                        "{}: durable, but its file was replaced or removed without the \
                         model seeing it (a change that bypassed Files)",
                        here.join(name).display()
                    )))
                }
            };
            match src {
                Source::Live(p) => {
                    fs::copy(p, &to)?;
                }
                Source::Retired(r) => fs::write(&to, &st.ns.retired[&r])?,
            }
            names_of.entry(*id).or_default().push(to);
        }
        let mut rng = seed ^ 0x9E37_79B9_7F4A_7C15;
        // Newest first: a byte takes the value of the newest kept write
        // covering it, else the old bytes of the oldest reverted write
        // newer than every kept one, which is what the disk held.
        let mut decided: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
        for r in st.volatile.iter().rev() {
            let Some(paths) = names_of.get(&r.file) else {
                continue;
            };
            let (from, to) = (r.offset, r.offset + r.old.len() as u64);
            report.volatile_writes += 1;
            let cut = match policy {
                _ if r.doomed => from,
                ImagePolicy::DurableOnly => from,
                ImagePolicy::Random => match splitmix(&mut rng) % 4 {
                    0 | 1 => from,
                    2 => to,
                    _ => {
                        let first = from.div_ceil(SECTOR) * SECTOR;
                        let sectors = to.saturating_sub(first) / SECTOR;
                        if first >= to || sectors == 0 {
                            from
                        } else {
                            first + (splitmix(&mut rng) % (sectors + 1)) * SECTOR
                        }
                    }
                },
            };
            if cut == from {
                report.dropped += 1;
            } else if cut == to {
                report.kept += 1;
            } else {
                report.torn += 1;
            }
            for path in paths {
                let done = decided.entry(path.clone()).or_default();
                let file = OpenOptions::new().write(true).open(path)?;
                for (a, b) in subtract((cut, to), done) {
                    let s = (a - from) as usize..(b - from) as usize;
                    file.write_all_at(&r.old[s], a)?;
                    report.bytes_reverted += b - a;
                }
                if cut > from {
                    insert_interval(done, (from, cut));
                }
            }
        }
        // A file created since tracking began keeps the size its last sync
        // made durable.
        for (id, paths) in &names_of {
            if let Some(len) = st.ns.durable_len.get(id) {
                for p in paths {
                    OpenOptions::new().write(true).open(p)?.set_len(*len)?;
                }
            }
        }
        Ok(report)
    }

    // Hooks of `Files`: every change outside the log path.

    /// Any file change: refused once the power is off.
    pub(crate) fn fs_check(&self) -> io::Result<()> {
        file_change(&mut self.lock())
    }

    /// A database at `dir` is being opened: the nearest existing directory
    /// of its path is where the model starts following entries.
    pub(crate) fn fs_opening(&self, dir: &Path) {
        let mut st = self.lock();
        if !st.tracking {
            return;
        }
        let Some(base) = dir.ancestors().find(|a| a.is_dir()) else {
            return;
        };
        let Ok(base) = fs::canonicalize(base) else {
            return;
        };
        if !st.ns.dirs.contains_key(&base) {
            if let Ok(list) = st.ns.listing(&base) {
                st.ns.dirs.insert(base, list);
            }
        }
    }

    pub(crate) fn fs_created_file(&self, f: &File) {
        let mut st = self.lock();
        if !st.tracking {
            return;
        }
        if let Ok(id) = st.ns.id_of_file(f) {
            st.ns.durable_len.insert(id, 0);
        }
    }

    /// Runs `op`, which takes the name `path` from the file it names (a
    /// rename over it or its removal), under the model's lock: the file's
    /// bytes are kept for durable entries that still name it, and no
    /// directory listing can run between that and the change itself (a
    /// listing in between would see the old file as a new one). Fails
    /// with `EIO` once the power is off.
    pub(crate) fn fs_unlinking(
        &self,
        path: &Path,
        op: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut st = self.lock();
        if st.powered_off {
            return Err(eio());
        }
        if st.tracking {
            st.ns.unlinking(path);
        }
        op()
    }

    /// A directory fsync starts: the entries it will make durable are the
    /// ones there now (an entry made while it runs may miss it).
    pub(crate) fn fs_sync_dir_begin(&self, dir: &Path) -> io::Result<DirSnapshot> {
        let mut st = self.lock();
        file_change(&mut st)?;
        if !st.tracking {
            return Ok(DirSnapshot(None));
        }
        let dir = fs::canonicalize(dir)?;
        let list = st.ns.listing(&dir)?;
        let swaps = st.ns.swaps.len();
        Ok(DirSnapshot(Some((dir, list, swaps))))
    }

    /// The directory fsync that began with `snap` completed.
    pub(crate) fn fs_synced_dir(&self, snap: DirSnapshot) -> io::Result<()> {
        let mut st = self.lock();
        if st.powered_off {
            return Err(eio());
        }
        if let Some((dir, list, swaps)) = snap.0 {
            for s in st.ns.swaps.iter_mut().take(swaps) {
                if s.0.parent() == Some(dir.as_path()) {
                    s.2 = true;
                }
            }
            st.ns.dirs.insert(dir, list);
        }
        Ok(())
    }

    /// Directories `a` and `b` (in one parent) are swapped by `op`.
    pub(crate) fn fs_exchanging(
        &self,
        a: &Path,
        b: &Path,
        op: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let mut st = self.lock();
        file_change(&mut st)?;
        let (a, b) = (fs::canonicalize(a)?, fs::canonicalize(b)?);
        op()?;
        if st.tracking {
            let da = st.ns.dirs.remove(&a);
            let db = st.ns.dirs.remove(&b);
            if let Some(d) = da {
                st.ns.dirs.insert(b.clone(), d);
            }
            if let Some(d) = db {
                st.ns.dirs.insert(a.clone(), d);
            }
            st.ns.swaps.push((a, b, false));
        }
        Ok(())
    }

    pub(crate) fn fs_write(&self, f: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        file_change(&mut st)?;
        if st.tracking {
            record_write(&mut st, f, offset, buf, &[])?;
        }
        Ok(())
    }

    pub(crate) fn fs_set_len(&self, f: &File, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        file_change(&mut st)?;
        if !st.tracking {
            return Ok(());
        }
        let now = f.metadata()?.len();
        if len < now {
            // The cut bytes are a write of nothing over them: a revert
            // brings them back.
            let gone = vec![0u8; (now - len) as usize];
            record_write(&mut st, f, len, &gone, &[])?;
        }
        Ok(())
    }

    /// A sync outside the backends starts; returns its stamp.
    pub(crate) fn fs_sync_begin(&self) -> io::Result<u64> {
        let mut st = self.lock();
        file_change(&mut st)?;
        Ok(st.clock)
    }

    /// The sync that began at `stamp` completed.
    pub(crate) fn fs_sync_end(&self, f: &File, stamp: u64) -> io::Result<()> {
        let mut st = self.lock();
        if st.powered_off {
            return Err(eio());
        }
        st.syncs += 1;
        if st.tracking {
            let id = st.ns.id_of_file(f)?;
            settle_sync(&mut st, id, f, stamp, &[], &[]);
        }
        Ok(())
    }
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The parts of `[a, b)` not covered by the sorted, disjoint `set`.
fn subtract((a, b): (u64, u64), set: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    for &(s, e) in set {
        if e <= at || s >= b {
            continue;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// Adds `[a, b)` to the sorted, disjoint `set`, merging overlaps.
fn insert_interval(set: &mut Vec<(u64, u64)>, (mut a, mut b): (u64, u64)) {
    let mut out = Vec::with_capacity(set.len() + 1);
    for &(s, e) in set.iter() {
        if e < a || s > b {
            out.push((s, e));
        } else {
            a = a.min(s);
            b = b.max(e);
        }
    }
    out.push((a, b));
    out.sort_unstable();
    *set = out;
}

/// A file change outside the log path begins: refused once the power is
/// off, and the one that runs out `power_off_after_file_changes` cuts it.
fn file_change(st: &mut super::PlanState) -> io::Result<()> {
    if st.powered_off {
        return Err(eio());
    }
    match st.file_changes_left {
        Some(0) => {
            st.file_changes_left = None;
            st.powered_off = true;
            Err(eio())
        }
        Some(n) => {
            st.file_changes_left = Some(n - 1);
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FaultIo, Op, Storage};
    use super::*;
    use crate::io::Io;

    #[test]
    fn interval_arithmetic() {
        let mut set = Vec::new();
        insert_interval(&mut set, (10, 20));
        insert_interval(&mut set, (30, 40));
        assert_eq!(subtract((0, 50), &set), vec![(0, 10), (20, 30), (40, 50)]);
        assert_eq!(subtract((12, 18), &set), vec![]);
        assert_eq!(subtract((15, 35), &set), vec![(20, 30)]);
        insert_interval(&mut set, (20, 30));
        assert_eq!(set, vec![(10, 40)]);
        assert_eq!(subtract((5, 45), &set), vec![(5, 10), (40, 45)]);
    }

    /// `<dir>/live/a.seg` of `len` bytes, written through a backend whose
    /// plan tracks durability.
    fn tracked_file(dir: &Path, len: u64) -> (PathBuf, Storage, FaultPlan, FaultIo) {
        let live = dir.join("live");
        fs::create_dir(&live).unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(live.join("a.seg"))
            .unwrap();
        f.set_len(len).unwrap();
        let plan = FaultPlan::new();
        plan.track_durable();
        let io = FaultIo {
            inner: Box::new(crate::io::posix::PosixIo),
            plan: plan.clone(),
        };
        (live, Storage::File(f), plan, io)
    }

    #[test]
    fn image_keeps_only_synced_writes() {
        let t = tempfile::tempdir().unwrap();
        let (live, s, plan, mut io) = tracked_file(t.path(), 4096);
        io.run(&[
            Op::Write {
                target: &s,
                offset: 0,
                buf: &[1; 100],
            },
            Op::Sync { target: &s },
        ])
        .unwrap();
        io.run(&[Op::Write {
            target: &s,
            offset: 100,
            buf: &[2; 1500],
        }])
        .unwrap();
        // Written back but never followed by a device flush: not durable.
        io.run(&[Op::SyncRange { target: &s }]).unwrap();
        io.run(&[Op::Write {
            target: &s,
            offset: 50,
            buf: &[3; 100],
        }])
        .unwrap();
        plan.power_off();
        assert!(io
            .run(&[Op::Write {
                target: &s,
                offset: 0,
                buf: &[9; 10],
            }])
            .is_err());
        let out = t.path().join("img");
        let rep = plan
            .durable_image(&live, &out, ImagePolicy::DurableOnly, 1)
            .unwrap();
        assert_eq!(rep.volatile_writes, 2);
        let img = fs::read(out.join("a.seg")).unwrap();
        assert_eq!(&img[..100], &[1; 100][..]);
        assert!(img[100..].iter().all(|&b| b == 0));
        // Random images: every byte is one of the values a write put there
        // or the durable one, and torn writes keep whole sectors.
        for seed in 0..64 {
            let out = t.path().join(format!("img{seed}"));
            plan.durable_image(&live, &out, ImagePolicy::Random, seed)
                .unwrap();
            let img = fs::read(out.join("a.seg")).unwrap();
            assert!(img[..50].iter().all(|&b| b == 1));
            assert!(img[50..100].iter().all(|&b| b == 1 || b == 3));
            assert!(img[100..150].iter().all(|&b| b == 0 || b == 2 || b == 3));
            assert!(img[150..1600].iter().all(|&b| b == 0 || b == 2));
        }
    }

    #[test]
    fn a_dsync_write_makes_only_its_own_bytes_durable() {
        let t = tempfile::tempdir().unwrap();
        let (live, s, plan, mut io) = tracked_file(t.path(), 8192);
        // Unsynced, then written back without a device flush, then a
        // RWF_DSYNC write elsewhere in the same file: only the last is
        // durable (the engine never relies on more).
        io.run(&[Op::Write {
            target: &s,
            offset: 0,
            buf: &[1; 100],
        }])
        .unwrap();
        io.run(&[Op::SyncRange { target: &s }]).unwrap();
        io.run(&[Op::WriteDsync {
            target: &s,
            offset: 4096,
            buf: &[2; 300],
        }])
        .unwrap();
        plan.power_off();
        let out = t.path().join("img");
        let rep = plan
            .durable_image(&live, &out, ImagePolicy::DurableOnly, 1)
            .unwrap();
        assert_eq!(rep.volatile_writes, 1);
        let img = fs::read(out.join("a.seg")).unwrap();
        assert!(img[..100].iter().all(|&b| b == 0), "unsynced bytes kept");
        assert_eq!(&img[4096..4396], &[2; 300][..], "dsync bytes lost");
        // An injected sync failure hits a dsync write too.
        let plan = FaultPlan::new();
        plan.fail_sync(0, libc::EIO);
        let mut io = FaultIo {
            inner: Box::new(crate::io::posix::PosixIo),
            plan: plan.clone(),
        };
        let err = io
            .run(&[Op::WriteDsync {
                target: &s,
                offset: 0,
                buf: &[3; 10],
            }])
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn image_keeps_only_entries_a_directory_sync_made_durable() {
        let t = tempfile::tempdir().unwrap();
        let db = t.path().join("a").join("db");
        let plan = FaultPlan::new();
        plan.track_durable();
        let files = crate::io::Files::watched(Some(plan.clone()));
        files.opening(&db);
        files.create_dir_all(&db).unwrap();
        // Synced data, unsynced entry: gone.
        let f = files.create_new(&db.join("x")).unwrap();
        files.write_at(&f, b"xx", 0).unwrap();
        files.sync_data(&f).unwrap();
        let img = |n: &str| {
            let out = t.path().join(n);
            let rep = plan
                .durable_image(&db, &out, ImagePolicy::DurableOnly, 0)
                .unwrap();
            (out, rep)
        };
        let (out, rep) = img("i1");
        assert!(!rep.directory_lost);
        assert!(!out.join("x").exists(), "an entry never synced");
        files.sync_dir(&db).unwrap();
        // Now durable; a replacement renamed over it, not synced: the old
        // bytes come back. Its unsynced write is reverted.
        let g = files.create_new(&db.join("x.tmp")).unwrap();
        files.write_at(&g, b"yyyy", 0).unwrap();
        files.sync_data(&g).unwrap();
        files.replace(&db.join("x.tmp"), &db.join("x")).unwrap();
        files.write_at(&f, b"zz", 0).unwrap();
        let (out, _) = img("i2");
        assert_eq!(fs::read(out.join("x")).unwrap(), b"xx");
        assert!(!out.join("x.tmp").exists());
        files.sync_dir(&db).unwrap();
        let (out, _) = img("i3");
        assert_eq!(fs::read(out.join("x")).unwrap(), b"yyyy");
        // A removal not synced: still there.
        files.remove(&db.join("x")).unwrap();
        let (out, _) = img("i4");
        assert_eq!(fs::read(out.join("x")).unwrap(), b"yyyy");
        // A directory created but whose parent was never synced: lost.
        let plan2 = FaultPlan::new();
        plan2.track_durable();
        let bare = t.path().join("b").join("db");
        plan2.fs_opening(&bare);
        fs::create_dir_all(&bare).unwrap();
        let rep = plan2
            .durable_image(&bare, &t.path().join("i5"), ImagePolicy::DurableOnly, 0)
            .unwrap();
        assert!(rep.directory_lost);
        assert!(!t.path().join("i5").exists());
    }

    /// Removals and renames race with directory fsyncs: a listing taken
    /// between the model noting a file's unlink and the unlink itself
    /// would see the old file as a new one, which no image can then
    /// source (the bug a 1,000-cycle power-loss run hit under CPU load).
    #[test]
    fn unlinks_racing_directory_syncs_keep_the_image_consistent() {
        use crate::io::Files;
        use std::sync::Barrier;
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("live");
        fs::create_dir(&live).unwrap();
        let plan = FaultPlan::new();
        plan.track_durable();
        let files = Files::watched(Some(plan.clone()));
        files.opening(&live);
        let a = live.join("a.seg");
        let tmp = live.join("a.tmp");
        files.create_new(&a).unwrap();
        for round in 0..1000 {
            files.create_new(&tmp).unwrap();
            files.sync_dir(&live).unwrap();
            // One directory sync races one rename over a synced file, or
            // one removal of it.
            let start = Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    start.wait();
                    files.sync_dir(&live).unwrap();
                });
                start.wait();
                if round % 2 == 0 {
                    files.replace(&tmp, &a).unwrap();
                } else {
                    files.remove(&a).unwrap();
                    files.replace(&tmp, &a).unwrap();
                }
            });
            let out = t.path().join(format!("img{round}"));
            plan.durable_image(&live, &out, ImagePolicy::DurableOnly, round)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            fs::remove_dir_all(&out).unwrap();
        }
    }
}
