//! Transactions: bank transfers between accounts from several threads,
//! each one serializable and crash-atomic; a reader sums the balances over
//! point-in-time snapshots and never sees money appear or vanish.
//!
//! cargo run --release --example transactions

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use emdb::Emdb;

const ACCOUNTS: usize = 100;

fn balance(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |b| String::from_utf8_lossy(&b).parse().unwrap_or(0))
}

fn main() -> emdb::Result<()> {
    let tmp = tempfile::tempdir().map_err(emdb::Error::Io)?;
    let db = Emdb::open(tmp.path().join("bank.emdb"))?;
    db.insert_many((0..ACCOUNTS).map(|i| (format!("acct{i:03}"), "100")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let auditor = {
        let (db, stop) = (db.clone_handle(), stop.clone());
        std::thread::spawn(move || {
            let mut audits = 0;
            while !stop.load(Ordering::Relaxed) {
                let total: u64 = db
                    .iter()
                    .expect("iter")
                    .map(|(_, v)| balance(Some(v)))
                    .sum();
                assert_eq!(total, 100 * ACCOUNTS as u64, "money appeared or vanished");
                audits += 1;
            }
            audits
        })
    };
    let tellers: Vec<_> = (0..4u64)
        .map(|t| {
            let db = db.clone_handle();
            std::thread::spawn(move || -> emdb::Result<u32> {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut conflicts = 0;
                for _ in 0..500 {
                    let (from, to) = (rng.usize(..ACCOUNTS), rng.usize(..ACCOUNTS));
                    let amount = rng.u64(1..=10);
                    let mut attempts = 0;
                    db.transaction_retry(100, |tx| {
                        attempts += 1;
                        let a = balance(tx.get(format!("acct{from:03}"))?);
                        if from == to || a < amount {
                            return Ok(());
                        }
                        let b = balance(tx.get(format!("acct{to:03}"))?);
                        tx.insert(format!("acct{from:03}"), (a - amount).to_string())?;
                        tx.insert(format!("acct{to:03}"), (b + amount).to_string())?;
                        Ok(())
                    })?;
                    conflicts += attempts - 1;
                }
                Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tellers {
        conflicts += t.join().expect("teller")?;
    }
    stop.store(true, Ordering::Relaxed);
    let audits = auditor.join().expect("auditor");
    db.flush()?;
    println!("2,000 transfers by 4 threads, {conflicts} retried after a conflict; {audits} audits all saw 10,000");
    db.close()
}
