//! TTL: records that expire. Sessions get a short TTL, the user record
//! none; expired records vanish from every read at once, and
//! `sweep_expired` turns them into tombstones.
//!
//! cargo run --release --example ttl

use std::time::Duration;

use emdb::{Emdb, Ttl};

fn main() -> emdb::Result<()> {
    let tmp = tempfile::tempdir().map_err(emdb::Error::Io)?;
    let db = Emdb::builder()
        .path(tmp.path().join("ttl.emdb"))
        .default_ttl(Duration::from_secs(3600)) // for writes that name none
        .build()?;
    db.insert_with_ttl("user:1", "ada", Ttl::Never)?;
    db.insert("cache:home", "<html>…")?; // the default: an hour
    for i in 0..5 {
        db.insert_with_ttl(
            format!("session:{i}"),
            "token",
            Ttl::After(Duration::from_millis(50)),
        )?;
    }
    println!(
        "cache:home expires at {:?} (Unix ms), {:?} left",
        db.expires_at("cache:home")?,
        db.ttl("cache:home")?.map(|d| d.as_secs())
    );
    println!("before expiry: {} keys", db.len()?);
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "after expiry: {} keys, session:0 = {:?}",
        db.len()?,
        db.get("session:0")?
    );
    println!("sweep_expired wrote {} tombstones", db.sweep_expired());
    assert!(db.persist("cache:home")?);
    println!(
        "cache:home persisted: expires_at = {:?}",
        db.expires_at("cache:home")?
    );
    db.close()
}
