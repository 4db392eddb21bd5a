//! The admin calls of encryption (feature `encrypt`) on a closed database: `enable_encryption`,
//! `disable_encryption` (each a rewrite into a staging directory, swapped
//! in atomically) and `rotate_encryption_key` (a new keyring, renamed in).

use std::path::Path;

use crate::crypt::{EncryptionInput, Keyring};
use crate::engine::open::{remove_tree, staging_dir};
use crate::engine::{block_on, DEFAULT_NS};
use crate::error::{Error, Result};
use crate::io::Files;
use crate::lock::LockFile;
use crate::Emdb;

/// Rewrites `dir` into a new database whose builder `target` sets up
/// (encrypted or not), then swaps it in. `source` opens the old one (which
/// takes its lock, refusing a database that is open). A crash at any point
/// leaves the old database or the new one at `dir`: the new one is
/// complete and durable before one `renameat2(RENAME_EXCHANGE)` swaps the
/// two directories, and the old one (now at the staging name) is removed
/// after; a staging directory left by a crash is removed by the next open
/// or rewrite.
pub(crate) fn rewrite(
    files: &Files,
    dir: &Path,
    source: crate::EmdbBuilder,
    target: impl FnOnce(crate::EmdbBuilder) -> crate::EmdbBuilder,
) -> Result<()> {
    if !dir.join(crate::log::manifest::FILE).exists() {
        return Err(Error::InvalidInput("no emdb database at this path"));
    }
    // The real directory: a symlink to it would be swapped itself, and the
    // old database left where it points.
    let dir = std::fs::canonicalize(dir)?;
    let staging = staging_dir(&dir).ok_or(Error::InvalidInput("the path has no file name"))?;
    let old = source.path(&dir).background_compaction(false).build()?;
    remove_tree(files, &staging)?;
    let shards = old.stats()?.shards;
    let new = target(Emdb::builder())
        .path(&staging)
        .shards(shards)
        .background_compaction(false)
        .build();
    let copied = new.and_then(|new| {
        copy_records(&old, &new)?;
        new.close()
    });
    let closed = old.close();
    if let Err(e) = copied.and(closed) {
        let _ = remove_tree(files, &staging);
        return Err(e);
    }
    // Between the close and this lock another process may have opened the
    // old database: then nothing changes.
    let lock = match LockFile::acquire(files, &dir) {
        Ok(l) => l,
        Err(e) => {
            let _ = remove_tree(files, &staging);
            return Err(e);
        }
    };
    if let Err(e) = files.exchange(&staging, &dir) {
        let _ = remove_tree(files, &staging);
        return Err(e.into());
    }
    // Swapped: from here the call has done its work. The parent's sync
    // makes the swap durable (an error there is reported: a power cut could
    // still bring the old database back); removing the old one, now at the
    // staging name, is best effort (the next open removes it otherwise).
    drop(lock);
    let synced = match dir.parent() {
        Some(parent) => files.sync_dir(parent).map_err(Error::Io),
        None => Ok(()),
    };
    let _ = remove_tree(files, &staging);
    synced
}

/// Every live record of every namespace of `old`, with its expiry, into
/// `new`.
fn copy_records(old: &Emdb, new: &Emdb) -> Result<()> {
    let mut spaces = vec![(DEFAULT_NS, DEFAULT_NS)];
    for name in old.list_namespaces()?.into_iter().filter(|n| !n.is_empty()) {
        let from = old.engine().ctx.find_namespace(&name);
        let to = new.engine().ctx.namespace_id(&name)?;
        if let Some(from) = from {
            spaces.push((from, to));
        }
    }
    for (from, to) in spaces {
        let mut it = crate::iter::EmdbIter::new(old.engine().snapshot(from), from);
        while let Some((k, v, expires_at)) = it.next_expiring() {
            block_on(new.engine().insert_expiring(to, &k, &v, expires_at))?;
        }
        if it.damaged() > 0 {
            // The rewrite would drop them, and the original is removed
            // after it: refuse, and change nothing.
            return Err(Error::Corrupted {
                offset: 0,
                reason:
                    "damaged records: the rewrite would lose them (restore from a backup first)",
                file: old.path().to_path_buf(),
            });
        }
    }
    new.flush()
}

/// `Emdb::rotate_encryption_key`: the database key rewrapped under `new`
/// in a new keyring, renamed over the old one.
pub(crate) fn rotate(dir: &Path, current: &EncryptionInput, new: &EncryptionInput) -> Result<()> {
    rotate_with(&Files::default(), dir, current, new)
}

/// [`rotate`] with its file changes made through `files` (a fault plan's,
/// in the power-cut test).
pub(crate) fn rotate_with(
    files: &Files,
    dir: &Path,
    current: &EncryptionInput,
    new: &EncryptionInput,
) -> Result<()> {
    if !dir.join(crate::log::manifest::FILE).exists() {
        return Err(Error::InvalidInput("no emdb database at this path"));
    }
    let _lock = LockFile::acquire(files, dir)?;
    let ring = Keyring::load(dir)?.ok_or(Error::Encryption(
        "the database is not encrypted: use Emdb::enable_encryption",
    ))?;
    let dk = ring.unwrap(current)?;
    Keyring::wrap(ring.cipher, new, &dk)?.store(files, dir)?;
    Ok(())
}
