//! Namespaces: separate key spaces in one database, each with its own
//! index, created durably on first use and dropped atomically.
//!
//! cargo run --release --example namespaces

use emdb::Emdb;

fn main() -> emdb::Result<()> {
    let tmp = tempfile::tempdir().map_err(emdb::Error::Io)?;
    let path = tmp.path().join("app.emdb");
    {
        let db = Emdb::open(&path)?;
        let users = db.namespace("users")?;
        let sessions = db.namespace("sessions")?;
        // The same key in three key spaces.
        db.insert("id:1", "default namespace")?;
        users.insert("id:1", "ada")?;
        sessions.insert("id:1", "token-af31")?;
        users.insert_many([("id:2", "bob"), ("id:3", "eve")])?;
        for i in 0..1000 {
            sessions.insert(format!("tmp:{i}"), "x")?;
        }
        db.flush()?;
        println!("namespaces: {:?}", db.list_namespaces()?);
        println!(
            "len: default {}, users {}, sessions {}",
            db.len()?,
            users.len()?,
            sessions.len()?
        );
        // Dropping is one durable manifest store, whatever the size.
        assert!(db.drop_namespace("sessions")?);
        println!(
            "after drop_namespace(\"sessions\"): {:?}",
            db.list_namespaces()?
        );
        assert_eq!(
            sessions.get("id:1")?,
            None,
            "a dropped namespace reads nothing"
        );
        db.close()?;
    }
    // Reopen: the registry and the records are durable; the dropped
    // namespace stays gone, and re-creating its name starts empty.
    let db = Emdb::open(&path)?;
    let users = db.namespace("users")?;
    assert_eq!(users.get("id:1")?.as_deref(), Some(&b"ada"[..]));
    assert!(db.namespace("sessions")?.is_empty()?);
    let mut names: Vec<_> = users
        .keys()?
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    names.sort();
    println!(
        "after reopen: users = {names:?}, stats: {} namespaces",
        db.stats()?.namespace_count
    );
    Ok(())
}
