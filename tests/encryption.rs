//! At-rest encryption: round trips through every layer (namespaces, TTL,
//! batches, transactions, ranges, zero-copy reads, compaction, checkpoints,
//! backups, reopen), the wrong-input errors, tampering, a scan of every
//! file for plaintext, and the admin calls.
#![cfg(feature = "encrypt")]

use std::path::{Path, PathBuf};

use emdb::{Cipher, Emdb, EncryptionInput, Error};

const KEY: [u8; 32] = [7u8; 32];
const OTHER: [u8; 32] = [9u8; 32];

/// Two shards, small segments: the settings of every database here.
fn plain_builder(path: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(256 << 10)
        .max_key_len(64)
        .max_value_len(4096)
}

fn builder(path: &Path, key: [u8; 32]) -> emdb::EmdbBuilder {
    plain_builder(path).encryption_key(key)
}

fn open(path: &Path) -> Emdb {
    builder(path, KEY).build().unwrap()
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// How many times each needle occurs across every file under `dirs`, and
/// how many bytes were read.
fn scan(dirs: &[&Path], needles: &[&[u8]]) -> (Vec<usize>, u64) {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    let mut hits = vec![0; needles.len()];
    let mut read = 0u64;
    for f in files {
        // A file may go between listing and reading (a retired segment).
        let Ok(b) = std::fs::read(&f) else { continue };
        read += b.len() as u64;
        for (i, n) in needles.iter().enumerate() {
            hits[i] += b.windows(n.len()).filter(|w| w == n).count();
        }
    }
    (hits, read)
}

/// One step of the plaintext scan test.
type Step = Box<dyn Fn(&Emdb)>;

fn key(i: u32) -> Vec<u8> {
    format!("secret-key-{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("secret-value-{i:06}-").repeat(6).into_bytes()
}

/// Writes 2,000 records in three namespaces, in every way a record can be
/// written.
fn fill(db: &Emdb) {
    for i in 0..1000 {
        db.insert(key(i), value(i)).unwrap();
    }
    let batch: Vec<(Vec<u8>, Vec<u8>)> = (1000..1500).map(|i| (key(i), value(i))).collect();
    db.insert_many(batch).unwrap();
    let ns = db.namespace("hidden-namespace-name").unwrap();
    for i in 1500..1800 {
        ns.insert(key(i), value(i)).unwrap();
    }
    db.transaction(|tx| {
        for i in 1800..2000 {
            tx.insert(key(i), value(i))?;
        }
        Ok(())
    })
    .unwrap();
}

fn check(db: &Emdb) {
    check_with(db, 0)
}

/// [`check`], with `extra` more records in the default namespace.
fn check_with(db: &Emdb, extra: usize) {
    let ns = db.namespace("hidden-namespace-name").unwrap();
    for i in 0..2000 {
        let got = if (1500..1800).contains(&i) {
            ns.get(key(i)).unwrap()
        } else {
            db.get(key(i)).unwrap()
        };
        assert_eq!(got, Some(value(i)), "key {i}");
    }
    assert_eq!(db.len().unwrap(), 1700 + extra);
    assert_eq!(ns.len().unwrap(), 300);
}

/// A new encrypted database with [`fill`]'s records: its temporary
/// directory, path and handle.
fn filled() -> (tempfile::TempDir, PathBuf, Emdb) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = open(&p);
    fill(&db);
    (dir, p, db)
}

#[test]
fn records_round_trip_through_reopen_compaction_and_checkpoint() {
    let (_dir, p, db) = filled();
    check(&db);
    assert!(db.stats().unwrap().encrypted);
    // Overwrite half, compact, reopen (replay), checkpoint, reopen (hints).
    for i in 0..500 {
        db.insert(key(i), value(i + 7)).unwrap();
        db.insert(key(i), value(i)).unwrap();
    }
    db.remove(key(1999)).unwrap();
    db.insert(key(1999), value(1999)).unwrap();
    db.compact().unwrap();
    check(&db);
    db.close().unwrap();
    let db = open(&p);
    check(&db);
    let got: Vec<_> = db.iter().unwrap().collect();
    assert_eq!(got.len(), 1700);
    for (k, v) in got {
        let i: u32 = std::str::from_utf8(&k[11..]).unwrap().parse().unwrap();
        assert_eq!(v, value(i));
    }
    assert_eq!(db.keys().unwrap().count(), 1700);
    db.checkpoint().unwrap();
    drop(db);
    let db = open(&p);
    check(&db);
    let v = db.get_zerocopy(key(3)).unwrap().unwrap();
    assert_eq!(&*v, &value(3)[..]);
}

#[test]
fn chacha_and_memory_databases_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = builder(&p, KEY)
        .cipher(Cipher::ChaCha20Poly1305)
        .build()
        .unwrap();
    fill(&db);
    drop(db);
    // The keyring decides the cipher of an existing database.
    let db = open(&p);
    check(&db);
    drop(db);
    let mem = Emdb::builder()
        .in_memory()
        .encryption_key(KEY)
        .build()
        .unwrap();
    fill(&mem);
    check(&mem);
    // A backup of an in-memory database opens with the same key.
    let b = dir.path().join("backup");
    mem.backup_to(&b).unwrap();
    check(&open(&b));
}

