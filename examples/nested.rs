//! Nested groups: dotted key prefixes in one key space. A focus writes
//! `prefix.key`; `group` lists a prefix; `delete_group` removes it as one
//! atomic batch.
//!
//! cargo run --release --features nested --example nested

use emdb::Emdb;

fn main() -> emdb::Result<()> {
    let db = Emdb::open_in_memory();
    let users = db.focus("user");
    let ada = users.focus("42");
    ada.set("name", "ada")?;
    ada.set("lang", "en")?;
    users.focus("7").set("name", "bob")?;
    println!(
        "user.42.name = {:?}",
        db.get("user.42.name")?.map(String::from_utf8)
    );
    let mut all: Vec<_> = db
        .group("user")?
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(&v)
            )
        })
        .collect();
    all.sort();
    println!("group(\"user\"): {all:?}");
    println!(
        "delete_group(\"user.42\") removed {}",
        db.delete_group("user.42")?
    );
    println!("left in group(\"user\"): {}", db.group("user")?.count());
    Ok(())
}
