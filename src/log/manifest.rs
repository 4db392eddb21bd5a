//! The manifest: which segments are live, per shard, plus the database's
//! identity (shard count, hash seed) and the last checkpoint. Replaced
//! atomically: written to `MANIFEST.tmp`, synced, renamed over `MANIFEST`,
//! and the directory synced.
//!
//! | field | size |
//! |---|---|
//! | magic `EMDBMAN\0` | 8 |
//! | format version | 4 |
//! | feature flags: bit 0, namespace names are sealed (encrypted database) | 4 |
//! | shard count | 4 |
//! | reserved | 4 |
//! | hash seed | 8 |
//! | checkpoint generation (0: none) | 8 |
//! | sequence floor: every frame the checkpoint covers has a lower sequence number | 8 |
//! | batch floor: every batch with a lower sequence number is whole on disk, but those listed next (version 2) | 8 |
//! | aborted batches: count (u32), sequence numbers (u64 each) of batches known incomplete (version 2) | .. |
//! | per shard: checkpoint position (u64), segment count (u32), segment ids (u32 each, ascending) | .. |
//! | namespaces (version 3): next id (u32), count (u32), then per namespace its id (u32, ascending), name length (u16) and name (UTF-8, or sealed with flag bit 0) | .. |
//! | CRC32C of everything before | 4 |
//!
//! Version 1 manifests (no batch floor, no aborted list) are read as a batch
//! floor of 0; manifests before version 3 have no named namespace. Every
//! store writes the current version.
//!
//! The namespace list is the registry: a record whose namespace id is
//! neither 0 (the default) nor listed belongs to a dropped namespace and is
//! ignored by recovery and dropped by compaction. Ids are never reused, so a
//! namespace re-created under an old name never sees the old records.

use std::fs;
use std::io;
use std::path::Path;

use super::frame::{FORMAT_VERSION, OLDEST_READ_VERSION};
use std::sync::Arc;

use crate::crypt::Crypto;
use crate::error::{Error, Result};
use crate::io::Files;

pub(crate) const FILE: &str = "MANIFEST";
const TMP: &str = "MANIFEST.tmp";
const MAGIC: [u8; 8] = *b"EMDBMAN\0";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub shard_count: u32,
    pub hash_seed: u64,
    pub checkpoint_gen: u64,
    /// Sequence numbers below this may appear in checkpointed frames.
    pub seq_floor: u64,
    /// Every batch with a lower sequence number had all its frames on disk
    /// when this was stored, except those in `aborted`: recovery applies
    /// such a batch's surviving frames without counting them (compaction
    /// drops a batch's dead frames).
    pub batch_floor: u64,
    /// Batches known incomplete (a recovery dropped them, or a write of
    /// theirs failed part-way): never applied, whatever the floor.
    pub aborted: Vec<u64>,
    pub shards: Vec<ShardEntry>,
    /// Named namespaces, by ascending id.
    pub namespaces: Vec<(u32, String)>,
    /// The id the next namespace gets (ids start at 1).
    pub next_namespace: u32,
    /// Seals the names of an encrypted database's namespaces.
    pub names: Names,
}

/// How namespace names are stored: as they are, or sealed (see
/// `Crypto::seal_name`).
#[derive(Clone, Default)]
pub(crate) struct Names(pub Option<Arc<Crypto>>);

impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        self.0.is_some() == other.0.is_some()
    }
}

impl Eq for Names {}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Sealed" } else { "Plain" })
    }
}

const FLAG_SEALED_NAMES: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardEntry {
    /// Live segment ids, ascending.
    pub segments: Vec<u32>,
    /// Where the last checkpoint's hint files stop (a packed position).
    pub checkpoint_pos: u64,
}

