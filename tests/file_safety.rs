//! Files only their owner can read, created without following links:
//! - new files are 0600 and new directories 0700 (the umask only narrows);
//! - files the owner opened up keep their permission bits when emdb
//!   replaces them (manifest, hint files);
//! - an entry planted at the path of the next segment (a symlink, say) makes
//!   rotation fail with an error naming it, and its target is untouched;
//! - a stale `MANIFEST.tmp` symlink is removed, never followed.
//!
//! `EMDB_IO_BACKEND=uring|portable cargo test --test file_safety`.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use emdb::{Emdb, Error};

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn builder(dir: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(8192)
        .max_key_len(64)
        .max_value_len(1024)
}

/// Every entry of `dir` with its mode, for messages. An entry that vanishes
/// between the listing and its stat (a segment the background compactor
/// retired, a `.tmp` renamed into place) is left out.
fn listing(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.permissions().mode() & 0o7777,
            ))
        })
        .collect();
    v.sort();
    v
}

fn assert_owner_only(dir: &Path, when: &str) {
    for (name, m) in listing(dir) {
        assert_eq!(
            m & 0o077,
            0,
            "{when}: {name} has mode {m:o}; emdb's files are owner-only"
        );
    }
}

#[test]
fn new_files_and_directories_are_owner_only() {
    let t = tempfile::tempdir().unwrap();
    // Two levels that do not exist yet.
    let dir = t.path().join("new").join("db");
    let db = builder(&dir).build().unwrap();
    assert_eq!(mode(&t.path().join("new")), 0o700, "a created ancestor");
    assert_eq!(mode(&dir), 0o700, "the database directory");
    assert_owner_only(&dir, "after open");
    for name in ["LOCK", "MANIFEST", "000-00000001.seg", "001-00000001.seg"] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name} after open");
    }
    // Rotation: 8 KiB segments, 300-byte values.
    for i in 0..200 {
        db.insert(format!("k{i:04}"), vec![b'v'; 300]).unwrap();
    }
    db.flush().unwrap();
    let segs = listing(&dir)
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .count();
    assert!(segs > 4, "the writes must rotate segments: {segs}");
    assert_owner_only(&dir, "after rotation");
    db.checkpoint().unwrap();
    assert!(
        listing(&dir).iter().any(|(n, _)| n.ends_with(".hint")),
        "checkpoint writes hint files"
    );
    assert_owner_only(&dir, "after checkpoint");
    drop(db);
    assert_owner_only(&dir, "after close");
}

#[test]
fn files_the_owner_opened_up_keep_their_modes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let db = builder(&dir).build().unwrap();
    db.insert("a", "1").unwrap();
    db.checkpoint().unwrap();
    drop(db);
    // The owner gives a backup group read access.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let opened: Vec<String> = listing(&dir)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n == "MANIFEST" || n.ends_with(".hint") || n.ends_with(".seg"))
        .collect();
    for n in &opened {
        fs::set_permissions(dir.join(n), fs::Permissions::from_mode(0o640)).unwrap();
    }
    let db = builder(&dir).build().unwrap();
    for i in 0..100 {
        db.insert(format!("k{i:04}"), vec![b'v'; 300]).unwrap();
    }
    db.checkpoint().unwrap();
    drop(db);
    assert_eq!(mode(&dir), 0o750, "the directory keeps its mode");
    for n in &opened {
        if dir.join(n).exists() {
            assert_eq!(
                mode(&dir.join(n)),
                0o640,
                "{n} was replaced with other permissions"
            );
        }
    }
    // Files created since are owner-only.
    for (n, m) in listing(&dir) {
        if !opened.contains(&n) {
            assert_eq!(m & 0o077, 0, "new file {n} has mode {m:o}");
        }
    }
}

#[test]
fn the_umask_narrows_modes_further() {
    // umask is process-wide: run the check in a child with its own umask.
    if std::env::var_os("EMDB_UMASK_CHILD").is_some() {
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe { libc::umask(0o077 | 0o200) };
        let dir = std::path::PathBuf::from(std::env::var_os("EMDB_UMASK_CHILD").unwrap());
        let db = builder(&dir).build().unwrap();
        db.insert("a", "1").unwrap();
        db.flush().unwrap();
        drop(db);
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["the_umask_narrows_modes_further", "--exact", "--nocapture"])
        .env("EMDB_UMASK_CHILD", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir), 0o500, "0700 narrowed by umask 0277");
    assert_eq!(
        mode(&dir.join("MANIFEST")),
        0o400,
        "0600 narrowed by umask 0277"
    );
}

#[test]
fn a_symlink_at_the_next_segment_path_fails_rotation_and_is_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious bytes").unwrap();
    let db = Emdb::builder()
        .path(&dir)
        .shards(1)
        .segment_size(8192)
        .max_key_len(64)
        .max_value_len(1024)
        .build()
        .unwrap();
    // Segment 1 is active; 2 is the next one to be created.
    let planted = dir.join("000-00000002.seg");
    symlink(&victim, &planted).unwrap();
    let mut refused = None;
    for i in 0..100 {
        match db.insert(format!("k{i:04}"), vec![b'v'; 300]) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, e) = refused.expect("rotation into the planted path must fail");
    match &e {
        Error::Io(io) => {
            assert_eq!(io.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
            assert!(
                e.to_string().contains("000-00000002.seg"),
                "the error names the path: {e}"
            );
        }
        other => panic!("expected Error::Io(AlreadyExists), got {other:?}"),
    }
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"precious bytes",
        "target untouched"
    );
    assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
    // It keeps failing while the entry is there, and nothing acknowledged
    // before it is lost.
    assert!(db.insert("again", vec![b'v'; 300]).is_err() || at == 0);
    for i in 0..at {
        assert_eq!(db.get(format!("k{i:04}")).unwrap(), Some(vec![b'v'; 300]));
    }
    db.flush().unwrap();
    // Once it is removed, writes go on (into segment 2, not a skipped id).
    fs::remove_file(&planted).unwrap();
    for i in at..at + 20 {
        db.insert(format!("k{i:04}"), vec![b'v'; 300]).unwrap();
    }
    db.flush().unwrap();
    assert!(dir.join("000-00000002.seg").is_file());
    drop(db);
    let db = Emdb::open(&dir).unwrap();
    assert_eq!(db.len().unwrap(), at as usize + 20);
    assert_eq!(fs::read(&victim).unwrap(), b"precious bytes");
}

#[test]
fn a_stale_manifest_tmp_symlink_is_removed_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("db");
    drop(builder(&dir).build().unwrap());
    let victim = t.path().join("victim");
    fs::write(&victim, b"precious bytes").unwrap();
    symlink(&victim, dir.join("MANIFEST.tmp")).unwrap();
    let db = builder(&dir).build().unwrap();
    for i in 0..100 {
        db.insert(format!("k{i:04}"), vec![b'v'; 300]).unwrap();
    }
    db.checkpoint().unwrap();
    drop(db);
    assert_eq!(fs::read(&victim).unwrap(), b"precious bytes");
    assert!(fs::symlink_metadata(dir.join("MANIFEST"))
        .unwrap()
        .is_file());
    assert_eq!(Emdb::open(&dir).unwrap().len().unwrap(), 100);
}
