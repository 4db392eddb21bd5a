//! The `KEYRING` file: the database key, wrapped (AEAD) under the user's
//! key, with what it takes to derive that key from a passphrase.
//!
//! | field | size |
//! |---|---|
//! | magic `EMDBKEY\0` | 8 |
//! | format version (1) | 4 |
//! | cipher (1 AES-256-GCM, 2 ChaCha20-Poly1305) | 1 |
//! | key derivation (0 raw key, 1 Argon2id) | 1 |
//! | reserved, zero | 2 |
//! | Argon2id memory (KiB), passes, lanes | 4 each |
//! | salt | 16 |
//! | wrap nonce (random; a keyring is written once per enable or rotation) | 12 |
//! | wrapped database key, then its tag | 32 + 16 |
//! | CRC32C of everything before | 4 |
//!
//! The wrap's additional data is every byte before the nonce, so a changed
//! cipher, derivation or salt fails to unwrap instead of being believed.

use std::fs;
use std::io;
use std::path::Path;

use ring::aead::{Aad, Nonce, NONCE_LEN};

use super::keys::{aead_key, random, Cipher, EncryptionInput};
use crate::error::{Error, Result};
use crate::io::Files;

pub(crate) const KEYRING_FILE: &str = super::KEYRING_NAME;
const TMP: &str = "KEYRING.tmp";
const MAGIC: [u8; 8] = *b"EMDBKEY\0";
const VERSION: u32 = 1;
const HEAD: usize = 44;
const LEN: usize = HEAD + NONCE_LEN + 32 + 16 + 4;

