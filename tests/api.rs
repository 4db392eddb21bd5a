//! Behaviour of every public call of emdb (the surface in notes/API.md): reads
//! and writes, zero-copy reads, iteration, batches, handles, the builder's path
//! rules, statistics, limits, flush policies, persistence across reopen and
//! segment rotation.
//!
//! Disk tests open through the default backend choice (`IoBackend::Auto`), so
//! `EMDB_IO_BACKEND=uring|portable cargo test --test api` runs them on either
//! disk backend.

use emdb::{
    Emdb, EmdbBuilder, EmdbIter, EmdbKeyIter, EmdbStats, Error, FlushPolicy, IoBackend, ValueRef,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

fn open(path: &Path) -> Emdb {
    Emdb::open(path).unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 60 {
        format!(
            "{}...({} bytes)",
            s.chars().take(60).collect::<String>(),
            b.len()
        )
    } else {
        format!("{s:?}")
    }
}

/// Everything `iter()` yields, failing on a key yielded twice.
fn contents(db: &Emdb) -> Map {
    let it: EmdbIter = db.iter().expect("iter");
    let mut m = Map::new();
    for (k, v) in it {
        if m.insert(k.clone(), v).is_some() {
            panic!("iter yielded key {} twice", show(&k));
        }
    }
    m
}

fn diff(expected: &Map, got: &Map) -> String {
    let mut out = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            None => out.push(format!("missing {}", show(k))),
            Some(g) if g != v => {
                out.push(format!("{}: expected {} got {}", show(k), show(v), show(g)))
            }
            _ => {}
        }
    }
    for k in got.keys() {
        if !expected.contains_key(k) {
            out.push(format!("unexpected {}", show(k)));
        }
    }
    let n = out.len();
    out.truncate(12);
    format!("{n} differences, first: {}", out.join("; "))
}

/// Checks the database holds exactly `expected`, through iter, keys, get, len.
fn assert_contents(db: &Emdb, expected: &Map, ctx: &str) {
    let got = contents(db);
    assert!(&got == expected, "{ctx}: iter: {}", diff(expected, &got));
    let keys_it: EmdbKeyIter = db.keys().expect("keys");
    let mut keys: Vec<Vec<u8>> = keys_it.collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(n, keys.len(), "{ctx}: keys() yielded a key twice");
    let expected_keys: Vec<Vec<u8>> = expected.keys().cloned().collect();
    assert!(
        keys == expected_keys,
        "{ctx}: keys() differ from the expected key set"
    );
    for (k, v) in expected {
        let g = db
            .get(k)
            .unwrap_or_else(|e| panic!("{ctx}: get {}: {e:?}", show(k)));
        assert!(
            g.as_ref() == Some(v),
            "{ctx}: get {} = {:?}",
            show(k),
            g.map(|g| show(&g))
        );
    }
    assert_eq!(db.len().expect("len"), expected.len(), "{ctx}: len");
    assert_eq!(
        db.is_empty().expect("is_empty"),
        expected.is_empty(),
        "{ctx}: is_empty"
    );
}

fn seg_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read db dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().map(|e| e == ext).unwrap_or(false))
        .collect();
    v.sort();
    v
}

/// A value of `len` bytes that depends on `seed`, so distinct writes differ.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

// ---------------------------------------------------------------------------
// Child-process support: a test re-executes this binary to run one role in a
// separate process (used where a test needs a process to die abruptly).

const CHILD_ROLE: &str = "EMDB_API_TEST_CHILD_ROLE";
const CHILD_DIR: &str = "EMDB_API_TEST_CHILD_DIR";

fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(CHILD_ROLE).ok()?;
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("child dir env"));
    Some((role, dir))
}

fn run_child(
    test_name: &str,
    role: &str,
    dir: &Path,
    extra_env: &[(&str, &str)],
    remove_env: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    for k in remove_env {
        cmd.env_remove(k);
    }
    cmd.output().expect("spawn child test process")
}

fn child_lines(out: &std::process::Output, prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| after_marker(l, prefix).map(|s| s.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Reads and writes

#[test]
#[allow(clippy::needless_borrows_for_generic_args)] // `&String` is one of the argument kinds under test
fn insert_get_and_replace() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    assert_eq!(db.get("a").unwrap(), None);
    db.insert("a", "1").unwrap();
    assert_eq!(db.get("a").unwrap(), Some(b"1".to_vec()));
    db.insert("a", "22").unwrap();
    assert_eq!(
        db.get("a").unwrap(),
        Some(b"22".to_vec()),
        "insert replaces silently"
    );
    assert_eq!(db.len().unwrap(), 1, "replacing does not add a record");

    // Every argument kind the contract names.
    db.insert(String::from("string-key"), String::from("string-value"))
        .unwrap();
    db.insert(&b"slice-key"[..], &b"slice-value"[..]).unwrap();
    db.insert(vec![0u8, 255, 0, 1], vec![9u8; 1000]).unwrap();
    db.insert(b"array-ref", b"array-ref-value").unwrap();
    db.insert([7u8; 4], [8u8; 2]).unwrap();
    db.insert("empty-value", "").unwrap();

    assert_eq!(
        db.get(String::from("string-key")).unwrap(),
        Some(b"string-value".to_vec())
    );
    assert_eq!(
        db.get(&String::from("string-key")).unwrap(),
        Some(b"string-value".to_vec())
    );
    assert_eq!(
        db.get(&b"slice-key"[..]).unwrap(),
        Some(b"slice-value".to_vec())
    );
    assert_eq!(db.get(vec![0u8, 255, 0, 1]).unwrap(), Some(vec![9u8; 1000]));
    assert_eq!(
        db.get(b"array-ref").unwrap(),
        Some(b"array-ref-value".to_vec())
    );
    assert_eq!(db.get([7u8; 4]).unwrap(), Some(vec![8u8; 2]));
    assert_eq!(
        db.get("empty-value").unwrap(),
        Some(Vec::new()),
        "an empty value is a value"
    );
    assert_eq!(
        db.get(vec![0u8, 255, 0]).unwrap(),
        None,
        "a prefix of a key is another key"
    );
    assert_eq!(db.len().unwrap(), 7);
}

#[test]
#[allow(clippy::op_ref)] // `v == &slice` exercises PartialEq<&[u8]>
fn get_zerocopy_value_ref_methods() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    db.insert("k", "hello").unwrap();
    db.insert("empty", "").unwrap();
    {
        let v: ValueRef<'_> = db.get_zerocopy("k").unwrap().expect("k present");
        assert_eq!(v.len(), 5);
        assert!(!v.is_empty());
        assert_eq!(v.as_slice(), b"hello");
        let deref: &[u8] = &v;
        assert_eq!(deref, b"hello");
        assert_eq!(&v[1..3], b"el", "Deref<Target=[u8]> gives slicing");
        assert_eq!(AsRef::<[u8]>::as_ref(&v), b"hello");
        assert!(v == b"hello"[..], "PartialEq<[u8]>");
        assert!(v == &b"hello"[..], "PartialEq<&[u8]>");
        assert!(v != b"hellO"[..]);
        assert!(v != &b"hell"[..]);
        assert_eq!(v.into_vec(), b"hello".to_vec());
    }
    let e = db.get_zerocopy("empty").unwrap().expect("empty present");
    assert!(e.is_empty());
    assert_eq!(e.len(), 0);
    assert_eq!(e.as_slice(), b"");
    drop(e);
    assert!(db.get_zerocopy("missing").unwrap().is_none());
    db.remove("k").unwrap();
    assert!(
        db.get_zerocopy("k").unwrap().is_none(),
        "removed key has no zero-copy value"
    );
}