impl Manifest {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.shards.len() * 32);
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.names.0.is_some() {
            FLAG_SEALED_NAMES
        } else {
            0
        };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&self.shard_count.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.hash_seed.to_le_bytes());
        b.extend_from_slice(&self.checkpoint_gen.to_le_bytes());
        b.extend_from_slice(&self.seq_floor.to_le_bytes());
        b.extend_from_slice(&self.batch_floor.to_le_bytes());
        b.extend_from_slice(&(self.aborted.len() as u32).to_le_bytes());
        for seq in &self.aborted {
            b.extend_from_slice(&seq.to_le_bytes());
        }
        for s in &self.shards {
            b.extend_from_slice(&s.checkpoint_pos.to_le_bytes());
            b.extend_from_slice(&(s.segments.len() as u32).to_le_bytes());
            for id in &s.segments {
                b.extend_from_slice(&id.to_le_bytes());
            }
        }
        b.extend_from_slice(&self.next_namespace.to_le_bytes());
        b.extend_from_slice(&(self.namespaces.len() as u32).to_le_bytes());
        for (id, name) in &self.namespaces {
            b.extend_from_slice(&id.to_le_bytes());
            match &self.names.0 {
                Some(c) => {
                    let sealed = c.seal_name(*id, name);
                    b.extend_from_slice(&(sealed.len() as u16).to_le_bytes());
                    b.extend_from_slice(&sealed);
                }
                None => {
                    b.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    b.extend_from_slice(name.as_bytes());
                }
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a manifest; `names` opens sealed namespace names (a manifest
    /// with sealed names and no `names` is `Error::Encryption`).
    pub(crate) fn decode(b: &[u8], path: &Path, names: Names) -> Result<Manifest> {
        let bad = |off: usize, why| Error::corrupted(path, off as u64, why);
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(Error::MagicMismatch);
        }
        if b.len() < 52 {
            return Err(bad(b.len(), "manifest truncated"));
        }
        let body = b.len() - 4;
        if crc32c::crc32c(&b[..body])
            != u32::from_le_bytes(b[body..].try_into().map_err(|_| bad(body, "short"))?)
        {
            return Err(bad(0, "manifest checksum mismatch"));
        }
        let mut r = Reader {
            b: &b[..body],
            at: 8,
        };
        let version = r.u32().ok_or(bad(8, "manifest truncated"))?;
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::VersionMismatch {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let flags = r.u32().ok_or(bad(12, "manifest truncated"))?;
        if flags & !FLAG_SEALED_NAMES != 0 {
            return Err(bad(12, "manifest uses unknown feature flags"));
        }
        let sealed = flags & FLAG_SEALED_NAMES != 0;
        match (sealed, &names.0) {
            (true, None) => {
                return Err(Error::Encryption(
                    "the database is encrypted: open it with its key or passphrase",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::Encryption(
                    "the database is not encrypted: open it without a key, or encrypt it first \
                     with Emdb::enable_encryption",
                ))
            }
            _ => {}
        }
        let shard_count = r.u32().ok_or(bad(r.at, "manifest truncated"))?;
        r.u32().ok_or(bad(r.at, "manifest truncated"))?;
        let hash_seed = r.u64().ok_or(bad(r.at, "manifest truncated"))?;
        let checkpoint_gen = r.u64().ok_or(bad(r.at, "manifest truncated"))?;
        let seq_floor = r.u64().ok_or(bad(r.at, "manifest truncated"))?;
        let (batch_floor, aborted) = if version >= 2 {
            let floor = r.u64().ok_or(bad(r.at, "manifest truncated"))?;
            let n = r.u32().ok_or(bad(r.at, "manifest truncated"))? as usize;
            if n > r.remaining() / 8 {
                return Err(bad(r.at, "manifest aborted-batch count out of range"));
            }
            let mut aborted = Vec::with_capacity(n);
            for _ in 0..n {
                aborted.push(r.u64().ok_or(bad(r.at, "manifest truncated"))?);
            }
            (floor, aborted)
        } else {
            (0, Vec::new())
        };
        if shard_count == 0 || shard_count > 1024 {
            return Err(bad(16, "manifest shard count out of range"));
        }
        let mut shards = Vec::with_capacity(shard_count as usize);
        for _ in 0..shard_count {
            let checkpoint_pos = r.u64().ok_or(bad(r.at, "manifest truncated"))?;
            let n = r.u32().ok_or(bad(r.at, "manifest truncated"))? as usize;
            if n > r.remaining() / 4 {
                return Err(bad(r.at, "manifest segment count out of range"));
            }
            let mut segments = Vec::with_capacity(n);
            for _ in 0..n {
                segments.push(r.u32().ok_or(bad(r.at, "manifest truncated"))?);
            }
            if segments.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(r.at, "manifest segment ids out of order"));
            }
            shards.push(ShardEntry {
                segments,
                checkpoint_pos,
            });
        }
        let (next_namespace, namespaces) = if version >= 3 {
            let next = r.u32().ok_or(bad(r.at, "manifest truncated"))?;
            let n = r.u32().ok_or(bad(r.at, "manifest truncated"))? as usize;
            if n > r.remaining() / 6 {
                return Err(bad(r.at, "manifest namespace count out of range"));
            }
            let mut list: Vec<(u32, String)> = Vec::with_capacity(n);
            for _ in 0..n {
                let id = r.u32().ok_or(bad(r.at, "manifest truncated"))?;
                let len = r.u16().ok_or(bad(r.at, "manifest truncated"))? as usize;
                let raw = r.bytes(len).ok_or(bad(r.at, "manifest truncated"))?;
                let name = match &names.0 {
                    Some(c) => c.open_name(id, raw),
                    None => std::str::from_utf8(raw).ok().map(str::to_string),
                }
                .ok_or(bad(r.at, "manifest namespace name damaged"))?;
                if id == 0 || id >= next || list.last().is_some_and(|(p, _)| *p >= id) {
                    return Err(bad(r.at, "manifest namespace ids out of order"));
                }
                if list.iter().any(|(_, other)| *other == name) {
                    return Err(bad(r.at, "manifest lists a namespace name twice"));
                }
                list.push((id, name));
            }
            (next, list)
        } else {
            (1, Vec::new())
        };
        if r.remaining() != 0 {
            return Err(bad(r.at, "manifest has trailing bytes"));
        }
        Ok(Manifest {
            shard_count,
            hash_seed,
            checkpoint_gen,
            seq_floor,
            batch_floor,
            aborted,
            shards,
            namespaces,
            next_namespace,
            names,
        })
    }

    /// Reads the manifest of `dir`; `Ok(None)` if there is none.
    pub(crate) fn load(dir: &Path, names: Names) -> Result<Option<Manifest>> {
        let path = dir.join(FILE);
        match fs::read(&path) {
            Ok(b) => Manifest::decode(&b, &path, names).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the manifest of `dir` atomically and durably: a new
    /// `MANIFEST.tmp` (exclusive, 0600), its data synced, renamed over
    /// `MANIFEST` (which keeps its permission bits), and the directory
    /// synced. The directory sync also makes durable every entry created in
    /// `dir` before it (the segment files the manifest lists).
    pub(crate) fn store(&self, files: &Files, dir: &Path) -> io::Result<()> {
        files.write_replace(&dir.join(TMP), &dir.join(FILE), &self.encode())?;
        files.sync_dir(dir)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    fn u16(&mut self) -> Option<u16> {
        let v = u16::from_le_bytes(self.b.get(self.at..self.at + 2)?.try_into().ok()?);
        self.at += 2;
        Some(v)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(v)
    }
    fn u32(&mut self) -> Option<u32> {
        let v = u32::from_le_bytes(self.b.get(self.at..self.at + 4)?.try_into().ok()?);
        self.at += 4;
        Some(v)
    }
    fn u64(&mut self) -> Option<u64> {
        let v = u64::from_le_bytes(self.b.get(self.at..self.at + 8)?.try_into().ok()?);
        self.at += 8;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let m = Manifest {
            shard_count: 2,
            hash_seed: 99,
            checkpoint_gen: 3,
            seq_floor: 99,
            batch_floor: 98,
            aborted: vec![7, 40],
            shards: vec![
                ShardEntry {
                    segments: vec![1, 2, 5],
                    checkpoint_pos: 7,
                },
                ShardEntry {
                    segments: vec![],
                    checkpoint_pos: 0,
                },
            ],
            namespaces: vec![(1, "users".into()), (4, "sessions ü".into())],
            next_namespace: 6,
            names: Default::default(),
        };
        let b = m.encode();
        let p = Path::new("MANIFEST");
        assert_eq!(Manifest::decode(&b, p, Names::default()).unwrap(), m);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(
                Manifest::decode(&d, p, Names::default()).is_err(),
                "flip at {i}"
            );
        }
        for cut in 0..b.len() {
            assert!(
                Manifest::decode(&b[..cut], p, Names::default()).is_err(),
                "cut at {cut}"
            );
        }
    }
}
