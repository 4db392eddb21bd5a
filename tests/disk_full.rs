//! Disk full, for real: the database lives on a small tmpfs mounted for the
//! test, is filled until writes fail, and must then report the error, keep
//! everything acknowledged, stay readable, and take writes again once space
//! is freed.
//!
//! Mounting needs root (CAP_SYS_ADMIN). Without it the test says so and
//! passes, unless `EMDB_REQUIRE_DISK_FULL=1` (set by `.ci/run`) makes the
//! missing mount a failure.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use emdb::{Emdb, Error};

/// A tmpfs of `size` bytes mounted at a fresh directory; unmounted on drop.
struct SmallFs {
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: u64) -> Result<SmallFs, std::io::Error> {
        let dir = tempfile::tempdir()?;
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt)?;
        let target = CString::new(mnt.as_os_str().as_bytes()).expect("path");
        let fstype = CString::new("tmpfs").expect("cstr");
        let opts = CString::new(format!("size={size},mode=0700")).expect("cstr");
        // SAFETY: every pointer is a valid NUL-terminated string that
        // outlives the call.
        let r = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SmallFs { mnt, _dir: dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let target = CString::new(self.mnt.as_os_str().as_bytes()).expect("path");
        // SAFETY: a valid path string; MNT_DETACH unmounts even if a file
        // is still open.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

fn open(path: &Path) -> emdb::Result<Emdb> {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(512 * 1024)
        .max_key_len(256)
        .max_value_len(8192)
        .build()
}

fn is_enospc(e: &Error) -> bool {
    let io = match e {
        Error::Io(io) => io.raw_os_error() == Some(libc::ENOSPC),
        _ => false,
    };
    io || e.to_string().contains("No space left")
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(2000 + i % 1000, b'a' + (i % 26) as u8);
    v
}

#[test]
fn disk_full_reports_the_error_loses_nothing_and_recovers_when_space_returns() {
    let small = match SmallFs::mount(8 << 20) {
        Ok(m) => m,
        Err(e) => {
            if std::env::var_os("EMDB_REQUIRE_DISK_FULL").is_some() {
                panic!("cannot mount a tmpfs for the disk-full test: {e}");
            }
            eprintln!("disk-full test skipped: mounting a tmpfs needs root ({e})");
            return;
        }
    };
    // Room to give back later.
    let filler = small.mnt.join("filler");
    fs::write(&filler, vec![7u8; 2 << 20]).expect("filler");
    let path = small.mnt.join("db");
    let db = open(&path).expect("open");
    let mut acked = Vec::new();
    let mut err = None;
    for i in 0..100_000 {
        let k = format!("key-{i:06}");
        let r =
            db.insert(k.as_str(), value(i))
                .and_then(|()| if i % 10 == 9 { db.flush() } else { Ok(()) });
        match r {
            Ok(()) if i % 10 == 9 => acked.extend((i - 9..=i).map(|j| format!("key-{j:06}"))),
            Ok(()) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("an 8 MiB filesystem must fill up");
    assert!(is_enospc(&err), "the caller gets ENOSPC, got {err:?}");
    eprintln!("full after {} acknowledged records: {err}", acked.len());
    assert!(acked.len() > 100, "only {} records fit", acked.len());
    // Still readable, nothing acknowledged missing.
    for (i, k) in acked.iter().enumerate() {
        assert_eq!(
            db.get(k).expect("get").as_deref(),
            Some(&value(i)[..]),
            "{k} lost"
        );
    }
    // Compaction on the full disk: it may find no room for its moves
    // (ENOSPC), and loses nothing either way.
    match db.compact() {
        Ok(()) => {}
        Err(e) => assert!(is_enospc(&e), "compaction on a full disk: {e:?}"),
    }
    for (i, k) in acked.iter().enumerate() {
        assert_eq!(
            db.get(k).expect("get").as_deref(),
            Some(&value(i)[..]),
            "{k} lost by compaction on a full disk"
        );
    }
    // The close (its checkpoint may fail for lack of space) loses nothing.
    drop(db);
    // Reopening on the full disk works and holds everything acknowledged.
    {
        let db = open(&path).expect("reopen on a full disk");
        for k in &acked {
            assert!(db.get(k).expect("get").is_some(), "{k} lost after reopen");
        }
    }
    // Space returns: the reopened database takes writes again.
    fs::remove_file(&filler).expect("free space");
    let db = open(&path).expect("reopen after freeing space");
    for (i, k) in acked.iter().enumerate() {
        assert_eq!(
            db.get(k).expect("get").as_deref(),
            Some(&value(i)[..]),
            "{k} lost after space returned"
        );
    }
    for i in 0..500 {
        db.insert(format!("more-{i:04}"), value(i))
            .expect("insert after space returned");
    }
    db.flush().expect("flush after space returned");
    db.compact().expect("compaction once space returned");
    drop(db);
    let db = open(&path).expect("final reopen");
    assert_eq!(
        db.get("more-0499").expect("get").as_deref(),
        Some(&value(499)[..])
    );
}