#[test]
fn get_zerocopy_stays_valid_after_later_writes_overwrite_remove_and_rotation() {
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::builder()
        .path(&dir)
        .segment_size(64 * 1024)
        .max_key_len(1024)
        .max_value_len(16 * 1024)
        .build()
        .unwrap();
    let held_value = pattern(1, 3000);
    let doomed_value = pattern(2, 777);
    db.insert("held", held_value.clone()).unwrap();
    db.insert("doomed", doomed_value.clone()).unwrap();

    // Taken while the records may still sit in the tail buffer.
    let held = db.get_zerocopy("held").unwrap().expect("held present");
    let doomed = db.get_zerocopy("doomed").unwrap().expect("doomed present");
    assert_eq!(held.as_slice(), &held_value[..]);

    // Writes of other keys, enough to rotate segments many times.
    for i in 0..400u64 {
        db.insert(format!("other-{i}"), pattern(100 + i, 4000))
            .unwrap();
        if i == 200 {
            db.flush().unwrap();
        }
    }
    assert_eq!(
        held.as_slice(),
        &held_value[..],
        "after writes of other keys"
    );

    // Overwrite the same key, several times, with other lengths.
    for i in 0..5u64 {
        db.insert("held", pattern(1000 + i, 10 + 2000 * i as usize))
            .unwrap();
    }
    assert!(db.remove("doomed").unwrap().is_some());
    db.flush().unwrap();
    db.checkpoint().unwrap();
    for i in 400..500u64 {
        db.insert(format!("other-{i}"), pattern(100 + i, 4000))
            .unwrap();
    }

    assert_eq!(
        held.as_slice(),
        &held_value[..],
        "after overwrite of the same key"
    );
    assert_eq!(held.len(), held_value.len());
    assert_eq!(
        doomed.as_slice(),
        &doomed_value[..],
        "after remove of the key"
    );
    assert_eq!(db.get("held").unwrap(), Some(pattern(1004, 8010)));
    let fresh = db.get_zerocopy("held").unwrap().expect("held present");
    assert_eq!(fresh.as_slice(), &pattern(1004, 8010)[..]);
    assert_eq!(db.get("doomed").unwrap(), None);
    assert_eq!(held.into_vec(), held_value);
}

#[test]
fn remove_returns_the_prior_value() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    assert_eq!(db.remove("nothing").unwrap(), None);
    db.insert("k", "v1").unwrap();
    db.insert("k", "v2").unwrap();
    db.insert("other", "o").unwrap();
    assert_eq!(db.remove("k").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(db.remove("k").unwrap(), None, "second remove finds nothing");
    assert_eq!(db.get("k").unwrap(), None);
    assert!(!db.contains_key("k").unwrap());
    assert_eq!(db.len().unwrap(), 1);
    db.insert("k", "v3").unwrap();
    assert_eq!(
        db.get("k").unwrap(),
        Some(b"v3".to_vec()),
        "reinsert after remove"
    );
    assert_eq!(db.remove(String::from("k")).unwrap(), Some(b"v3".to_vec()));
    db.insert("empty", "").unwrap();
    assert_eq!(
        db.remove("empty").unwrap(),
        Some(Vec::new()),
        "prior empty value is Some(empty)"
    );
    assert_eq!(db.get("other").unwrap(), Some(b"o".to_vec()));
}

#[test]
fn contains_key_tracks_inserts_and_removes() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    assert!(!db.contains_key("a").unwrap());
    db.insert("a", "1").unwrap();
    db.insert("e", "").unwrap();
    assert!(db.contains_key("a").unwrap());
    assert!(db.contains_key(b"a").unwrap());
    assert!(
        db.contains_key("e").unwrap(),
        "a key with an empty value exists"
    );
    assert!(!db.contains_key("ab").unwrap());
    db.remove("a").unwrap();
    assert!(!db.contains_key("a").unwrap());
    db.clear().unwrap();
    assert!(!db.contains_key("e").unwrap());
}