#[test]
fn wrong_inputs_get_clear_errors_and_change_nothing() {
    let (dir, p, db) = filled();
    db.close().unwrap();
    let before = snapshot_files(&p);
    match builder(&p, OTHER).build() {
        Err(Error::EncryptionKeyMismatch) => {}
        other => panic!("wrong key opened: {other:?}"),
    }
    match Emdb::builder().path(&p).build() {
        Err(Error::Encryption(_)) => {}
        other => panic!("opened without its key: {other:?}"),
    }
    match Emdb::builder()
        .path(&p)
        .encryption_passphrase("guess")
        .build()
    {
        Err(Error::EncryptionKeyMismatch) => {}
        other => panic!("a passphrase opened a raw-key database: {other:?}"),
    }
    assert_eq!(before, snapshot_files(&p), "a failed open changed a file");
    check(&open(&p));

    let plain = dir.path().join("plain");
    let db = Emdb::open(&plain).unwrap();
    db.insert("k", "v").unwrap();
    db.close().unwrap();
    match builder(&plain, KEY).build() {
        Err(Error::Encryption(_)) => {}
        other => panic!("a plaintext database opened with a key: {other:?}"),
    }
    assert_eq!(
        Emdb::open(&plain).unwrap().get("k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// Contents of every file but the lock file (its holder line changes).
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "LOCK"))
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect()
}

#[test]
fn no_file_holds_plaintext_after_flush_checkpoint_compact_backup_and_close() {
    let needles: [&[u8]; 4] = [
        b"secret-key-",
        b"secret-value-",
        b"hidden-namespace-name",
        b"ttl-key-",
    ];
    for encrypted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        let db = if encrypted {
            open(&p)
        } else {
            plain_builder(&p).build().unwrap()
        };
        fill(&db);
        db.insert_with_ttl(
            "ttl-key-1",
            "x",
            emdb::Ttl::After(std::time::Duration::from_secs(3600)),
        )
        .unwrap();
        let backup = dir.path().join("backup");
        let mut steps: Vec<(&str, Step)> = vec![
            ("flush", Box::new(|db: &Emdb| db.flush().unwrap())),
            ("checkpoint", Box::new(|db: &Emdb| db.checkpoint().unwrap())),
            (
                "compact",
                Box::new(|db: &Emdb| {
                    for i in 0..1000 {
                        db.insert(key(i), value(i)).unwrap();
                    }
                    db.compact().unwrap()
                }),
            ),
        ];
        let b2 = backup.clone();
        steps.push((
            "backup",
            Box::new(move |db: &Emdb| db.backup_to(&b2).unwrap()),
        ));
        for (step, f) in &steps {
            f(&db);
            let dirs: Vec<&Path> = if backup.exists() {
                vec![&p, &backup]
            } else {
                vec![&p]
            };
            let (hits, read) = scan(&dirs, &needles);
            // The scan read the data: the files hold at least the records.
            assert!(read > 2000 * 100, "{step}: only {read} bytes read");
            if encrypted {
                assert_eq!(hits, vec![0; needles.len()], "{step}: plaintext found");
            } else {
                // The same scan finds plaintext where there is some.
                assert!(
                    hits.iter().all(|&h| h > 0),
                    "{step}: the scan missed plaintext {hits:?}"
                );
            }
        }
        db.close().unwrap();
        let (hits, _) = scan(&[&p, &backup], &needles);
        if encrypted {
            assert_eq!(hits, vec![0; needles.len()], "close: plaintext found");
            let b = open(&backup);
            check_with(&b, 1);
            assert!(b.ttl("ttl-key-1").unwrap().is_some());
        }
    }
}

