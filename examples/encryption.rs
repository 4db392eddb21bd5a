//! At-rest encryption: a database created with a raw 256-bit key, reopened
//! (a wrong key is refused before anything is read), its key rotated, then
//! the same with a passphrase (Argon2id), and a plaintext database
//! encrypted in place.
//!
//! cargo run --release --features encrypt --example encryption

use emdb::{Cipher, Emdb, EncryptionInput, Error};

fn main() -> emdb::Result<()> {
    let tmp = tempfile::tempdir().map_err(Error::Io)?;

    // A raw key, as a key-management service would hand it out.
    let key = [0x5a; 32];
    let path = tmp.path().join("vault.emdb");
    let db = Emdb::builder().path(&path).encryption_key(key).build()?;
    db.insert("card:1234", "4111 1111 1111 1111")?;
    let people = db.namespace("people")?;
    people.insert("alice", "alice@example.com")?;
    println!("encrypted: {}", db.stats()?.encrypted);
    db.close()?;

    // The wrong key is refused at open; nothing is read or changed.
    match Emdb::builder().path(&path).encryption_key([0; 32]).build() {
        Err(Error::EncryptionKeyMismatch) => println!("wrong key: refused"),
        other => println!("wrong key: unexpected {other:?}"),
    }

    // Rotation rewraps the database key: the data is not rewritten.
    let new_key = [0xa5; 32];
    Emdb::rotate_encryption_key(
        &path,
        EncryptionInput::Key(key),
        EncryptionInput::Key(new_key),
    )?;
    let db = Emdb::builder()
        .path(&path)
        .encryption_key(new_key)
        .build()?;
    println!("after rotation: {:?}", text(db.get("card:1234")?));
    println!(
        "zero-copy read: {:?}",
        db.get_zerocopy("card:1234")?.map(|v| v.len())
    );
    db.close()?;

    // A passphrase, stretched with Argon2id (about a second), with
    // ChaCha20-Poly1305 for machines without AES instructions.
    let notes = tmp.path().join("notes.emdb");
    let db = Emdb::builder()
        .path(&notes)
        .encryption_passphrase("correct horse battery staple")
        .cipher(Cipher::ChaCha20Poly1305)
        .build()?;
    db.insert("todo", "rotate the keys")?;
    db.close()?;

    // A plaintext database encrypted in place (atomically), then opened
    // with its new key.
    let plain = tmp.path().join("plain.emdb");
    let db = Emdb::open(&plain)?;
    db.insert("greeting", "hello")?;
    db.close()?;
    Emdb::enable_encryption(&plain, EncryptionInput::Key(key))?;
    let db = Emdb::builder().path(&plain).encryption_key(key).build()?;
    println!("encrypted in place: {:?}", text(db.get("greeting")?));
    Ok(())
}

fn text(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8_lossy(&b).into_owned())
}