#[test]
fn len_is_empty_and_clear() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = open(&dir);
        assert_eq!(db.len().unwrap(), 0);
        assert!(db.is_empty().unwrap());
        for i in 0..50 {
            db.insert(format!("k{i}"), format!("v{i}")).unwrap();
        }
        assert_eq!(db.len().unwrap(), 50);
        assert!(!db.is_empty().unwrap());
        db.insert("k0", "again").unwrap();
        assert_eq!(db.len().unwrap(), 50, "overwrite keeps len");
        db.remove("k1").unwrap();
        db.remove("not-there").unwrap();
        assert_eq!(db.len().unwrap(), 49);
        db.flush().unwrap();

        db.clear().unwrap();
        assert_eq!(db.len().unwrap(), 0);
        assert!(db.is_empty().unwrap());
        assert_eq!(db.iter().unwrap().count(), 0);
        assert_eq!(db.keys().unwrap().count(), 0);
        assert_eq!(db.get("k0").unwrap(), None);
        assert_eq!(db.get("k2").unwrap(), None);
        assert_eq!(db.stats().unwrap().live_records, 0);

        db.insert("after-clear", "x").unwrap();
        db.insert("k5", "new5").unwrap();
        assert_eq!(db.len().unwrap(), 2);
        db.clear().unwrap();
        db.clear().unwrap();
        db.insert("last", "y").unwrap();
        db.flush().unwrap();
    }
    let db = open(&dir);
    let expected: Map = [(b"last".to_vec(), b"y".to_vec())].into_iter().collect();
    assert_contents(&db, &expected, "after clear and reopen");
}

#[test]
fn iter_and_keys_match_a_hashmap() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(7);
    {
        let db = open(&dir);
        for i in 0..2000u64 {
            let k = format!("key-{}", rng.u32(0..600)).into_bytes();
            if rng.u8(0..5) == 0 {
                assert_eq!(db.remove(&k).unwrap(), model.remove(&k));
            } else {
                let v = pattern(i, rng.usize(0..300));
                db.insert(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
        }
        let expected: Map = model.clone().into_iter().collect();
        assert_contents(&db, &expected, "before reopen");
        let pairs: HashMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().collect();
        assert_eq!(pairs, model);
        let keys: BTreeSet<Vec<u8>> = db.keys().unwrap().collect();
        assert_eq!(keys, model.keys().cloned().collect::<BTreeSet<_>>());
    }
    let db = open(&dir);
    let pairs: HashMap<Vec<u8>, Vec<u8>> = db.iter().unwrap().collect();
    assert_eq!(pairs.len(), model.len());
    assert!(pairs == model, "iter after reopen differs from the model");
}

#[test]
fn iter_is_a_point_in_time_snapshot() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    let mut before = Map::new();
    for i in 0..200 {
        let (k, v) = (
            format!("k{i:03}").into_bytes(),
            format!("v{i}").into_bytes(),
        );
        db.insert(k.clone(), v.clone()).unwrap();
        before.insert(k, v);
    }
    let it = db.iter().unwrap();
    let keys_it = db.keys().unwrap();
    // Writes after the snapshot: new keys, overwrites, removes, a clear.
    for i in 0..100 {
        db.insert(format!("k{i:03}"), "changed").unwrap();
        db.insert(format!("new{i}"), "n").unwrap();
    }
    for i in 100..150 {
        db.remove(format!("k{i:03}")).unwrap();
    }
    db.clear().unwrap();
    db.insert("after", "a").unwrap();
    let mut seen = Map::new();
    for (k, v) in it {
        assert!(seen.insert(k, v).is_none(), "duplicate key in snapshot");
    }
    assert!(
        seen == before,
        "iter() is not the point-in-time view: {}",
        diff(&before, &seen)
    );
    let keys: BTreeSet<Vec<u8>> = keys_it.collect();
    assert!(
        keys == before.keys().cloned().collect(),
        "keys() is not the point-in-time view"
    );
}

#[test]
fn insert_many_writes_every_pair() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut expected = Map::new();
    {
        let db = open(&dir);
        db.insert("existing", "old").unwrap();
        let batch: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("b{i}"), pattern(i, (i * 7) as usize % 500)))
            .collect();
        db.insert_many(batch.clone()).unwrap();
        for (k, v) in &batch {
            expected.insert(k.clone().into_bytes(), v.clone());
        }
        // Other item kinds; overwrite of an existing key inside a batch.
        db.insert_many([("existing", "new"), ("x", "1")]).unwrap();
        db.insert_many(vec![(b"y".to_vec(), b"2".to_vec())])
            .unwrap();
        db.insert_many(vec![(&b"z"[..], &b""[..])]).unwrap();
        expected.insert(b"existing".to_vec(), b"new".to_vec());
        expected.insert(b"x".to_vec(), b"1".to_vec());
        expected.insert(b"y".to_vec(), b"2".to_vec());
        expected.insert(b"z".to_vec(), b"".to_vec());
        // An empty batch is a no-op.
        db.insert_many(Vec::<(Vec<u8>, Vec<u8>)>::new()).unwrap();
        assert_contents(&db, &expected, "after insert_many");
        db.flush().unwrap();
    }
    let db = open(&dir);
    assert_contents(&db, &expected, "insert_many after reopen");
}

#[test]
fn clone_handle_sees_and_shares_the_same_data() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let a = open(&dir);
        let b = a.clone_handle();
        assert_eq!(a.path(), b.path());
        a.insert("from-a", "1").unwrap();
        b.insert("from-b", "2").unwrap();
        assert_eq!(b.get("from-a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(a.get("from-b").unwrap(), Some(b"2".to_vec()));
        b.remove("from-a").unwrap();
        assert_eq!(a.get("from-a").unwrap(), None);
        assert_eq!(a.len().unwrap(), 1);
        drop(a);
        // The clone keeps the database alive and writable.
        b.insert("after-drop-of-a", "3").unwrap();
        assert_eq!(b.get("from-b").unwrap(), Some(b"2".to_vec()));
        let c = b.clone_handle();
        drop(b);
        assert_eq!(c.get("after-drop-of-a").unwrap(), Some(b"3".to_vec()));
    }
    let db = open(&dir);
    let expected: Map = [
        (b"from-b".to_vec(), b"2".to_vec()),
        (b"after-drop-of-a".to_vec(), b"3".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_contents(&db, &expected, "after all handles dropped and reopen");
}

#[test]
fn path_reports_the_database_directory() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = open(&dir);
        assert!(dir.is_dir(), "open creates the directory");
        assert_eq!(
            db.path().canonicalize().unwrap(),
            dir.canonicalize().unwrap()
        );
    }
    let db = Emdb::builder().path(&dir).build().unwrap();
    assert_eq!(
        db.path().canonicalize().unwrap(),
        dir.canonicalize().unwrap()
    );
    let mem = Emdb::open_in_memory();
    assert_eq!(
        mem.path().as_os_str(),
        "",
        "in-memory database has an empty path"
    );
}