/// Offsets and lengths of the encrypted puts in a segment file.
fn sealed_puts(seg: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut off = 64;
    while off + 8 <= seg.len() {
        let len = u32::from_le_bytes(seg[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 || off + len > seg.len() {
            break;
        }
        if seg[off + 4] == 1 && seg[off + 5] & 2 != 0 {
            out.push((off, len));
        }
        off += len;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn tamper_value(i: u8) -> Vec<u8> {
    vec![i; 100]
}

/// Opens `dir` and reads the three keys; `victim` must not read back as
/// anything but an error. Returns whether the damage was reported at open.
fn assert_no_garbage(dir: &Path, victim: u8, what: &str) -> bool {
    let db = match open_result(dir) {
        Err(Error::Corrupted { .. }) => return true,
        Err(e) => panic!("{what}: open failed with an unexpected error: {e}"),
        Ok(db) => db,
    };
    for i in 0..3u8 {
        match db.get([b'k', i]) {
            Ok(Some(v)) => {
                assert_eq!(v, tamper_value(i), "{what}: garbage returned for key {i}");
                assert_ne!(i, victim, "{what}: the damaged record read back whole");
            }
            Ok(None) => panic!("{what}: key {i} went missing without an error"),
            Err(Error::Corrupted { .. }) => assert_eq!(i, victim, "{what}: wrong key damaged"),
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
    false
}

fn open_result(path: &Path) -> emdb::Result<Emdb> {
    Emdb::builder()
        .path(path)
        .shards(1)
        .segment_size(256 << 10)
        .max_key_len(64)
        .max_value_len(4096)
        .encryption_key(KEY)
        .build()
}

/// An encrypted database of one shard holding three records, closed: its
/// temporary directory, its path and its segment file's bytes.
fn three_records() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("db");
    let db = open_result(&base).unwrap();
    for i in 0..3u8 {
        db.insert([b'k', i], tamper_value(i)).unwrap();
    }
    db.close().unwrap();
    let seg = std::fs::read(base.join("000-00000001.seg")).unwrap();
    (dir, base, seg)
}

/// A copy of database `base` at `case`, without its hint files unless
/// `hints`.
fn case_copy(base: &Path, case: &Path, hints: bool) {
    copy_dir(base, case);
    if !hints {
        for e in std::fs::read_dir(case).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".hint") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

#[test]
fn every_changed_byte_of_an_encrypted_frame_is_an_error_never_garbage() {
    let (dir, base, seg) = three_records();
    let puts = sealed_puts(&seg);
    assert_eq!(puts.len(), 3, "three encrypted puts in the segment");
    // The middle record is the victim: frames follow it, so its damage is
    // inside durable data, never a torn tail.
    let (at, len) = puts[1];
    let mut reported_at_open = 0;
    let mut cases = 0;
    for hints in [true, false] {
        for fix_crc in [false, true] {
            for i in at..at + len {
                let case = dir.path().join(format!("case-{hints}-{fix_crc}-{i}"));
                case_copy(&base, &case, hints);
                let mut b = seg.clone();
                b[i] ^= 0x01;
                if fix_crc && i < at + len - 4 {
                    let crc = crc32c::crc32c(&b[at..at + len - 4]);
                    b[at + len - 4..at + len].copy_from_slice(&crc.to_le_bytes());
                }
                std::fs::write(case.join("000-00000001.seg"), &b).unwrap();
                let what = format!(
                    "byte {} of the frame (hints {hints}, crc fixed {fix_crc})",
                    i - at
                );
                if assert_no_garbage(&case, 1, &what) {
                    reported_at_open += 1;
                }
                cases += 1;
                std::fs::remove_dir_all(&case).unwrap();
            }
        }
    }
    // Without hints every frame is authenticated at open.
    assert!(
        reported_at_open >= 2 * len,
        "{reported_at_open} of {cases} reported at open"
    );
}

#[test]
fn a_truncated_encrypted_frame_is_an_error_never_garbage() {
    let (dir, base, seg) = three_records();
    let (at, len) = sealed_puts(&seg)[1];
    for hints in [true, false] {
        for cut in at + 1..at + len {
            let case = dir.path().join(format!("cut-{hints}-{cut}"));
            case_copy(&base, &case, hints);
            std::fs::write(case.join("000-00000001.seg"), &seg[..cut]).unwrap();
            let what = format!("cut at byte {} of the frame (hints {hints})", cut - at);
            match open_result(&case) {
                Err(Error::Corrupted { .. }) => {}
                Err(e) => panic!("{what}: unexpected error {e}"),
                Ok(db) => {
                    assert_eq!(db.get([b'k', 0]).unwrap(), Some(tamper_value(0)), "{what}");
                    for i in 1..3u8 {
                        match db.get([b'k', i]) {
                            Err(Error::Corrupted { .. }) => {}
                            other => panic!("{what}: key {i} read as {other:?}"),
                        }
                    }
                }
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
}

#[test]
fn enable_rotate_and_disable_keep_every_record_and_refuse_wrong_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let plain = plain_builder(&p).build().unwrap();
    fill(&plain);
    plain
        .insert_with_ttl(
            "ttl-key-1",
            "x",
            emdb::Ttl::After(std::time::Duration::from_secs(3600)),
        )
        .unwrap();
    // An open database is refused.
    match Emdb::enable_encryption(&p, EncryptionInput::Key(KEY)) {
        Err(Error::LockBusy { .. }) => {}
        other => panic!("enabled encryption on an open database: {other:?}"),
    }
    plain.close().unwrap();

    Emdb::enable_encryption(&p, EncryptionInput::Key(KEY)).unwrap();
    let needles: [&[u8]; 3] = [b"secret-key-", b"secret-value-", b"hidden-namespace-name"];
    let parent = dir.path();
    assert_eq!(
        scan(&[parent], &needles).0,
        vec![0; 3],
        "plaintext left after enable"
    );
    assert!(matches!(Emdb::open(&p), Err(Error::Encryption(_))));
    let db = open(&p);
    check_with(&db, 1);
    let ttl = db.ttl("ttl-key-1").unwrap().unwrap();
    assert!(
        ttl > std::time::Duration::from_secs(3500),
        "expiry kept: {ttl:?}"
    );
    // Enabling twice is refused.
    match Emdb::enable_encryption(&p, EncryptionInput::Key(OTHER)) {
        Err(Error::LockBusy { .. }) | Err(Error::Encryption(_)) => {}
        other => panic!("{other:?}"),
    }
    db.close().unwrap();
    assert!(matches!(
        Emdb::enable_encryption(&p, EncryptionInput::Key(OTHER)),
        Err(Error::Encryption(_))
    ));

    // Rotation: a wrong current key changes nothing.
    let before = snapshot_files(&p);
    assert!(matches!(
        Emdb::rotate_encryption_key(&p, EncryptionInput::Key(OTHER), EncryptionInput::Key(OTHER)),
        Err(Error::EncryptionKeyMismatch)
    ));
    assert_eq!(before, snapshot_files(&p));
    Emdb::rotate_encryption_key(&p, EncryptionInput::Key(KEY), EncryptionInput::Key(OTHER))
        .unwrap();
    // Only the keyring changed.
    let after = snapshot_files(&p);
    assert_eq!(before.len(), after.len());
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(changed, vec!["KEYRING".to_string()]);
    assert!(matches!(
        builder(&p, KEY).build(),
        Err(Error::EncryptionKeyMismatch)
    ));
    check_with(&builder(&p, OTHER).build().unwrap(), 1);

    // Disable: a wrong key changes nothing, the right one decrypts all.
    let before = snapshot_files(&p);
    assert!(matches!(
        Emdb::disable_encryption(&p, EncryptionInput::Key(KEY)),
        Err(Error::EncryptionKeyMismatch)
    ));
    assert_eq!(before, snapshot_files(&p));
    Emdb::disable_encryption(&p, EncryptionInput::Key(OTHER)).unwrap();
    assert!(!p.join("KEYRING").exists());
    let db = Emdb::builder()
        .path(&p)
        .max_key_len(64)
        .max_value_len(4096)
        .build()
        .unwrap();
    check_with(&db, 1);
    drop(db);
    // No staging directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn passphrases_open_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let mk = |pass: &str| {
        Emdb::builder()
            .path(&p)
            .shards(1)
            .encryption_passphrase(pass)
    };
    let db = mk("correct horse").build().unwrap();
    db.insert("k", "v").unwrap();
    db.close().unwrap();
    assert!(matches!(
        mk("wrong horse").build(),
        Err(Error::EncryptionKeyMismatch)
    ));
    Emdb::rotate_encryption_key(
        &p,
        EncryptionInput::Passphrase("correct horse".into()),
        EncryptionInput::Passphrase("battery staple".into()),
    )
    .unwrap();
    assert!(matches!(
        mk("correct horse").build(),
        Err(Error::EncryptionKeyMismatch)
    ));
    let db = mk("battery staple").build().unwrap();
    assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
    // From a passphrase to a raw key and back.
    Emdb::rotate_encryption_key(
        &p,
        EncryptionInput::Passphrase("battery staple".into()),
        EncryptionInput::Key(KEY),
    )
    .unwrap();
    let db = Emdb::builder()
        .path(&p)
        .shards(1)
        .encryption_key(KEY)
        .build()
        .unwrap();
    assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Where the frames of a segment end: the first zero length field.
fn data_end(seg: &[u8]) -> usize {
    let mut off = 64;
    while off + 4 <= seg.len() {
        let len = u32::from_le_bytes(seg[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        off += len;
    }
    off
}

#[test]
fn a_plaintext_record_written_into_an_encrypted_database_is_refused() {
    let (dir, base, mut seg) = three_records();
    // A well-formed plaintext put (kind 1, no flags, namespace 0), CRC and
    // all, appended after the last frame: what someone without the key
    // could write.
    let (key, value) = (b"forged", b"value");
    let len = 32 + key.len() + value.len() + 4;
    let mut f = vec![0u8; len];
    f[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    f[4] = 1;
    f[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    f[20..24].copy_from_slice(&(key.len() as u32).to_le_bytes());
    f[24..28].copy_from_slice(&(value.len() as u32).to_le_bytes());
    f[32..32 + key.len()].copy_from_slice(key);
    f[32 + key.len()..len - 4].copy_from_slice(value);
    let crc = crc32c::crc32c(&f[..len - 4]);
    f[len - 4..].copy_from_slice(&crc.to_le_bytes());
    let at = data_end(&seg);
    if seg.len() < at + len {
        seg.resize(at + len, 0);
    }
    seg[at..at + len].copy_from_slice(&f);
    for hints in [true, false] {
        let case = dir.path().join(format!("forged-{hints}"));
        case_copy(&base, &case, hints);
        std::fs::write(case.join("000-00000001.seg"), &seg).unwrap();
        match open_result(&case) {
            Err(Error::Corrupted { reason, .. }) => {
                assert!(reason.contains("not encrypted"), "{reason}")
            }
            Ok(db) => {
                // With hints the forged frame lies past the checkpoint: it
                // is replayed, so this cannot happen.
                let keys: Vec<_> = db.keys().unwrap().collect();
                panic!("opened with hints {hints}; keys {keys:?}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_changed_hint_file_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("db");
    let db = open_result(&base).unwrap();
    db.insert_with_ttl(
        "lasting",
        "v",
        emdb::Ttl::After(std::time::Duration::from_secs(3600)),
    )
    .unwrap();
    db.close().unwrap();
    let hint_path = base.join("000-00000001.hint");
    let mut h = std::fs::read(&hint_path).unwrap();
    // The one entry's expiry (the last 8 bytes of its 24), set to 1 ms
    // after the epoch, the CRC fixed: a forged expiry.
    let entry_end = 40 + 24;
    h[entry_end - 8..entry_end].copy_from_slice(&1u64.to_le_bytes());
    let body = h.len() - 4;
    let crc = crc32c::crc32c(&h[..body]);
    h[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&hint_path, &h).unwrap();
    // The HMAC fails, the hints are ignored, the log is replayed.
    let db = open_result(&base).unwrap();
    assert_eq!(db.get("lasting").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(db.ttl("lasting").unwrap().unwrap() > std::time::Duration::from_secs(3000));
}

#[test]
fn a_keyring_asking_for_too_much_memory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let db = Emdb::builder()
        .path(&p)
        .shards(1)
        .encryption_passphrase("pass")
        .build()
        .unwrap();
    db.close().unwrap();
    let ring_path = p.join("KEYRING");
    let mut k = std::fs::read(&ring_path).unwrap();
    // The Argon2id memory cost (offset 16) set to 4 GiB, the CRC fixed.
    k[16..20].copy_from_slice(&(4u32 * 1024 * 1024).to_le_bytes());
    let body = k.len() - 4;
    let crc = crc32c::crc32c(&k[..body]);
    k[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&ring_path, &k).unwrap();
    match Emdb::builder()
        .path(&p)
        .encryption_passphrase("pass")
        .build()
    {
        Err(Error::Encryption(_)) => {}
        other => panic!("{other:?}"),
    }
}
