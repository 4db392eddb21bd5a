//! Transactions: read-your-writes, discard on `Err`, serializable commits
//! (write skew impossible, a racing plain write aborts the commit), and
//! crash atomicity across shards with removes (bank transfers whose total
//! never changes: not for readers, not after a power cut).

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

use emdb::{Emdb, Error};

#[cfg(feature = "fault-injection")]
#[path = "support/power_cut.rs"]
mod power_cut;

fn open(path: &Path) -> Emdb {
    Emdb::builder()
        .path(path)
        .shards(2)
        .segment_size(256 << 10)
        .max_key_len(64)
        .max_value_len(1024)
        .build()
        .expect("open")
}

#[test]
fn reads_see_staged_writes_and_err_discards_them() {
    let db = Emdb::open_in_memory();
    db.insert("a", "1").unwrap();
    let got = db
        .transaction(|tx| {
            assert_eq!(tx.get("a")?, Some(b"1".to_vec()));
            tx.insert("a", "2")?;
            tx.insert("b", "3")?;
            assert_eq!(tx.get("a")?, Some(b"2".to_vec()));
            assert_eq!(tx.remove("b")?, Some(b"3".to_vec()));
            assert!(!tx.contains_key("b")?);
            assert_eq!(tx.remove("missing")?, None);
            Ok(7)
        })
        .unwrap();
    assert_eq!(got, 7);
    assert_eq!(db.get("a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(db.get("b").unwrap(), None);
    let r: emdb::Result<()> = db.transaction(|tx| {
        tx.insert("a", "discarded")?;
        tx.remove("a")?;
        Err(Error::TransactionAborted("by the closure"))
    });
    assert!(matches!(
        r,
        Err(Error::TransactionAborted("by the closure"))
    ));
    assert_eq!(db.get("a").unwrap(), Some(b"2".to_vec()));
    // Namespaces have their own.
    let ns = db.namespace("n").unwrap();
    ns.transaction(|tx| tx.insert("a", "in n")).unwrap();
    assert_eq!(ns.get("a").unwrap(), Some(b"in n".to_vec()));
    assert_eq!(db.get("a").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn write_skew_is_impossible() {
    for _ in 0..20 {
        let db = Emdb::open_in_memory();
        db.insert("x", "1").unwrap();
        db.insert("y", "1").unwrap();
        let both_read = Arc::new(Barrier::new(2));
        let results: Vec<emdb::Result<()>> = ["x", "y"]
            .into_iter()
            .map(|mine| {
                let (db, both_read) = (db.clone_handle(), both_read.clone());
                thread::spawn(move || {
                    db.transaction(|tx| {
                        // The invariant x + y >= 1: each may zero its own
                        // only if the other is still 1.
                        let x = tx.get("x")?.is_some_and(|v| v == b"1");
                        let y = tx.get("y")?.is_some_and(|v| v == b"1");
                        both_read.wait();
                        if x && y {
                            tx.insert(mine, "0")?;
                        }
                        Ok(())
                    })
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(Error::TransactionAborted("conflict"))))
            .count();
        assert_eq!((ok, conflicts), (1, 1), "{results:?}");
        let ones = ["x", "y"]
            .iter()
            .filter(|k| db.get(k).unwrap() == Some(b"1".to_vec()))
            .count();
        assert_eq!(ones, 1, "write skew: both zeroed");
    }
}

#[test]
fn a_plain_write_to_a_key_read_aborts_the_commit_and_retry_succeeds() {
    let db = Emdb::open_in_memory();
    db.insert("k", "1").unwrap();
    let other = db.clone_handle();
    let r = db.transaction(|tx| {
        let v = tx.get("k")?;
        other.insert("k", "changed by a plain write").unwrap();
        tx.insert("copy", v.unwrap_or_default())
    });
    assert!(matches!(r, Err(Error::TransactionAborted("conflict"))));
    assert_eq!(db.get("copy").unwrap(), None, "an aborted commit wrote");
    let mut attempts = 0;
    db.transaction_retry(3, |tx| {
        attempts += 1;
        let v = tx.get("k")?;
        if attempts == 1 {
            other.insert("k", "changed again").unwrap();
        }
        tx.insert("copy", v.unwrap_or_default())
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(db.get("copy").unwrap(), Some(b"changed again".to_vec()));
}

#[test]
fn transactions_have_the_batch_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Emdb::builder()
        .path(dir.path().join("db"))
        .max_batch_records(10)
        .build()
        .unwrap();
    let r = db.transaction(|tx| {
        for i in 0..11 {
            tx.insert(format!("k{i}"), "v")?;
        }
        Ok(())
    });
    assert!(matches!(r, Err(Error::LimitExceeded { .. })), "{r:?}");
    assert_eq!(db.len().unwrap(), 0);
}

const ACCOUNTS: usize = 1000;
const START: u64 = 100;

fn account(i: usize) -> String {
    format!("acct{i:04}")
}

fn balance(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| String::from_utf8(b).unwrap().parse().unwrap())
}

/// The total over a point-in-time snapshot (`iter`).
fn total(db: &Emdb) -> u64 {
    db.iter()
        .unwrap()
        .filter(|(k, _)| k.starts_with(b"acct"))
        .map(|(_, v)| balance(Some(v)))
        .sum()
}

/// One transfer: 1 to 20 units between two accounts, or (one time in 20)
/// one unit from each of up to 999 accounts into one. An account at zero
/// is removed (absent means zero).
fn transfer(db: &Emdb, rng: &mut fastrand::Rng) -> emdb::Result<()> {
    let wide = rng.u32(..20) == 0;
    let from: Vec<usize> = if wide {
        let n = rng.usize(1..ACCOUNTS);
        (0..n).map(|_| rng.usize(..ACCOUNTS)).collect()
    } else {
        vec![rng.usize(..ACCOUNTS)]
    };
    let to = rng.usize(..ACCOUNTS);
    let amount = if wide { 1 } else { rng.u64(1..=20) };
    db.transaction_retry(50, |tx| {
        let mut moved = 0;
        let mut seen = std::collections::BTreeMap::new();
        for &f in &from {
            if f == to || seen.contains_key(&f) {
                continue;
            }
            let b = balance(tx.get(account(f))?);
            let take = amount.min(b);
            seen.insert(f, b - take);
            moved += take;
        }
        for (f, left) in seen {
            if left == 0 {
                tx.remove(account(f))?;
            } else {
                tx.insert(account(f), left.to_string())?;
            }
        }
        let b = balance(tx.get(account(to))?);
        tx.insert(account(to), (b + moved).to_string())?;
        Ok(())
    })
}

#[test]
fn bank_transfers_keep_the_total_for_readers_and_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = open(&path);
    db.insert_many((0..ACCOUNTS).map(|i| (account(i), START.to_string())))
        .unwrap();
    let want = ACCOUNTS as u64 * START;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone_handle(), stop.clone());
            thread::spawn(move || {
                let mut checks = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(total(&db), want, "a reader saw half a transfer");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone_handle();
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for i in 0..150 {
                    transfer(&db, &mut rng).expect("transfer");
                    if i % 25 == 0 {
                        db.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(total(&db), want);
    db.close().unwrap();
    let db = open(&path);
    assert_eq!(total(&db), want, "after a reopen");
}

/// Transfers (2 to 1,000 keys, removes included, across two shards) with
/// flushes now and then, the power cut at a random write or sync: every
/// image holds the same total, since each transaction is one batch.
#[cfg(feature = "fault-injection")]
#[test]
fn bank_transfers_keep_the_total_across_power_cuts() {
    use power_cut::{image_policy, reopen_image, tracked};
    for cycle in 0..8u64 {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("db");
        let (db, plan) = tracked(
            Emdb::builder()
                .path(&live)
                .shards(2)
                .segment_size(256 << 10)
                .max_key_len(64)
                .max_value_len(1024),
        );
        db.insert_many((0..ACCOUNTS).map(|i| (account(i), START.to_string())))
            .unwrap();
        db.flush().unwrap();
        let mut rng = fastrand::Rng::with_seed(cycle);
        plan.power_off_after(rng.u64(5..60));
        for i in 0..400 {
            if transfer(&db, &mut rng).is_err() {
                break;
            }
            if i % 7 == 0 && db.flush().is_err() {
                break;
            }
        }
        plan.power_off();
        drop(db);
        let policy = image_policy(cycle % 2 == 0);
        let (db, image) = reopen_image(&plan, &live, &t.path().join("image"), policy, cycle);
        assert_eq!(
            total(&db),
            ACCOUNTS as u64 * START,
            "cycle {cycle} ({image}): a transfer was torn by the power cut"
        );
    }
}

#[cfg(feature = "async")]
#[test]
fn async_transactions_commit_and_conflict_like_blocking_ones() {
    futures::executor::block_on(async {
        let db = emdb::AsyncEmdb::open_in_memory();
        db.insert("a", "1").await.unwrap();
        let v = db
            .transaction(|tx| {
                let a = tx.get("a")?.unwrap();
                tx.insert("b", a)?;
                tx.remove("a")?;
                Ok(5)
            })
            .await
            .unwrap();
        assert_eq!(v, 5);
        assert_eq!(db.get("a").await.unwrap(), None);
        assert_eq!(db.get("b").await.unwrap(), Some(b"1".to_vec()));
        let sync = db.sync_handle();
        let r = db
            .transaction(move |tx| {
                tx.get("b")?;
                sync.insert("b", "raced").unwrap();
                tx.insert("c", "x")
            })
            .await;
        assert!(matches!(r, Err(Error::TransactionAborted("conflict"))));
    });
}
