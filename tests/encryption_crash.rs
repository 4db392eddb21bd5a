//! Encryption across crashes: no (data key, nonce) pair repeats across a
//! thousand power cuts (torn tails rewritten, compactions, reopens, backups
//! restored and written on), and the admin calls leave the old database or
//! the new one when killed at any point.
#![cfg(all(feature = "encrypt", feature = "fault-injection"))]

// Only the image helpers this test needs are used.
#[allow(dead_code)]
#[path = "support/power_cut.rs"]
mod power_cut;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use emdb::{Emdb, EncryptionInput, Error, ImagePolicy};
use power_cut::{reopen_image_with, tracked};

const KEY: [u8; 32] = [3u8; 32];
const OTHER: [u8; 32] = [4u8; 32];

fn builder(path: &Path) -> emdb::EmdbBuilder {
    Emdb::builder()
        .shards(2)
        .segment_size(64 << 10)
        .max_key_len(64)
        .max_value_len(2048)
        .background_compaction(false)
        .encryption_key(KEY)
        .path(path)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Each cycle writes a little (puts, batches, removes, sometimes a flush,
/// a compaction, a clean reopen, or a backup that the next cycle carries on
/// from), then cuts the power at a random point of what was not yet
/// durable and carries on from the image. Every frame sealed in the whole
/// run is recorded; no (shard, segment, key id, offset) may repeat.
#[test]
fn no_nonce_repeats_across_a_thousand_power_cuts() {
    let cycles = env_u64("EMDB_NONCE_CYCLES", 1000);
    let seed = env_u64("EMDB_NONCE_SEED", fastrand::u64(..));
    eprintln!("nonce cycles: {cycles}, replay with EMDB_NONCE_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let work = tempfile::tempdir().unwrap();
    emdb::nonce_log::start();
    let mut live: PathBuf = work.path().join("live-0");
    let (mut db, mut plan) = tracked(builder(&live));
    let mut cut_at_random = 0u64;
    for cycle in 0..cycles {
        for _ in 0..rng.usize(1..24) {
            let k = format!("k{}", rng.u32(0..400));
            match rng.u8(0..10) {
                0 => {
                    db.remove(&k).unwrap();
                }
                1 => {
                    let batch: Vec<(String, Vec<u8>)> = (0..rng.usize(2..8))
                        .map(|i| {
                            (
                                format!("b{}-{i}", rng.u32(0..50)),
                                vec![i as u8; rng.usize(1..300)],
                            )
                        })
                        .collect();
                    db.insert_many(batch).unwrap();
                }
                _ => db
                    .insert(k.as_str(), vec![cycle as u8; rng.usize(1..1500)])
                    .unwrap(),
            }
            if rng.u8(0..6) == 0 {
                db.flush().unwrap();
            }
        }
        let next = work.path().join(format!("live-{}", cycle + 1));
        match rng.u8(0..20) {
            0 => db.compact().unwrap(),
            1 => {
                // A clean close, and the next cycle reopens the same files.
                db.close().unwrap();
                let (d, p) = tracked(builder(&live));
                (db, plan) = (d, p);
                continue;
            }
            2 => {
                // A backup restored: the next cycle writes to the copy
                // (same database key), while the original is written once
                // more before it is dropped.
                db.backup_to(&next).unwrap();
                db.insert("after-backup", "x").unwrap();
                db.close().unwrap();
                std::fs::remove_dir_all(&live).unwrap();
                live = next;
                let (d, p) = tracked(builder(&live));
                (db, plan) = (d, p);
                continue;
            }
            _ => {}
        }
        let policy = if rng.bool() {
            cut_at_random += 1;
            ImagePolicy::Random
        } else {
            ImagePolicy::DurableOnly
        };
        let next_plan = emdb::FaultPlan::new();
        next_plan.track_durable();
        let (image_db, _) = reopen_image_with(
            &plan,
            &live,
            &next,
            policy,
            rng.u64(..),
            builder(&next).fault_plan(next_plan.clone()),
        );
        plan = next_plan;
        // The old live database goes without a clean close: its shard
        // threads stop, and its files are discarded.
        drop(std::mem::replace(&mut db, image_db));
        std::fs::remove_dir_all(&live).unwrap();
        live = next;
    }
    drop(db);
    let sealed = emdb::nonce_log::take();
    let mut seen = HashSet::with_capacity(sealed.len());
    let mut sessions = HashSet::new();
    for s in &sealed {
        assert!(
            seen.insert(*s),
            "nonce reused: shard {} segment {} key id {:#x} offset {}",
            s.0,
            s.1,
            s.2,
            s.3
        );
        sessions.insert((s.0, s.1, s.2));
    }
    eprintln!(
        "{} frames sealed in {} append sessions, {cut_at_random} cuts at a random point; no pair repeats",
        sealed.len(),
        sessions.len()
    );
    assert!(
        sealed.len() as u64 > cycles * 5,
        "the run sealed too little: {}",
        sealed.len()
    );
    // Torn tails really were rewritten: some offset of some segment was
    // sealed by more than one session.
    let mut offsets = HashSet::new();
    let rewritten = sealed
        .iter()
        .filter(|s| !offsets.insert((s.0, s.1, s.3)))
        .count();
    assert!(
        rewritten > 0,
        "no offset was written twice: the cuts never tore a tail"
    );
}

const ADMIN_CHILD: &str = "EMDB_ADMIN_CHILD";
const RECORDS: u32 = 3000;

fn admin_value(i: u32) -> Vec<u8> {
    format!("value-{i}-").repeat(8).into_bytes()
}

/// The database at `dir` opened with whichever of no key, `KEY` or
/// `OTHER` opens it; every record checked.
fn open_any(dir: &Path) -> (Emdb, &'static str) {
    let tries: [(&str, Option<[u8; 32]>); 3] =
        [("plain", None), ("key", Some(KEY)), ("other", Some(OTHER))];
    let mut errors = Vec::new();
    for (name, key) in tries {
        let b = Emdb::builder()
            .path(dir)
            .max_key_len(64)
            .max_value_len(2048);
        let b = match key {
            Some(k) => b.encryption_key(k),
            None => b,
        };
        match b.build() {
            Ok(db) => return (db, name),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    panic!("the database opens with none of the inputs: {errors:?}");
}

fn check_all(db: &Emdb, how: &str) {
    assert_eq!(db.len().unwrap(), RECORDS as usize, "{how}");
    for i in 0..RECORDS {
        assert_eq!(
            db.get(format!("key-{i}")).unwrap(),
            Some(admin_value(i)),
            "{how}: key {i}"
        );
    }
}

/// The child: enable, rotate, rotate back, disable, over and over, until
/// it is killed.
fn admin_child(dir: &Path) -> ! {
    loop {
        let (db, state) = open_any(dir);
        drop(db);
        let r = match state {
            "plain" => Emdb::enable_encryption(dir, EncryptionInput::Key(KEY)),
            "key" => Emdb::rotate_encryption_key(
                dir,
                EncryptionInput::Key(KEY),
                EncryptionInput::Key(OTHER),
            ),
            _ => Emdb::disable_encryption(dir, EncryptionInput::Key(OTHER)),
        };
        if let Err(e) = r {
            eprintln!("admin call failed: {e}");
            std::process::exit(2);
        }
    }
}

#[test]
fn admin_calls_killed_at_any_point_leave_the_old_or_the_new_database() {
    if let Ok(dir) = std::env::var(ADMIN_CHILD) {
        admin_child(Path::new(&dir));
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("db");
    let db = Emdb::builder()
        .path(&dir)
        .max_key_len(64)
        .max_value_len(2048)
        .build()
        .unwrap();
    db.insert_many((0..RECORDS).map(|i| (format!("key-{i}"), admin_value(i))))
        .unwrap();
    db.close().unwrap();
    let cycles = env_u64("EMDB_ADMIN_CYCLES", 16);
    let mut states = HashSet::new();
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "admin_calls_killed_at_any_point_leave_the_old_or_the_new_database",
                "--exact",
                "--nocapture",
            ])
            .env(ADMIN_CHILD, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..600)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        assert!(
            status.code() != Some(2),
            "cycle {cycle}: an admin call failed"
        );
        let (db, state) = open_any(&dir);
        check_all(&db, &format!("cycle {cycle}, opened as {state}"));
        states.insert(state);
        drop(db);
        // The open removed what the killed call staged.
        let left: Vec<_> = std::fs::read_dir(work.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "cycle {cycle}: {left:?}");
    }
    eprintln!("states seen after kills: {states:?}");
    match Emdb::disable_encryption(&dir, EncryptionInput::Key(KEY)) {
        Ok(()) | Err(Error::Encryption(_)) | Err(Error::EncryptionKeyMismatch) => {}
        Err(e) => panic!("{e}"),
    }
}

/// A power cut at every step of a key rotation (before the new keyring is
/// written, after its write, after its sync, after the rename before the
/// directory's sync, after): the image opens with exactly one of the two
/// keys, holds every record, and opens with the new key whenever the
/// rotation returned `Ok`.
#[test]
fn a_power_cut_during_key_rotation_leaves_the_old_key_or_the_new() {
    let mut seen = HashSet::new();
    for cut in 0..10u64 {
        for durable_only in [true, false] {
            let work = tempfile::tempdir().unwrap();
            let live = work.path().join("db");
            let (db, plan) = tracked(builder(&live));
            for i in 0..200 {
                db.insert(format!("key-{i}"), admin_value(i)).unwrap();
            }
            db.close().unwrap();
            plan.power_off_after_file_changes(cut);
            let rotated = emdb::rotate_encryption_key_under_plan(
                &live,
                EncryptionInput::Key(KEY),
                EncryptionInput::Key(OTHER),
                &plan,
            );
            plan.power_off();
            let image = work.path().join("image");
            let policy = if durable_only {
                ImagePolicy::DurableOnly
            } else {
                ImagePolicy::Random
            };
            let report = plan.durable_image(&live, &image, policy, cut).unwrap();
            let open = |key: [u8; 32]| builder(&image).encryption_key(key).build();
            let what = format!(
                "cut after {cut} file changes, {policy:?}, rotation {rotated:?}, {report:?}"
            );
            let opens = |key: [u8; 32]| match open(key) {
                Ok(db) => {
                    drop(db);
                    true
                }
                Err(Error::EncryptionKeyMismatch) => false,
                Err(e) => panic!("{what}: {e:?}"),
            };
            let (old, new) = (opens(KEY), opens(OTHER));
            assert!(
                old != new,
                "{what}: the old key opens: {old}, the new key opens: {new}"
            );
            if rotated.is_ok() {
                assert!(new, "{what}: a rotation that returned Ok was lost");
            }
            seen.insert(if new { "new" } else { "old" });
            let db = open(if new { OTHER } else { KEY }).unwrap();
            for i in 0..200 {
                assert_eq!(
                    db.get(format!("key-{i}")).unwrap(),
                    Some(admin_value(i)),
                    "{what}"
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "the cuts never landed on both sides: {seen:?}"
    );
}

/// A power cut at every step of `enable_encryption` and
/// `disable_encryption` (the staging database's writes and syncs, its
/// keyring and manifest, the directory exchange, the parent's sync): the
/// image opens as exactly one of the old database and the new one, with
/// every record, and as the new one whenever the call returned `Ok`.
#[test]
fn a_power_cut_during_a_rewrite_leaves_the_old_database_or_the_new() {
    let records = 300u32;
    let mut seen = HashSet::new();
    let mut cut = 0u64;
    loop {
        let mut completed = 0;
        for enable in [true, false] {
            let work = tempfile::tempdir().unwrap();
            let live = work.path().join("db");
            let plain = |p: &Path| Emdb::builder().path(p).max_key_len(64).max_value_len(2048);
            let start = if enable {
                plain(&live)
            } else {
                plain(&live).encryption_key(KEY)
            };
            let (db, plan) = tracked(start);
            for i in 0..records {
                db.insert(format!("key-{i}"), admin_value(i)).unwrap();
            }
            db.close().unwrap();
            plan.power_off_after_file_changes(cut);
            let (from, to) = if enable {
                (None, Some(EncryptionInput::Key(KEY)))
            } else {
                (Some(EncryptionInput::Key(KEY)), None)
            };
            let done = emdb::rewrite_encryption_under_plan(&live, from, to, &plan);
            completed += done.is_ok() as u32;
            plan.power_off();
            let image = work.path().join("image");
            let report = plan
                .durable_image(&live, &image, ImagePolicy::Random, cut)
                .unwrap();
            let what =
                format!("enable {enable}, cut after {cut} file changes, call {done:?}, {report:?}");
            let as_plain = plain(&image).build();
            let plain_ok = match &as_plain {
                Ok(_) => true,
                Err(Error::Encryption(_)) => false,
                Err(e) => panic!("{what}: plaintext open: {e:?}"),
            };
            drop(as_plain);
            let as_enc = plain(&image).encryption_key(KEY).build();
            let enc_ok = match &as_enc {
                Ok(_) => true,
                Err(Error::Encryption(_)) => false,
                Err(e) => panic!("{what}: encrypted open: {e:?}"),
            };
            drop(as_enc);
            assert!(
                plain_ok != enc_ok,
                "{what}: opens plain {plain_ok}, encrypted {enc_ok}"
            );
            let is_new = enc_ok == enable;
            if done.is_ok() {
                assert!(is_new, "{what}: a rewrite that returned Ok was lost");
            }
            seen.insert((enable, is_new));
            let db = if enc_ok {
                plain(&image).encryption_key(KEY).build().unwrap()
            } else {
                plain(&image).build().unwrap()
            };
            assert_eq!(db.len().unwrap(), records as usize, "{what}");
            for i in 0..records {
                assert_eq!(
                    db.get(format!("key-{i}")).unwrap(),
                    Some(admin_value(i)),
                    "{what}"
                );
            }
        }
        // Past the last file change both calls complete.
        if completed == 2 {
            break;
        }
        cut += 1;
        assert!(cut < 400, "the rewrites never completed");
    }
    eprintln!("rewrites cut at 0..{cut} file changes; outcomes seen: {seen:?}");
    assert_eq!(
        seen.len(),
        4,
        "old and new not both seen for enable and disable: {seen:?}"
    );
}
