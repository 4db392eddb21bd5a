//! `EmdbBuilder::read_only`: reads work, every change is refused with
//! `Error::ReadOnly`, and not one byte of the database's files changes, not
//! even for a torn tail that a writable open would cut.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use emdb::{Emdb, Error};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn writable(dir: &Path) -> Emdb {
    Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(1 << 20)
        .max_value_len(4096)
        .build()
        .unwrap()
}

fn read_only(dir: &Path) -> emdb::Result<Emdb> {
    Emdb::builder().path(dir).read_only(true).build()
}

/// Every file under `dir` with its bytes and length.
fn image(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            out.insert(e.path(), std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn fill(dir: &Path) {
    let db = writable(dir);
    for i in 0..500u32 {
        db.insert(format!("k{i:04}"), format!("v{i}")).unwrap();
    }
    let ns = db.namespace("users").unwrap();
    ns.insert("alice", "1").unwrap();
    ns.insert("bob", "2").unwrap();
    db.remove("k0007").unwrap();
    db.close().unwrap();
}

#[test]
fn reads_work_and_no_byte_changes() {
    let d = tmp();
    fill(d.path());
    let before = image(d.path());
    let db = read_only(d.path()).unwrap();
    assert_eq!(db.get("k0001").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(db.get("k0007").unwrap(), None);
    assert_eq!(db.len().unwrap(), 499);
    assert_eq!(db.iter().unwrap().count(), 499);
    assert_eq!(db.list_namespaces().unwrap().len(), 2);
    let ns = db.namespace("users").unwrap();
    assert_eq!(ns.get("bob").unwrap().as_deref(), Some(&b"2"[..]));
    let st = db.stats().unwrap();
    assert_eq!(st.live_records, 501);
    db.flush().unwrap();
    // A backup goes elsewhere, so it is allowed.
    let b = tmp();
    let copy = b.path().join("copy");
    db.backup_to(&copy).unwrap();
    db.close().unwrap();
    assert_eq!(image(d.path()), before, "a read-only open changed a file");
    let c = writable(&copy);
    assert_eq!(c.len().unwrap(), 499);
    c.close().unwrap();
}

#[test]
fn every_change_is_refused() {
    let d = tmp();
    fill(d.path());
    let before = image(d.path());
    let db = read_only(d.path()).unwrap();
    let ro = |r: emdb::Result<()>, what: &str| {
        assert!(matches!(r, Err(Error::ReadOnly)), "{what}: {r:?}");
    };
    ro(db.insert("x", "y"), "insert");
    ro(db.remove("k0001").map(|_| ()), "remove");
    ro(db.insert_many(vec![("a", "b")]), "insert_many");
    ro(db.clear(), "clear");
    ro(db.compact(), "compact");
    ro(db.checkpoint(), "checkpoint");
    ro(db.namespace("new").map(|_| ()), "create namespace");
    ro(db.drop_namespace("users").map(|_| ()), "drop namespace");
    ro(
        db.namespace("users").unwrap().insert("carol", "3"),
        "insert in a namespace",
    );
    ro(
        db.transaction(|tx| {
            tx.insert("t", "1")?;
            Ok(())
        }),
        "transaction",
    );
    #[cfg(feature = "ttl")]
    {
        ro(
            db.insert_with_ttl("t", "1", emdb::Ttl::Never),
            "insert_with_ttl",
        );
        assert_eq!(db.sweep_expired(), 0, "sweep_expired");
    }
    // Nothing was half-done: every record is as before.
    assert_eq!(db.get("k0001").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(db.len().unwrap(), 499);
    drop(db);
    assert_eq!(image(d.path()), before);
}

#[test]
fn shared_lock_against_writers() {
    let d = tmp();
    fill(d.path());
    let a = read_only(d.path()).unwrap();
    let b = read_only(d.path()).unwrap();
    let w = Emdb::builder().path(d.path()).build();
    assert!(matches!(w, Err(Error::LockBusy { .. })), "{:?}", w.err());
    assert!(matches!(
        Emdb::break_lock(d.path()),
        Err(Error::LockBusy { .. })
    ));
    drop((a, b));
    let w = writable(d.path());
    assert!(matches!(read_only(d.path()), Err(Error::LockBusy { .. })));
    w.close().unwrap();
    read_only(d.path()).unwrap().close().unwrap();
}

#[test]
fn no_database_is_created() {
    let d = tmp();
    let missing = d.path().join("nothing");
    let e = read_only(&missing).err().unwrap();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(!missing.exists());
    // An empty directory stays empty.
    let e = read_only(d.path()).err().unwrap();
    assert!(matches!(&e, Error::Io(_)), "{e:?}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    let e = Emdb::builder()
        .in_memory()
        .read_only(true)
        .build()
        .err()
        .unwrap();
    assert!(matches!(e, Error::InvalidConfig(_)));
}

/// A torn tail (bytes of a frame a crash cut short) is ignored in memory
/// and left on disk; a writable open then cuts it.
#[test]
fn torn_tail_is_left_alone() {
    let d = tmp();
    let db = writable(d.path());
    for i in 0..50u32 {
        db.insert(format!("k{i}"), "v").unwrap();
    }
    db.close().unwrap();
    // A write a crash cut short, made by hand: bytes right after the last
    // record of a segment that has records.
    let seg = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max_by_key(|p| {
            let b = std::fs::read(p).unwrap();
            b.iter().rposition(|x| *x != 0).unwrap_or(0)
        })
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|x| *x != 0).unwrap() + 1;
    bytes[end..end + 7].copy_from_slice(&[0x30, 0, 0, 0, 1, 0xAB, 0xCD]);
    std::fs::write(&seg, &bytes).unwrap();
    let before = image(d.path());
    let ro = read_only(d.path()).unwrap();
    assert_eq!(ro.len().unwrap(), 50);
    drop(ro);
    assert_eq!(image(d.path()), before);
    let w = writable(d.path());
    assert_eq!(w.len().unwrap(), 50);
    w.close().unwrap();
    assert_ne!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "the writable open cuts it"
    );
}

#[cfg(feature = "encrypt")]
#[test]
fn encrypted_read_only() {
    let d = tmp();
    let key = [7u8; 32];
    let db = Emdb::builder()
        .path(d.path())
        .encryption_key(key)
        .build()
        .unwrap();
    db.insert("secret", "value").unwrap();
    db.close().unwrap();
    let before = image(d.path());
    let e = read_only(d.path()).err().unwrap();
    assert!(matches!(e, Error::Encryption(_)), "{e:?}");
    let e = Emdb::builder()
        .path(d.path())
        .read_only(true)
        .encryption_key([8u8; 32])
        .build()
        .err()
        .unwrap();
    assert!(matches!(e, Error::EncryptionKeyMismatch), "{e:?}");
    let db = Emdb::builder()
        .path(d.path())
        .read_only(true)
        .encryption_key(key)
        .build()
        .unwrap();
    assert_eq!(db.get("secret").unwrap().as_deref(), Some(&b"value"[..]));
    assert!(matches!(db.insert("a", "b"), Err(Error::ReadOnly)));
    db.close().unwrap();
    assert_eq!(image(d.path()), before);
}
