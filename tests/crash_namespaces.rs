//! kill -9 during namespace drops, group deletes and TTL writes: a child
//! process (this test binary re-executed) loops creating a namespace and
//! filling it, dropping every other one, filling a group and deleting it,
//! and writing a record with an expiry, reporting each step on stdout
//! before and after it. The parent kills it at a random moment, reopens the
//! database and checks:
//! - a namespace whose fill was flushed is whole, unless its drop began:
//!   then whole or gone, and gone once the drop returned;
//! - a group whose fill was flushed is whole, unless its delete began: then
//!   whole or gone (one batch), and gone once the delete and a flush
//!   returned;
//! - a record with an expiry, once flushed, keeps its expiry;
//! - bank transfers (transactions over 1 to 1,000 accounts of 1,000, across
//!   both shards; an account that reaches zero is removed in the same
//!   transaction) never change the total.
//!
//! `EMDB_NSCRASH_CYCLES` (default 8), `EMDB_IO_BACKEND=uring|portable`.

#![cfg(all(feature = "ttl", feature = "nested"))]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use emdb::{Emdb, Ttl};

const CHILD_ENV: &str = "EMDB_NSCRASH_CHILD";
const TEST_NAME: &str = "namespace_drops_and_group_deletes_survive_kill_9";
const NS_RECORDS: usize = 50;
const GROUP_RECORDS: usize = 40;
const ACCOUNTS: usize = 1000;
const START: u64 = 20;

fn balance(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap())
}

fn open(path: &Path) -> emdb::Result<Emdb> {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(256 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .build()
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// The child: numbered rounds, each line written before (`?`) or after a
/// step; rounds continue from `first` (the parent's previous cycles).
fn child(dir: &Path, first: u64) -> ! {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::exit(101);
    }));
    let db = open(dir).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(3)
    });
    if db.get("bank-open").expect("get").is_none() {
        db.insert_many(
            (0..ACCOUNTS)
                .map(|i| (format!("acct{i:04}"), START.to_string()))
                .chain([("bank-open".to_string(), "1".to_string())]),
        )
        .expect("accounts");
    }
    let mut rng = fastrand::Rng::with_seed(first);
    for r in first.. {
        let ns = db.namespace(format!("ns{r}")).expect("namespace");
        for i in 0..NS_RECORDS {
            ns.insert(format!("k{i}"), format!("ns{r}-{i}"))
                .expect("insert");
        }
        db.flush().expect("flush");
        say(format!("F {r}\n"));
        if r % 2 == 0 {
            say(format!("D? {r}\n"));
            db.drop_namespace(format!("ns{r}")).expect("drop");
            say(format!("D {r}\n"));
        }
        let g = db.focus(format!("g{r}"));
        for i in 0..GROUP_RECORDS {
            g.set(format!("k{i}"), format!("g{r}-{i}")).expect("set");
        }
        db.flush().expect("flush");
        say(format!("G {r}\n"));
        say(format!("X? {r}\n"));
        db.delete_group(format!("g{r}")).expect("delete_group");
        db.flush().expect("flush");
        say(format!("X {r}\n"));
        db.insert_with_ttl(
            format!("ttl{r}"),
            "v",
            Ttl::After(Duration::from_secs(3600)),
        )
        .expect("ttl insert");
        db.flush().expect("flush");
        say(format!("T {r}\n"));
        // A transfer: one unit from each of up to 999 accounts into one.
        let to = rng.usize(..ACCOUNTS);
        let from: Vec<usize> = (0..rng.usize(1..ACCOUNTS))
            .map(|_| rng.usize(..ACCOUNTS))
            .collect();
        db.transaction_retry(10, |tx| {
            let mut moved = 0;
            let mut done = HashSet::new();
            for &f in &from {
                if f == to || !done.insert(f) {
                    continue;
                }
                let b = balance(tx.get(format!("acct{f:04}"))?);
                if b == 0 {
                    continue;
                }
                moved += 1;
                if b == 1 {
                    tx.remove(format!("acct{f:04}"))?;
                } else {
                    tx.insert(format!("acct{f:04}"), (b - 1).to_string())?;
                }
            }
            let b = balance(tx.get(format!("acct{to:04}"))?);
            tx.insert(format!("acct{to:04}"), (b + moved).to_string())
        })
        .expect("transfer");
        if r % 3 == 0 {
            db.flush().expect("flush");
        }
    }
    unreachable!()
}

#[test]
fn namespace_drops_and_group_deletes_survive_kill_9() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (first, dir) = spec.split_once(':').expect("spec");
        child(Path::new(dir), first.parse().expect("first round"));
    }
    let cycles: u64 = std::env::var("EMDB_NSCRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("db");
    let mut rng = fastrand::Rng::new();
    let mut next_round = 0u64;
    let mut seen: Vec<String> = Vec::new();
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{next_round}:{}", dir.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.u64(50..400)));
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the child died on its own: {status:?}"
        );
        let lines = reader.join().unwrap();
        seen.extend(lines);
        let has = |tag: &str, r: u64| seen.iter().any(|l| *l == format!("{tag} {r}"));
        let db = open(&dir).unwrap_or_else(|e| panic!("cycle {cycle}: reopen: {e}"));
        let names: HashSet<String> = db.list_namespaces().unwrap().into_iter().collect();
        let last = seen
            .iter()
            .filter_map(|l| l.split_once(' ').and_then(|(_, r)| r.parse::<u64>().ok()))
            .max();
        for r in next_round..=last.unwrap_or(next_round) {
            let name = format!("ns{r}");
            if has("F", r) {
                let n = if names.contains(&name) {
                    db.namespace(&name).unwrap().len().unwrap()
                } else {
                    0
                };
                if has("D", r) {
                    assert!(
                        !names.contains(&name),
                        "cycle {cycle}: {name} dropped, still listed"
                    );
                } else if has("D?", r) {
                    assert!(
                        n == 0 || n == NS_RECORDS,
                        "cycle {cycle}: {name} half dropped: {n} records"
                    );
                } else {
                    assert_eq!(n, NS_RECORDS, "cycle {cycle}: {name} lost records");
                }
            }
            if has("G", r) {
                let n = db.group(format!("g{r}")).unwrap().count();
                if has("X", r) {
                    assert_eq!(n, 0, "cycle {cycle}: g{r} deleted and flushed, {n} left");
                } else if has("X?", r) {
                    assert!(
                        n == 0 || n == GROUP_RECORDS,
                        "cycle {cycle}: g{r} half deleted: {n} records"
                    );
                } else {
                    assert_eq!(n, GROUP_RECORDS, "cycle {cycle}: g{r} lost records");
                }
            }
            if has("T", r) {
                assert!(
                    db.expires_at(format!("ttl{r}")).unwrap().is_some(),
                    "cycle {cycle}: ttl{r} lost its expiry"
                );
            }
        }
        eprintln!(
            "cycle {cycle}: rounds {next_round}..={}, killed after {:?}",
            last.unwrap_or(next_round),
            seen.last()
        );
        if db.get("bank-open").unwrap().is_some() {
            let total: u64 = (0..ACCOUNTS)
                .map(|i| balance(db.get(format!("acct{i:04}")).unwrap()))
                .sum();
            assert_eq!(
                total,
                ACCOUNTS as u64 * START,
                "cycle {cycle}: a transfer was torn"
            );
        }
        // Rounds a later child starts are new names: none of these collide.
        next_round = last.map_or(next_round, |l| l + 1) + 1;
        drop(db);
    }
}
