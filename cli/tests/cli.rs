//! The real `emdb` binary on real databases: every command, the exit codes,
//! `--json` output that parses, `verify` against damage, read-only commands
//! that leave every byte alone, and the progress bar in a pseudo-terminal.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use emdb::Emdb;

const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

fn emdb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_emdb"));
    // No key from the environment of whoever runs the tests.
    for v in [
        "EMDB_KEY",
        "EMDB_PASSPHRASE",
        "EMDB_NEW_KEY",
        "EMDB_NEW_PASSPHRASE",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    emdb().args(args).output().expect("run emdb")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A database with 200 records in the default namespace (20 of them
/// removed), 3 in `sessions`, and one binary key and value.
fn sample(dir: &Path) {
    let db = Emdb::builder()
        .path(dir)
        .shards(2)
        .segment_size(1 << 20)
        .max_value_len(4096)
        .build()
        .unwrap();
    for i in 0..200u32 {
        db.insert(format!("user:{i:03}"), format!("value {i}"))
            .unwrap();
    }
    for i in 0..20u32 {
        db.remove(format!("user:{i:03}")).unwrap();
    }
    let ns = db.namespace("sessions").unwrap();
    for n in ["alice", "bob", "carol"] {
        ns.insert(n, format!("token-{n}")).unwrap();
    }
    db.insert(&[0u8, 0xff, b'\t'][..], &b"bin\nary"[..])
        .unwrap();
    db.close().unwrap();
}

fn image(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn stats_table_and_json() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let o = run(&["stats", p(d.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("records        184"), "{out}");
    assert!(out.contains("sessions"), "{out}");
    let o = run(&["stats", p(d.path()), "--json"]);
    assert_eq!(code(&o), 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["live_records"], 184);
    assert_eq!(v["namespace_count"], 2);
    assert_eq!(v["namespaces"][1]["name"], "sessions");
    assert_eq!(v["namespaces"][1]["records"], 3);
    assert!(v["dead_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["shards"], 2);
    assert_eq!(v["encrypted"], false);
}

#[test]
fn read_only_commands_change_no_byte() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let before = image(d.path());
    let copy = d.path().with_file_name(format!(
        "{}-copy",
        d.path().file_name().unwrap().to_str().unwrap()
    ));
    for args in [
        vec!["stats", p(d.path())],
        vec!["stats", p(d.path()), "--json"],
        vec!["verify", p(d.path())],
        vec!["verify", p(d.path()), "--json"],
        vec!["dump", p(d.path())],
        vec!["dump", p(d.path()), "--format", "json"],
        vec!["get", p(d.path()), "user:100"],
        vec!["lock", p(d.path())],
        vec!["backup", p(d.path()), p(&copy)],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
        assert_eq!(image(d.path()), before, "{args:?} changed a file");
    }
    let o = run(&["stats", p(&copy), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["live_records"], 184, "the backup holds every record");
    std::fs::remove_dir_all(&copy).unwrap();
}

#[test]
fn get_put_remove() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("db");
    // No database: not found, and nothing is created.
    let o = run(&["put", p(&db), "k", "v"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!db.exists());
    let o = run(&["put", p(&db), "k", "v", "--create"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["get", p(&db), "k"]);
    assert_eq!((code(&o), o.stdout.as_slice()), (0, &b"v"[..]));
    // From a file, and from stdin, exactly the bytes.
    let f = d.path().join("value.bin");
    std::fs::write(&f, [0u8, 1, 2, 255]).unwrap();
    let o = run(&["put", p(&db), "f", "--file", p(&f)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["get", p(&db), "f"]);
    assert_eq!(o.stdout, [0u8, 1, 2, 255]);
    let mut child = emdb()
        .args(["put", p(&db), "s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from\nstdin")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(run(&["get", p(&db), "s"]).stdout, b"from\nstdin");
    // Hex keys and a namespace.
    let o = run(&[
        "put",
        p(&db),
        "00ff",
        "x",
        "--hex-key",
        "-n",
        "ns",
        "--create",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        run(&["get", p(&db), "00ff", "--hex-key", "-n", "ns"]).stdout,
        b"x"
    );
    assert_eq!(code(&run(&["get", p(&db), "00ff", "--hex-key"])), 3);
    assert_eq!(code(&run(&["get", p(&db), "k", "-n", "nope"])), 3);
    // Remove, then absent.
    assert_eq!(code(&run(&["remove", p(&db), "k"])), 0);
    assert_eq!(code(&run(&["get", p(&db), "k"])), 3);
    assert_eq!(code(&run(&["remove", p(&db), "k"])), 3);
    // A TTL that has passed hides the record.
    assert_eq!(code(&run(&["put", p(&db), "t", "x", "--ttl", "0"])), 0);
    assert_eq!(code(&run(&["get", p(&db), "t"])), 3);
    assert_eq!(code(&run(&["get", p(&db), "zz", "--hex-key"])), 2);
}

#[test]
fn dump_formats_filters_and_limits() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let o = run(&["dump", p(d.path())]);
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 184);
    assert!(out.contains("\tuser:150\tvalue 150\n"), "{out}");
    assert!(out.contains("sessions\tbob\ttoken-bob\n"));
    assert!(
        out.contains("\t\\x00\\xff\\t\tbin\\nary\n"),
        "escaped: {out}"
    );
    // JSON lines, each an object that parses.
    let o = run(&["dump", p(d.path()), "--format", "json"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 184);
    assert!(lines
        .iter()
        .any(|v| v["key_hex"] == "00ff09" && v["value"] == "bin\nary"));
    let o = run(&["dump", p(d.path()), "-n", "sessions", "--format", "hex"]);
    assert_eq!(
        stdout(&o)
            .lines()
            .filter(|l| l.starts_with("sessions\t"))
            .count(),
        3
    );
    assert!(stdout(&o).contains("sessions\t616c696365\t"));
    let o = run(&["dump", p(d.path()), "--prefix", "user:15"]);
    assert_eq!(stdout(&o).lines().count(), 10);
    let o = run(&["dump", p(d.path()), "--limit", "7"]);
    assert_eq!(stdout(&o).lines().count(), 7);
    assert_eq!(code(&run(&["dump", p(d.path()), "-n", "missing"])), 3);
}

#[test]
fn verify_finds_a_flipped_bit_and_a_truncated_segment() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let o = run(&["verify", p(d.path())]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("result: OK, 184 records"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&run(&["verify", p(d.path()), "--json"]).stdout).unwrap();
    assert_eq!(v["damaged"], false);
    assert!(v["frames"].as_u64().unwrap() >= 205);

    // One flipped bit in the middle of a segment's records.
    let seg = segments(d.path())[0].clone();
    let clean = std::fs::read(&seg).unwrap();
    let end = clean.iter().rposition(|b| *b != 0).unwrap();
    let mut b = clean.clone();
    b[end / 2] ^= 0x04;
    std::fs::write(&seg, &b).unwrap();
    let o = run(&["verify", p(d.path()), "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["damaged"], true);
    let name = seg.file_name().unwrap().to_str().unwrap();
    let found = v["findings"].as_array().unwrap().iter().any(|f| {
        f["file"] == name
            && f["damage"] == true
            && f["offset"].as_u64().unwrap() <= (end / 2) as u64
    });
    assert!(found, "{v:#}");
    let o = run(&["verify", p(d.path())]);
    assert!(stdout(&o).contains("DAMAGE"), "{}", stdout(&o));

    // Truncated: the segment cut in the middle of its records.
    let cut = end * 3 / 4;
    std::fs::write(&seg, &clean[..cut]).unwrap();
    let o = run(&["verify", p(d.path()), "--json"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == name && f["damage"] == true),
        "{v:#}"
    );
    // A damaged manifest: still a report (exit 1), not an error.
    let m = d.path().join("MANIFEST");
    let good = std::fs::read(&m).unwrap();
    std::fs::write(&m, b"garbage").unwrap();
    let o = run(&["verify", p(d.path())]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("DAMAGE MANIFEST"), "{}", stdout(&o));
    std::fs::write(&m, good).unwrap();
    // Opening commands refuse the damaged database with code 6.
    let o = run(&["stats", p(d.path())]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("emdb verify"), "{}", stderr(&o));
}

#[test]
fn maintenance_commands() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let dead = |dir: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&run(&["stats", p(dir), "--json"]).stdout).unwrap();
        (v["dead_bytes"].as_u64().unwrap(), v["live_records"].clone())
    };
    let (before, _) = dead(d.path());
    assert_eq!(code(&run(&["compact", p(d.path()), "--threshold", "0"])), 2);
    let o = run(&["compact", p(d.path()), "--threshold", "0.01"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("compacted "), "{}", stdout(&o));
    let (after, records) = dead(d.path());
    assert!(after < before, "dead bytes {before} -> {after}");
    assert_eq!(records, 184);
    let o = run(&["checkpoint", p(d.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("checkpointed"));
    let b = tempfile::tempdir().unwrap();
    let dest = b.path().join("copy");
    let o = run(&["backup", p(d.path()), p(&dest)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(dead(&dest).1, 184);
    // A destination that holds something is refused.
    let o = run(&["backup", p(d.path()), p(&dest)]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    // Piped, no bar is drawn: stderr holds no carriage return.
    assert!(!stderr(&run(&["checkpoint", p(d.path())])).contains('\r'));
}

#[test]
fn lock_shows_the_holder_and_break_refuses_a_live_one() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let o = run(&["lock", p(d.path()), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["held"], false);
    let db = Emdb::open(d.path()).unwrap();
    let me = std::process::id();
    let o = run(&["lock", p(d.path()), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["held"].clone(), v["pid"].clone()),
        (true.into(), me.into())
    );
    assert_eq!(v["running"], true);
    let o = run(&["lock", p(d.path())]);
    assert!(stdout(&o).contains(&format!("held by process {me} (running)")));
    let o = run(&["lock", p(d.path()), "--break"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    // Every command that opens it names the holder.
    for args in [
        vec!["stats", p(d.path())],
        vec!["put", p(d.path()), "k", "v"],
        vec!["compact", p(d.path())],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 4, "{args:?}");
        assert!(
            stderr(&o).contains(&format!("in use by process {me}")),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    db.close().unwrap();
    let o = run(&["lock", p(d.path()), "--break"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn encryption_commands() {
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let o = emdb()
        .args(["encrypt", p(d.path())])
        .env("EMDB_NEW_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // No key and no terminal: a clear refusal.
    let o = run(&["stats", p(d.path())]);
    assert_eq!(code(&o), 5);
    assert!(stderr(&o).contains("EMDB_PASSPHRASE"), "{}", stderr(&o));
    let o = emdb()
        .args(["get", p(d.path()), "user:100"])
        .env("EMDB_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(code(&o), 5, "{}", stderr(&o));
    let o = emdb()
        .args(["get", p(d.path()), "user:100"])
        .env("EMDB_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"value 100");
    let o = emdb()
        .args(["rotate-key", p(d.path())])
        .env("EMDB_PASSPHRASE", "correct horse")
        .env("EMDB_NEW_KEY", KEY_HEX)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = emdb()
        .args(["verify", p(d.path())])
        .env("EMDB_KEY", KEY_HEX)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("authenticated"));
    let o = emdb()
        .args(["decrypt", p(d.path())])
        .env("EMDB_KEY", KEY_HEX)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(run(&["get", p(d.path()), "user:100"]).stdout, b"value 100");
    assert_eq!(code(&run(&["decrypt", p(d.path())])), 5);
}

#[test]
fn bench_reports_and_refuses_data() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("new").join("scratch");
    let o = run(&[
        "bench",
        p(&dir),
        "--writers",
        "2",
        "--seconds",
        "1",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["records"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["engine_fdatasyncs"].as_u64().unwrap() > 0, "{v:#}");
    assert!(
        !d.path().join("new").exists(),
        "the scratch database and the directories made for it are removed"
    );
    // An empty directory is used, and left as it was: empty.
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(&["bench", p(&empty), "--writers", "2", "--seconds", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("| shards | backend | T | records/s |"));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // A directory with data in it is never used.
    let data = tempfile::tempdir().unwrap();
    sample(data.path());
    let before = image(data.path());
    let o = run(&["bench", p(data.path()), "--seconds", "1"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert_eq!(image(data.path()), before);
}

#[test]
fn usage_errors_and_help() {
    assert_eq!(code(&run(&[])), 2);
    assert_eq!(code(&run(&["stats"])), 2);
    assert_eq!(code(&run(&["frobnicate", "x"])), 2);
    let o = run(&["--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Exit codes:"));
    for cmd in [
        "stats",
        "verify",
        "dump",
        "get",
        "put",
        "remove",
        "compact",
        "backup",
        "checkpoint",
        "lock",
        "bench",
        "encrypt",
        "decrypt",
        "rotate-key",
    ] {
        let o = run(&[cmd, "--help"]);
        assert_eq!(code(&o), 0, "{cmd}");
        assert!(stdout(&o).contains("Usage: emdb"), "{cmd}");
    }
    let d = tempfile::tempdir().unwrap();
    let o = run(&["stats", p(&d.path().join("none"))]);
    assert_eq!(code(&o), 3);
}

/// The progress bar drawn on a pseudo-terminal (`script` from util-linux
/// gives the command one): it renders, ends full, and leaves the line.
#[test]
fn progress_bar_in_a_pseudo_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed for this test; .ci/run installs it");
    }
    let d = tempfile::tempdir().unwrap();
    sample(d.path());
    let b = tempfile::tempdir().unwrap();
    let dest = b.path().join("copy");
    let cmd = format!(
        "{} backup {} {}",
        env!("CARGO_BIN_EXE_emdb"),
        p(d.path()),
        p(&dest)
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("backup ["), "no bar drawn: {out:?}");
    // The last frame of the bar is full: as many bytes done as in all.
    let last = out.split('\r').rfind(|f| f.contains("backup [")).unwrap();
    let after = last.split(']').nth(1).unwrap().trim_start();
    let (done, rest) = after.split_once('/').unwrap();
    let total: Vec<&str> = rest.split_whitespace().take(2).collect();
    assert_eq!(done, total.join(" "), "the bar did not end full: {last:?}");
    // Then a newline, and the summary on a line of its own.
    assert!(
        out.contains("\nbacked up 184 records") || out.contains("\r\nbacked up 184 records"),
        "{out:?}"
    );
    assert!(out.trim_end().ends_with("fsynced"), "{out:?}");
    assert!(dest.join("MANIFEST").exists());
}
