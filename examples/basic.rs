//! Minimal emdb usage: open a database in a directory, insert, get, remove.
//!
//! cargo run --release --example basic

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("basic.emdb");

    let db = emdb::Emdb::open(&path)?;
    println!("opened {}", db.path().display());

    db.insert("greeting", "hello, world")?;
    println!("insert greeting = \"hello, world\"");

    let v = db.get("greeting")?.expect("just inserted");
    println!("get greeting -> {:?}", String::from_utf8_lossy(&v));
    assert_eq!(v, b"hello, world");

    let prior = db.remove("greeting")?;
    println!(
        "remove greeting -> prior value {:?}",
        prior.as_deref().map(String::from_utf8_lossy)
    );
    assert_eq!(prior.as_deref(), Some(&b"hello, world"[..]));
    assert_eq!(db.get("greeting")?, None);
    println!("get greeting -> None");

    drop(db); // drains, fsyncs, checkpoints
    println!("closed; removing {}", dir.path().display());
    Ok(())
}