/// Argon2id cost, chosen by measurement on the development machine (see
/// ARCHITECTURE.md, "Encryption"): 256 MiB, 4 passes, 1 lane, about 0.8 s.
pub(crate) const ARGON2_MEMORY_KIB: u32 = 256 * 1024;
pub(crate) const ARGON2_PASSES: u32 = 4;
pub(crate) const ARGON2_LANES: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kdf {
    Raw,
    Argon2id {
        memory_kib: u32,
        passes: u32,
        lanes: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keyring {
    pub cipher: Cipher,
    kdf: Kdf,
    salt: [u8; 16],
    nonce: [u8; NONCE_LEN],
    wrapped: [u8; 48],
}

impl Keyring {
    /// A new keyring for `database_key` under `input`.
    pub(crate) fn wrap(
        cipher: Cipher,
        input: &EncryptionInput,
        database_key: &[u8; 32],
    ) -> Result<Keyring> {
        let kdf = match input {
            EncryptionInput::Key(_) => Kdf::Raw,
            EncryptionInput::Passphrase(_) => Kdf::Argon2id {
                memory_kib: ARGON2_MEMORY_KIB,
                passes: ARGON2_PASSES,
                lanes: ARGON2_LANES,
            },
        };
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut salt)?;
        random(&mut nonce)?;
        let mut k = Keyring {
            cipher,
            kdf,
            salt,
            nonce,
            wrapped: [0u8; 48],
        };
        let kek = k.user_key(input)?;
        let mut buf = database_key.to_vec();
        let head = k.head();
        let tag = aead_key(cipher, &kek)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&head[..]),
                &mut buf,
            )
            .map_err(|_| Error::Encryption("wrapping the database key failed"))?;
        k.wrapped[..32].copy_from_slice(&buf);
        k.wrapped[32..].copy_from_slice(tag.as_ref());
        Ok(k)
    }

    /// The database key, if `input` is the key this keyring was made with;
    /// else `Error::EncryptionKeyMismatch`.
    pub(crate) fn unwrap(&self, input: &EncryptionInput) -> Result<[u8; 32]> {
        let kek = self.user_key(input)?;
        let mut buf = self.wrapped.to_vec();
        let head = self.head();
        let plain = aead_key(self.cipher, &kek)
            .open_in_place(
                Nonce::assume_unique_for_key(self.nonce),
                Aad::from(&head[..]),
                &mut buf,
            )
            .map_err(|_| Error::EncryptionKeyMismatch)?;
        let mut dk = [0u8; 32];
        dk.copy_from_slice(plain);
        Ok(dk)
    }

    /// The user's key: the raw key, or Argon2id of the passphrase.
    fn user_key(&self, input: &EncryptionInput) -> Result<[u8; 32]> {
        match (input, self.kdf) {
            (EncryptionInput::Key(k), _) => Ok(*k),
            (
                EncryptionInput::Passphrase(p),
                Kdf::Argon2id {
                    memory_kib,
                    passes,
                    lanes,
                },
            ) => stretch(p, &self.salt, memory_kib, passes, lanes),
            // A passphrase for a keyring made from a raw key: stretch it
            // with the default cost, which then fails to unwrap.
            (EncryptionInput::Passphrase(p), Kdf::Raw) => stretch(
                p,
                &self.salt,
                ARGON2_MEMORY_KIB,
                ARGON2_PASSES,
                ARGON2_LANES,
            ),
        }
    }

    fn head(&self) -> [u8; HEAD] {
        let mut b = [0u8; HEAD];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12] = self.cipher.code();
        let (kind, m, t, p) = match self.kdf {
            Kdf::Raw => (0u8, 0, 0, 0),
            Kdf::Argon2id {
                memory_kib,
                passes,
                lanes,
            } => (1u8, memory_kib, passes, lanes),
        };
        b[13] = kind;
        b[16..20].copy_from_slice(&m.to_le_bytes());
        b[20..24].copy_from_slice(&t.to_le_bytes());
        b[24..28].copy_from_slice(&p.to_le_bytes());
        b[28..44].copy_from_slice(&self.salt);
        b
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(&self.head());
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&self.wrapped);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8], path: &Path) -> Result<Keyring> {
        let bad = |off: usize, why| Error::corrupted(path, off as u64, why);
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(Error::MagicMismatch);
        }
        if b.len() != LEN {
            return Err(bad(b.len().min(LEN), "keyring has the wrong length"));
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if crc32c::crc32c(&b[..LEN - 4]) != u32_at(LEN - 4) {
            return Err(bad(0, "keyring checksum mismatch"));
        }
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::VersionMismatch {
                found: version,
                expected: VERSION,
            });
        }
        let cipher = Cipher::from_code(b[12]).ok_or(bad(12, "keyring names an unknown cipher"))?;
        let kdf = match b[13] {
            0 => Kdf::Raw,
            1 => Kdf::Argon2id {
                memory_kib: u32_at(16),
                passes: u32_at(20),
                lanes: u32_at(24),
            },
            _ => return Err(bad(13, "keyring names an unknown key derivation")),
        };
        let mut k = Keyring {
            cipher,
            kdf,
            salt: [0u8; 16],
            nonce: [0u8; NONCE_LEN],
            wrapped: [0u8; 48],
        };
        k.salt.copy_from_slice(&b[28..44]);
        k.nonce.copy_from_slice(&b[HEAD..HEAD + NONCE_LEN]);
        k.wrapped
            .copy_from_slice(&b[HEAD + NONCE_LEN..HEAD + NONCE_LEN + 48]);
        Ok(k)
    }

    /// The keyring of database `dir`, if it has one.
    pub(crate) fn load(dir: &Path) -> Result<Option<Keyring>> {
        let path = dir.join(KEYRING_FILE);
        match fs::read(&path) {
            Ok(b) => Keyring::decode(&b, &path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the keyring of `dir` atomically and durably (the directory
    /// synced after the rename).
    pub(crate) fn store(&self, files: &Files, dir: &Path) -> io::Result<()> {
        files.write_replace(&dir.join(TMP), &dir.join(KEYRING_FILE), &self.encode())?;
        files.sync_dir(dir)
    }
}

/// Argon2id of `passphrase` with `salt`.
fn stretch(
    passphrase: &str,
    salt: &[u8],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> Result<[u8; 32]> {
    // A keyring asking for more than 1 GiB, 16 passes or 16 lanes is
    // damaged (or hostile), not obeyed: it would exhaust memory or hang.
    if memory_kib > 1024 * 1024 || passes > 16 || lanes > 16 {
        return Err(Error::Encryption(
            "the keyring's Argon2id cost is out of range (over 1 GiB, 16 passes or 16 lanes)",
        ));
    }
    let params = argon2::Params::new(memory_kib, passes, lanes, Some(32))
        .map_err(|_| Error::Encryption("the keyring's Argon2id parameters are out of range"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|_| Error::Encryption("Argon2id failed on this passphrase (too long?)"))?;
    Ok(out)
}
