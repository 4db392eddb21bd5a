//! Hint files: a per-segment snapshot of the index written by `checkpoint()`.
//! The hint of segment S lists, for every key whose live record at the
//! checkpoint was in S, the key's hash, the record's offset, its namespace
//! (each namespace has an index of its own) and its expiry (so a
//! checkpointed reopen rebuilds the expiry list without reading frames). Reopening loads the
//! hints instead of replaying the frames they cover. A hint of another
//! format version is ignored (the segment is replayed instead).
//!
//! | field | size |
//! |---|---|
//! | magic `EMDBHNT\0` | 8 |
//! | format version | 4 |
//! | shard | 4 |
//! | segment id | 4 |
//! | data end: where the segment's frames ended at the checkpoint (version 2) | 4 |
//! | checkpoint generation | 8 |
//! | entry count | 8 |
//! | entries: hash (u64), offset (u32), namespace id (u32), expiry in Unix ms (u64, 0 for none); namespace and expiry since version 3 | 24 each |
//! | encrypted databases only: HMAC-SHA256 of everything before, under a key derived from the database key | 32 |
//! | CRC32C of everything before | 4 |

use std::fs;
use std::io;
use std::path::Path;

use super::frame::FORMAT_VERSION;
use crate::crypt::Crypto;
use crate::io::Files;

const MAGIC: [u8; 8] = *b"EMDBHNT\0";
pub(crate) const HEAD: usize = 40;
pub(crate) const ENTRY: usize = 24;
/// The HMAC of an encrypted database's hint file.
const TAG_LEN: usize = 32;

/// One live record of a segment at the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub hash: u64,
    pub off: u32,
    pub ns: u32,
    /// Unix ms; 0 for a record without expiry.
    pub expires_at: u64,
}

/// Writes a hint file durably under a temporary name (`<path>.tmp`,
/// exclusive, 0600) and renames it over `path`, which keeps its permission
/// bits. A crash leaves the old hint file or the new one, whole; the entry
/// is durable once the caller syncs the directory.
/// In an encrypted database (`tag`), a 32-byte HMAC-SHA256 of everything
/// before it (under a key derived from the database key) precedes the
/// CRC: a changed, dropped or added entry then fails to load.
pub(crate) fn write(
    files: &Files,
    path: &Path,
    (shard, segment): (u32, u32),
    gen: u64,
    data_end: u32,
    entries: &[Entry],
    tag: Option<&Crypto>,
) -> io::Result<()> {
    let mut b = Vec::with_capacity(HEAD + entries.len() * ENTRY + 4);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&shard.to_le_bytes());
    b.extend_from_slice(&segment.to_le_bytes());
    b.extend_from_slice(&data_end.to_le_bytes());
    b.extend_from_slice(&gen.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.hash.to_le_bytes());
        b.extend_from_slice(&e.off.to_le_bytes());
        b.extend_from_slice(&e.ns.to_le_bytes());
        b.extend_from_slice(&e.expires_at.to_le_bytes());
    }
    if let Some(c) = tag {
        let t = c.hint_tag(&b);
        b.extend_from_slice(&t);
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    files.write_replace(&std::path::PathBuf::from(tmp), path, &b)
}

/// What a hint file holds: its entries and the segment's data end.
pub(crate) type Hint = (Vec<Entry>, u32);

/// Reads a hint file. `None` if it is missing, damaged, of another format
/// version, or not of this shard, segment and generation: the caller then
/// replays the segment.
pub(crate) fn read(
    path: &Path,
    shard: u32,
    segment: u32,
    gen: u64,
    tag: Option<&Crypto>,
) -> Option<Hint> {
    check(path, shard, segment, gen, tag).ok()
}

/// Why a hint file cannot be used (for `verify`): where and what, and
/// whether the file is damaged (a checksum or MAC that fails) rather than
/// missing or left over by a checkpoint that a crash interrupted.
#[derive(Debug)]
pub(crate) struct Unusable {
    pub offset: u64,
    pub what: &'static str,
    pub damaged: bool,
}

/// [`read`], telling why a hint file cannot be used.
pub(crate) fn check(
    path: &Path,
    shard: u32,
    segment: u32,
    gen: u64,
    tag: Option<&Crypto>,
) -> Result<Hint, Unusable> {
    let bad = |offset: usize, what, damaged| Unusable {
        offset: offset as u64,
        what,
        damaged,
    };
    let b = fs::read(path).map_err(|_| bad(0, "missing or unreadable", false))?;
    if b.len() < HEAD + 4 || b[..8] != MAGIC {
        return Err(bad(0, "not a hint file (too short or bad magic)", true));
    }
    let mut body = b.len() - 4;
    let crc = u32::from_le_bytes(b[body..].try_into().unwrap_or([0; 4]));
    if crc32c::crc32c(&b[..body]) != crc {
        return Err(bad(body, "checksum mismatch", true));
    }
    if let Some(c) = tag {
        body = body.checked_sub(TAG_LEN).filter(|n| *n >= HEAD).ok_or(bad(
            0,
            "too short for its MAC",
            true,
        ))?;
        if !c.hint_tag_ok(&b[..body], &b[body..body + TAG_LEN]) {
            return Err(bad(body, "MAC does not match", true));
        }
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    if u32_at(8) != FORMAT_VERSION {
        return Err(bad(8, "another format version", false));
    }
    if u32_at(12) != shard || u32_at(16) != segment {
        return Err(bad(12, "names another shard or segment", true));
    }
    if u64_at(24) != gen {
        return Err(bad(
            24,
            "of another checkpoint generation (left by a checkpoint a crash interrupted)",
            false,
        ));
    }
    let count = u64_at(32) as usize;
    if count.checked_mul(ENTRY) != Some(body - HEAD) {
        return Err(bad(
            32,
            "entry count disagrees with the file's length",
            true,
        ));
    }
    let data_end = u32_at(20);
    let entries = b[HEAD..body]
        .chunks_exact(ENTRY)
        .map(|c| {
            let mut h = [0u8; 8];
            h.copy_from_slice(&c[..8]);
            let mut o = [0u8; 4];
            o.copy_from_slice(&c[8..12]);
            let mut n = [0u8; 4];
            n.copy_from_slice(&c[12..16]);
            let mut t = [0u8; 8];
            t.copy_from_slice(&c[16..]);
            Entry {
                hash: u64::from_le_bytes(h),
                off: u32::from_le_bytes(o),
                ns: u32::from_le_bytes(n),
                expires_at: u64::from_le_bytes(t),
            }
        })
        .collect();
    Ok((entries, data_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h");
        let entries = vec![
            Entry {
                hash: 1,
                off: 64,
                ns: 0,
                expires_at: 0,
            },
            Entry {
                hash: u64::MAX,
                off: 1000,
                ns: 7,
                expires_at: 1_900_000_000_000,
            },
        ];
        write(&Files::default(), &p, (1, 2), 3, 900, &entries, None).unwrap();
        assert_eq!(read(&p, 1, 2, 3, None), Some((entries, 900)));
        assert_eq!(read(&p, 1, 2, 4, None), None, "other generation");
        assert_eq!(read(&p, 0, 2, 3, None), None, "other shard");
        let mut b = fs::read(&p).unwrap();
        b[45] ^= 1;
        fs::write(&p, &b).unwrap();
        assert_eq!(read(&p, 1, 2, 3, None), None, "damaged");
        assert_eq!(read(&dir.path().join("missing"), 1, 2, 3, None), None);
    }
}