#[test]
fn open_in_memory_supports_every_operation() {
    let db = Emdb::open_in_memory();
    let other = Emdb::open_in_memory();
    db.insert("a", "1").unwrap();
    db.insert_many(vec![("b", "2"), ("c", "3")]).unwrap();
    assert_eq!(db.get("a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get_zerocopy("b").unwrap().expect("b").as_slice(), b"2");
    assert!(db.contains_key("c").unwrap());
    assert_eq!(db.remove("c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(db.len().unwrap(), 2);
    assert_eq!(
        other.len().unwrap(),
        0,
        "two in-memory databases are independent"
    );
    let h = db.clone_handle();
    h.insert("d", "4").unwrap();
    assert_eq!(db.get("d").unwrap(), Some(b"4".to_vec()));
    db.flush().unwrap();
    db.checkpoint().unwrap();
    let s = db.stats().unwrap();
    assert!(
        matches!(s.io_backend, IoBackend::Memory),
        "in-memory backend: {:?}",
        s.io_backend
    );
    assert_eq!(s.live_records, 3);
    let m: Map = db.iter().unwrap().collect();
    assert_eq!(m.len(), 3);
    db.clear().unwrap();
    assert!(h.is_empty().unwrap());
}

// ---------------------------------------------------------------------------
// Builder path resolution

#[test]
fn builder_resolves_app_and_database_name_under_data_root() {
    let t = tmp();
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let build = |name: &str| {
        Emdb::builder()
            .data_root(&root)
            .app_name("emdb-test-app")
            .database_name(name)
            .build()
    };
    let path;
    {
        let db = build("main").expect("app_name + database_name + data_root builds");
        path = db.path().to_path_buf();
        assert!(
            path.starts_with(root.join("emdb-test-app")),
            "{} is not under data_root/app_name",
            path.display()
        );
        assert!(
            path != root.join("emdb-test-app"),
            "database_name must select a database inside the app folder"
        );
        let last = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        assert!(
            last.contains("main"),
            "database_name not in path {}",
            path.display()
        );
        assert!(path.exists(), "resolved database path exists after build");
        db.insert("k", "v").unwrap();
        db.flush().unwrap();
    }
    {
        let again = build("main").unwrap();
        assert_eq!(
            again.path(),
            path.as_path(),
            "same builder resolves to the same path"
        );
        assert_eq!(again.get("k").unwrap(), Some(b"v".to_vec()));
        let other = build("other").unwrap();
        assert_ne!(other.path(), path.as_path());
        assert_eq!(
            other.get("k").unwrap(),
            None,
            "another database_name is another database"
        );
    }
    let direct = Emdb::open(&path).unwrap();
    assert_eq!(direct.get("k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn builder_resolves_under_xdg_data_home_then_home() {
    const NAME: &str = "builder_resolves_under_xdg_data_home_then_home";
    if child_role().is_some() {
        match Emdb::builder()
            .app_name("emdb-xdg-app")
            .database_name("db1")
            .build()
        {
            Ok(db) => println!("EMDB_CHILD path={}", db.path().display()),
            Err(e) => println!("EMDB_CHILD err={e:?}"),
        }
        return;
    }
    let t = tmp();
    let xdg = t.path().join("xdg");
    let home = t.path().join("home");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::create_dir_all(&home).unwrap();

    let out = run_child(
        NAME,
        "xdg",
        t.path(),
        &[
            ("XDG_DATA_HOME", xdg.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
        ],
        &[],
    );
    let lines = child_lines(&out, "EMDB_CHILD ");
    assert_eq!(
        lines.len(),
        1,
        "child output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = lines[0]
        .strip_prefix("path=")
        .unwrap_or_else(|| panic!("child: {}", lines[0]));
    assert!(
        Path::new(p).starts_with(xdg.join("emdb-xdg-app")),
        "with XDG_DATA_HOME set: {p}"
    );

    let out = run_child(
        NAME,
        "home",
        t.path(),
        &[("HOME", home.to_str().unwrap())],
        &["XDG_DATA_HOME"],
    );
    let lines = child_lines(&out, "EMDB_CHILD ");
    assert_eq!(
        lines.len(),
        1,
        "child output: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = lines[0]
        .strip_prefix("path=")
        .unwrap_or_else(|| panic!("child: {}", lines[0]));
    assert!(
        Path::new(p).starts_with(home.join(".local/share/emdb-xdg-app")),
        "without XDG_DATA_HOME: {p}"
    );
}

#[test]
fn builder_with_path_and_app_name_is_invalid_config() {
    let t = tmp();
    let r = Emdb::builder()
        .path(t.path().join("db"))
        .app_name("app")
        .database_name("x")
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "path + app_name: {:?}",
        r.err()
    );
    let r = Emdb::builder()
        .app_name("app")
        .database_name("x")
        .path(t.path().join("db"))
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "app_name + path: {:?}",
        r.err()
    );
    let r = Emdb::builder()
        .path(t.path().join("db"))
        .data_root(t.path())
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "path + data_root: {:?}",
        r.err()
    );
    assert!(
        !t.path().join("db").exists(),
        "a rejected config created the database"
    );
}

#[test]
fn builder_without_path_or_app_name_is_invalid_config() {
    let t = tmp();
    let b: EmdbBuilder = Emdb::builder();
    let r = b.build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "no location: {:?}",
        r.err()
    );
    let r = EmdbBuilder::new().build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "EmdbBuilder::new(): {:?}",
        r.err()
    );
    let r = Emdb::builder()
        .data_root(t.path())
        .database_name("x")
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "database_name without app_name: {:?}",
        r.err()
    );
    assert_eq!(
        std::fs::read_dir(t.path()).unwrap().count(),
        0,
        "a rejected config created files"
    );
}

#[test]
fn builder_rejects_bad_app_names() {
    let t = tmp();
    for bad in ["a/b", "..", "", "../escape", "a\\b", "/abs"] {
        let r = Emdb::builder()
            .data_root(t.path())
            .app_name(bad)
            .database_name("db")
            .build();
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "app_name {bad:?}: {:?}",
            r.err()
        );
    }
    assert_eq!(
        std::fs::read_dir(t.path()).unwrap().count(),
        0,
        "a rejected app_name created files"
    );
    // A plain name with dots inside is one folder name and is fine.
    let ok = Emdb::builder()
        .data_root(t.path())
        .app_name("com.example.app")
        .database_name("db")
        .build();
    assert!(ok.is_ok(), "plain app name rejected: {:?}", ok.err());
}

#[test]
fn segment_size_below_minimum_is_invalid_config() {
    let t = tmp();
    let r = Emdb::builder()
        .path(t.path().join("db"))
        .segment_size(1024)
        .build();
    assert!(
        matches!(r, Err(Error::InvalidConfig(_))),
        "segment_size 1024: {:?}",
        r.err()
    );
    let r = Emdb::builder()
        .path(t.path().join("db2"))
        .segment_size(4096)
        .max_key_len(64)
        .max_value_len(1024)
        .build();
    assert!(
        r.is_ok(),
        "segment_size 4096 is the documented minimum: {:?}",
        r.err()
    );
    let db = r.unwrap();
    for i in 0..40 {
        db.insert(format!("k{i}"), vec![i as u8; 1000]).unwrap();
    }
    drop(db);
    let db = Emdb::builder()
        .path(t.path().join("db2"))
        .segment_size(4096)
        .max_key_len(64)
        .max_value_len(1024)
        .build()
        .unwrap();
    assert_eq!(db.len().unwrap(), 40);
    assert_eq!(db.get("k39").unwrap(), Some(vec![39u8; 1000]));
}

#[test]
fn errors_display_and_act_as_std_errors() {
    let Err(e) = Emdb::builder().build() else {
        panic!("no location must be an error");
    };
    let msg = e.to_string();
    assert!(!msg.is_empty());
    let boxed: Box<dyn std::error::Error + Send + Sync + 'static> = Box::new(e);
    assert_eq!(boxed.to_string(), msg);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Emdb>();
    send_sync::<Error>();
}

// ---------------------------------------------------------------------------
// Statistics

fn backend_from_env() -> Option<String> {
    std::env::var("EMDB_IO_BACKEND")
        .ok()
        .filter(|s| !s.is_empty())
}

#[test]
fn stats_report_records_backend_shards_and_flushes() {
    let t = tmp();
    let dir = t.path().join("db");
    let db = Emdb::builder().path(&dir).shards(3).build().unwrap();
    let s0: EmdbStats = db.stats().unwrap();
    assert_eq!(s0.live_records, 0);
    assert_eq!(s0.shards, 3, "shards as configured");
    assert!(
        !matches!(s0.io_backend, IoBackend::Auto),
        "stats must name the backend in use"
    );
    assert!(
        !matches!(s0.io_backend, IoBackend::Memory),
        "a disk database uses a disk backend"
    );
    match backend_from_env().as_deref() {
        Some("portable") => assert!(
            matches!(s0.io_backend, IoBackend::Portable),
            "EMDB_IO_BACKEND=portable, got {:?}",
            s0.io_backend
        ),
        Some("uring") => assert!(
            matches!(s0.io_backend, IoBackend::Uring),
            "EMDB_IO_BACKEND=uring, got {:?}",
            s0.io_backend
        ),
        _ => {}
    }
    assert!(!s0.encrypted);

    for i in 0..100 {
        db.insert(format!("k{i}"), vec![b'x'; 100]).unwrap();
    }
    db.remove("k0").unwrap();
    db.insert("k1", "overwritten").unwrap();
    db.flush().unwrap();
    let s1 = db.stats().unwrap();
    assert_eq!(s1.live_records, 99);
    assert!(
        s1.device_flushes > s0.device_flushes,
        "device_flushes {} -> {} after insert+flush",
        s0.device_flushes,
        s1.device_flushes
    );
    assert!(
        s1.durable_records > s0.durable_records,
        "durable_records {} -> {}",
        s0.durable_records,
        s1.durable_records
    );
    assert!(s1.records_per_flush.is_finite() && s1.records_per_flush >= 0.0);
    assert!(s1.file_size_bytes > 0);
    assert!(s1.logical_size_bytes > 0);

    db.insert("more", "m").unwrap();
    db.flush().unwrap();
    let s2 = db.stats().unwrap();
    assert!(
        s2.device_flushes > s1.device_flushes,
        "second flush issued no device flush"
    );
    db.clear().unwrap();
    assert_eq!(db.stats().unwrap().live_records, 0);
}

#[test]
fn default_shard_count_is_the_available_parallelism() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert_eq!(db.stats().unwrap().shards, cpus.max(1));
}

#[test]
fn shard_count_is_fixed_at_creation() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = Emdb::builder().path(&dir).shards(3).build().unwrap();
        for i in 0..300 {
            db.insert(format!("k{i}"), format!("v{i}")).unwrap();
        }
    }
    let db = Emdb::builder().path(&dir).shards(1).build().unwrap();
    assert_eq!(
        db.stats().unwrap().shards,
        3,
        "the manifest's shard count wins on reopen"
    );
    for i in 0..300 {
        assert_eq!(
            db.get(format!("k{i}")).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    db.insert("new", "n").unwrap();
    drop(db);
    let db = open(&dir);
    assert_eq!(db.stats().unwrap().shards, 3);
    assert_eq!(db.len().unwrap(), 301);
}

// ---------------------------------------------------------------------------
// Limits: each rejected call leaves the database usable with its data intact.

fn assert_limit(r: emdb::Result<()>, len: Option<usize>, max: usize, ctx: &str) {
    match r {
        Err(Error::LimitExceeded {
            len: l,
            max: m,
            what,
        }) => {
            assert!(!what.is_empty(), "{ctx}: LimitExceeded.what is empty");
            assert_eq!(m, max, "{ctx}: LimitExceeded.max");
            match len {
                Some(len) => assert_eq!(l, len, "{ctx}: LimitExceeded.len"),
                None => assert!(l > m, "{ctx}: LimitExceeded.len {l} not over max {m}"),
            }
        }
        other => panic!("{ctx}: expected Err(LimitExceeded), got {other:?}"),
    }
}

#[test]
fn key_over_max_key_len_is_rejected_and_db_stays_usable() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = Emdb::builder().path(&dir).max_key_len(16).build().unwrap();
        db.insert("before", "b").unwrap();
        db.insert(vec![b'k'; 16], "at-limit").unwrap();
        assert_limit(
            db.insert(vec![b'k'; 17], "x"),
            Some(17),
            16,
            "insert 17-byte key",
        );
        let batch = vec![
            (b"batch-ok".to_vec(), b"1".to_vec()),
            (vec![b'q'; 40], b"2".to_vec()),
        ];
        assert_limit(
            db.insert_many(batch),
            Some(40),
            16,
            "insert_many with a 40-byte key",
        );
        assert_eq!(
            db.get("batch-ok").unwrap(),
            None,
            "a rejected batch must write nothing"
        );
        db.insert("after", "a").unwrap();
        assert_eq!(db.get("before").unwrap(), Some(b"b".to_vec()));
        assert_eq!(db.get(vec![b'k'; 16]).unwrap(), Some(b"at-limit".to_vec()));
        assert_eq!(db.len().unwrap(), 3);
        db.flush().unwrap();
    }
    let db = open(&dir);
    let expected: Map = [
        (b"before".to_vec(), b"b".to_vec()),
        (vec![b'k'; 16], b"at-limit".to_vec()),
        (b"after".to_vec(), b"a".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_contents(&db, &expected, "after rejected keys and reopen");
}

#[test]
fn value_over_max_value_len_is_rejected_and_db_stays_usable() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = Emdb::builder()
            .path(&dir)
            .max_value_len(100)
            .build()
            .unwrap();
        db.insert("before", vec![1u8; 100]).unwrap();
        assert_limit(
            db.insert("big", vec![2u8; 101]),
            Some(101),
            100,
            "insert 101-byte value",
        );
        assert_limit(
            db.insert("before", vec![3u8; 5000]),
            Some(5000),
            100,
            "overwrite with a 5000-byte value",
        );
        let batch = vec![
            (b"b1".to_vec(), vec![0u8; 10]),
            (b"b2".to_vec(), vec![0u8; 101]),
        ];
        assert_limit(
            db.insert_many(batch),
            Some(101),
            100,
            "insert_many with a 101-byte value",
        );
        assert_eq!(
            db.get("b1").unwrap(),
            None,
            "a rejected batch must write nothing"
        );
        assert_eq!(db.get("big").unwrap(), None);
        assert_eq!(
            db.get("before").unwrap(),
            Some(vec![1u8; 100]),
            "rejected overwrite kept the old value"
        );
        db.insert("after", "a").unwrap();
        db.flush().unwrap();
    }
    let db = open(&dir);
    let expected: Map = [
        (b"before".to_vec(), vec![1u8; 100]),
        (b"after".to_vec(), b"a".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_contents(&db, &expected, "after rejected values and reopen");
}

/// emdb accepts the empty key; so does this crate, so code written for emdb
/// runs unchanged. It is a key like any other, across a reopen too.
#[test]
fn the_empty_key_is_a_key_like_any_other() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = open(&dir);
        db.insert("before", "b").unwrap();
        assert_eq!(db.get("").unwrap(), None);
        assert!(!db.contains_key("").unwrap());
        db.insert("", "v1").unwrap();
        assert_eq!(db.get("").unwrap().as_deref(), Some(&b"v1"[..]));
        db.insert(Vec::<u8>::new(), "v2").unwrap();
        assert_eq!(db.get_zerocopy("").unwrap().unwrap(), b"v2");
        assert!(db.contains_key(Vec::<u8>::new()).unwrap());
        assert_eq!(db.len().unwrap(), 2);
        assert_eq!(db.remove("").unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(db.remove("").unwrap(), None);
        db.insert_many(vec![("in-batch", "1"), ("", "2")]).unwrap();
        assert!(db.keys().unwrap().any(|k| k.is_empty()));
        db.flush().unwrap();
    }
    let db = open(&dir);
    let expected: Map = [
        (b"before".to_vec(), b"b".to_vec()),
        (b"in-batch".to_vec(), b"1".to_vec()),
        (Vec::new(), b"2".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_contents(&db, &expected, "with the empty key, after reopen");
}

#[test]
fn batch_over_max_batch_records_is_rejected_and_db_stays_usable() {
    let t = tmp();
    let dir = t.path().join("db");
    let four: Vec<(String, String)> = (0..4)
        .map(|i| (format!("ok{i}"), format!("v{i}")))
        .collect();
    {
        let db = Emdb::builder()
            .path(&dir)
            .max_batch_records(4)
            .build()
            .unwrap();
        db.insert("before", "b").unwrap();
        db.insert_many(four.clone()).unwrap();
        let five: Vec<(String, String)> = (0..5)
            .map(|i| (format!("no{i}"), format!("v{i}")))
            .collect();
        assert_limit(
            db.insert_many(five),
            Some(5),
            4,
            "insert_many of 5 records with max 4",
        );
        for i in 0..5 {
            assert_eq!(
                db.get(format!("no{i}")).unwrap(),
                None,
                "a rejected batch must write nothing"
            );
        }
        db.insert("after", "a").unwrap();
        assert_eq!(db.len().unwrap(), 6);
    }
    let db = open(&dir);
    let mut expected: Map = four
        .iter()
        .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    expected.insert(b"before".to_vec(), b"b".to_vec());
    expected.insert(b"after".to_vec(), b"a".to_vec());
    assert_contents(&db, &expected, "after rejected batch and reopen");
}

#[test]
fn batch_over_max_batch_bytes_is_rejected_and_db_stays_usable() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = Emdb::builder()
            .path(&dir)
            .max_batch_bytes(1000)
            .build()
            .unwrap();
        db.insert("before", "b").unwrap();
        db.insert_many(vec![("s1", vec![1u8; 100]), ("s2", vec![2u8; 100])])
            .unwrap();
        let big = vec![
            ("x1", vec![1u8; 400]),
            ("x2", vec![2u8; 400]),
            ("x3", vec![3u8; 400]),
        ];
        assert_limit(
            db.insert_many(big),
            None,
            1000,
            "insert_many of 1200+ bytes with max 1000",
        );
        assert_eq!(
            db.get("x1").unwrap(),
            None,
            "a rejected batch must write nothing"
        );
        db.insert("after", "a").unwrap();
        assert_eq!(db.len().unwrap(), 4);
    }
    let db = open(&dir);
    let expected: Map = [
        (b"before".to_vec(), b"b".to_vec()),
        (b"s1".to_vec(), vec![1u8; 100]),
        (b"s2".to_vec(), vec![2u8; 100]),
        (b"after".to_vec(), b"a".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_contents(&db, &expected, "after rejected batch bytes and reopen");
}

#[test]
fn default_limits_reject_oversized_keys_and_values() {
    let t = tmp();
    let db = open(&t.path().join("db"));
    db.insert("keep", "k").unwrap();
    let r = db.insert(vec![b'k'; 1 << 20], "v");
    assert!(
        matches!(r, Err(Error::LimitExceeded { .. })),
        "1 MiB key with default limits: {r:?}"
    );
    let r = db.insert("v", vec![0u8; 16 * 1024 * 1024 + 1]);
    assert!(
        matches!(r, Err(Error::LimitExceeded { .. })),
        "16 MiB + 1 value with default limits: {r:?}"
    );
    db.insert("mib", vec![5u8; 1 << 20]).unwrap();
    assert_eq!(db.get("mib").unwrap().map(|v| v.len()), Some(1 << 20));
    assert_eq!(db.get("keep").unwrap(), Some(b"k".to_vec()));
}

#[test]
fn value_larger_than_a_segment_is_rejected_or_stored() {
    let t = tmp();
    let dir = t.path().join("db");
    let b = Emdb::builder()
        .path(&dir)
        .segment_size(64 * 1024)
        .max_value_len(1 << 20);
    let db = match b.build() {
        Err(Error::InvalidConfig(_)) => return, // a config whose values cannot fit a segment may be refused
        Err(e) => panic!("unexpected error: {e:?}"),
        Ok(db) => db,
    };
    let big = pattern(9, 200 * 1024);
    match db.insert("big", big.clone()) {
        Ok(()) => {
            db.insert("small", "s").unwrap();
            drop(db);
            let db = open(&dir);
            assert_eq!(
                db.get("big").unwrap(),
                Some(big),
                "stored oversized value lost on reopen"
            );
            assert_eq!(db.get("small").unwrap(), Some(b"s".to_vec()));
        }
        Err(Error::LimitExceeded { .. }) => {
            db.insert("small", "s").unwrap();
            assert_eq!(db.get("big").unwrap(), None);
        }
        Err(e) => panic!("value larger than a segment: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// Flush policies and persistence

#[test]
fn write_through_inserts_survive_process_abort_without_flush() {
    const NAME: &str = "write_through_inserts_survive_process_abort_without_flush";
    const N: usize = 300;
    if let Some((role, dir)) = child_role() {
        assert_eq!(role, "write_through");
        let db = Emdb::builder()
            .path(&dir)
            .flush_policy(FlushPolicy::WriteThrough)
            .build()
            .unwrap();
        for i in 0..N {
            db.insert(format!("k{i}"), pattern(i as u64, 50 + i))
                .unwrap();
        }
        db.remove("k1").unwrap();
        db.insert("k0", "last write").unwrap();
        // No flush, no drop: the process dies the moment the last insert returned.
        std::process::abort();
    }
    let t = tmp();
    let dir = t.path().join("db");
    let out = run_child(NAME, "write_through", &dir, &[], &[]);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "child did not reach abort(): {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let db = open(&dir);
    assert_eq!(
        db.get("k0").unwrap(),
        Some(b"last write".to_vec()),
        "last WriteThrough insert lost"
    );
    assert_eq!(db.get("k1").unwrap(), None, "WriteThrough remove lost");
    for i in 2..N {
        assert_eq!(
            db.get(format!("k{i}")).unwrap(),
            Some(pattern(i as u64, 50 + i)),
            "k{i}"
        );
    }
    assert_eq!(db.len().unwrap(), N - 1);
}

#[test]
fn every_flush_policy_persists_across_reopen() {
    for (i, policy) in [
        FlushPolicy::OnEachFlush,
        FlushPolicy::Group,
        FlushPolicy::WriteThrough,
    ]
    .into_iter()
    .enumerate()
    {
        let t = tmp();
        let dir = t.path().join("db");
        {
            let db = Emdb::builder()
                .path(&dir)
                .flush_policy(policy)
                .build()
                .unwrap();
            for j in 0..50 {
                db.insert(format!("k{j}"), format!("p{i}-v{j}")).unwrap();
            }
            db.flush().unwrap();
        }
        let db = open(&dir);
        assert_eq!(db.len().unwrap(), 50, "policy #{i}");
        assert_eq!(
            db.get("k49").unwrap(),
            Some(format!("p{i}-v49").into_bytes()),
            "policy #{i}"
        );
    }
}

fn fill(db: &Emdb, model: &mut Map, rng: &mut fastrand::Rng, n: usize, tag: &str) {
    for i in 0..n {
        let k = format!("key-{}", rng.u32(0..(n as u32))).into_bytes();
        match rng.u8(0..10) {
            0 | 1 => {
                assert_eq!(
                    db.remove(&k).unwrap(),
                    model.remove(&k),
                    "{tag}: remove {}",
                    show(&k)
                );
            }
            _ => {
                let v = format!("{tag}-{i}-{}", "x".repeat(rng.usize(0..200))).into_bytes();
                db.insert(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
        }
    }
}

#[test]
fn data_survives_flush_drop_and_reopen() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut model = Map::new();
    let mut rng = fastrand::Rng::with_seed(11);
    {
        let db = open(&dir);
        fill(&db, &mut model, &mut rng, 1000, "a");
        db.flush().unwrap();
    }
    let db = open(&dir);
    assert_contents(&db, &model, "after flush, drop, reopen");
    fill(&db, &mut model, &mut rng, 500, "b");
    drop(db);
    let db = open(&dir);
    assert_contents(&db, &model, "after drop without explicit flush, reopen");
}

#[test]
fn data_survives_reopen_after_checkpoint() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut model = Map::new();
    let mut rng = fastrand::Rng::with_seed(12);
    {
        let db = open(&dir);
        fill(&db, &mut model, &mut rng, 1500, "a");
        db.checkpoint().unwrap();
        assert!(
            !seg_files(&dir, "hint").is_empty(),
            "checkpoint() wrote no hint files"
        );
    }
    let db = open(&dir);
    assert_contents(&db, &model, "after checkpoint and reopen");
}

#[test]
fn writes_after_checkpoint_survive_reopen() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut model = Map::new();
    let mut rng = fastrand::Rng::with_seed(13);
    {
        let db = open(&dir);
        fill(&db, &mut model, &mut rng, 800, "a");
        db.checkpoint().unwrap();
        // Overwrites, removes and new keys after the checkpoint.
        fill(&db, &mut model, &mut rng, 800, "b");
        let victim = model.keys().next().cloned().expect("some key");
        db.remove(&victim).unwrap();
        model.remove(&victim);
        db.flush().unwrap();
    }
    let db = open(&dir);
    assert_contents(&db, &model, "writes after checkpoint, reopen");
    db.checkpoint().unwrap();
    fill(&db, &mut model, &mut rng, 300, "c");
    db.checkpoint().unwrap();
    fill(&db, &mut model, &mut rng, 300, "d");
    drop(db);
    let db = open(&dir);
    assert_contents(&db, &model, "two checkpoints with writes between, reopen");
}

#[test]
fn clear_after_checkpoint_survives_reopen() {
    let t = tmp();
    let dir = t.path().join("db");
    {
        let db = open(&dir);
        for i in 0..200 {
            db.insert(format!("k{i}"), "old").unwrap();
        }
        db.checkpoint().unwrap();
        db.clear().unwrap();
        db.insert("k7", "new").unwrap();
        db.flush().unwrap();
    }
    let db = open(&dir);
    let expected: Map = [(b"k7".to_vec(), b"new".to_vec())].into_iter().collect();
    assert_contents(&db, &expected, "clear after checkpoint, reopen");
}

#[test]
fn repeated_reopen_cycles_keep_everything() {
    let t = tmp();
    let dir = t.path().join("db");
    let mut model = Map::new();
    let mut rng = fastrand::Rng::with_seed(14);
    for cycle in 0..6 {
        let db = open(&dir);
        assert_contents(&db, &model, &format!("start of cycle {cycle}"));
        fill(&db, &mut model, &mut rng, 200, &format!("c{cycle}"));
        if cycle % 2 == 0 {
            db.checkpoint().unwrap();
        }
    }
    let db = open(&dir);
    assert_contents(&db, &model, "after 6 cycles");
}

#[test]
fn segment_rotation_preserves_all_data() {
    let t = tmp();
    let dir = t.path().join("db");
    let build = || {
        Emdb::builder()
            .path(&dir)
            .segment_size(64 * 1024)
            .max_key_len(256)
            .max_value_len(8 * 1024)
            .build()
            .unwrap()
    };
    let mut model = Map::new();
    let mut rng = fastrand::Rng::with_seed(15);
    let mut written = 0usize;
    {
        let db = build();
        let mut i = 0u64;
        while written < 5 * 1024 * 1024 {
            let k = format!("r{}", rng.u32(0..900)).into_bytes();
            if rng.u8(0..10) == 0 {
                db.remove(&k).unwrap();
                model.remove(&k);
            } else {
                let len = if rng.u8(0..20) == 0 {
                    8 * 1024
                } else {
                    rng.usize(1..8 * 1024)
                };
                let v = pattern(i, len);
                written += len;
                db.insert(k.clone(), v.clone()).unwrap();
                model.insert(k, v);
            }
            i += 1;
            if i % 700 == 0 {
                db.flush().unwrap();
            }
        }
        db.flush().unwrap();
    }
    let segs = seg_files(&dir, "seg");
    assert!(
        segs.len() >= 10,
        "5 MiB in 64 KiB segments made only {} segment files",
        segs.len()
    );
    let db = build();
    assert_contents(&db, &model, "after rotation and reopen");
    db.checkpoint().unwrap();
    drop(db);
    let db = open(&dir);
    assert_contents(&db, &model, "after rotation, checkpoint and reopen");
}

/// The text after `marker` in a line of child output. libtest may print
/// `test NAME ... ` in front of the child's first line, so the marker is
/// searched anywhere in the line.
fn after_marker<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

#[test]
fn a_million_record_insert_many_is_stored_whole_and_one_more_is_rejected() {
    let t = tmp();
    let dir = t.path().join("db");
    let item = |i: u32| (i.to_be_bytes(), (i ^ 0xA5A5_A5A5).to_le_bytes());
    {
        let db = open(&dir);
        db.insert("before", "b").unwrap();
        // At the default limit of 1,000,000 records: accepted, as one batch.
        db.insert_many((0..1_000_000u32).map(item)).unwrap();
        assert_eq!(db.len().unwrap(), 1_000_001);
        // One more: rejected, and nothing of it is written.
        assert_limit(
            db.insert_many((2_000_000..3_000_001u32).map(item)),
            Some(1_000_001),
            emdb::DEFAULT_MAX_BATCH_RECORDS,
            "insert_many of 1,000,001 records",
        );
        assert_eq!(db.get(2_000_000u32.to_be_bytes()).unwrap(), None);
        assert_eq!(db.len().unwrap(), 1_000_001);
        db.insert("after", "a").unwrap();
        db.flush().unwrap();
    }
    let db = open(&dir);
    assert_eq!(db.len().unwrap(), 1_000_002);
    for i in (0..1_000_000u32).step_by(9_973).chain([999_999]) {
        let (k, v) = item(i);
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&v[..]), "record {i}");
    }
    assert_eq!(db.get("after").unwrap().as_deref(), Some(&b"a"[..]));
}
