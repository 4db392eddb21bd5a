//! At-rest encryption (feature `encrypt`).
//!
//! Keys, from the user's down:
//! - the user's key: 32 raw bytes, or Argon2id of a passphrase with the
//!   database's salt (`keyring`);
//! - the database key: 32 random bytes drawn when encryption is enabled,
//!   stored only wrapped (AEAD) under the user's key in the `KEYRING` file.
//!   Rotating the user's key rewraps it; the data is not touched;
//! - derived from the database key with HKDF-SHA256: the SipHash key of the
//!   index hash and key check (`mac`), the key that seals namespace names,
//!   and one data key per append session of a segment.
//!
//! An append session starts whenever this process first appends to a
//! segment: it draws a random 64-bit key id, and its data key is
//! HKDF(database key, shard, segment, key id). The nonce of a frame is its
//! byte offset in the segment. Within a session offsets only grow, so a
//! (data key, nonce) pair is used once; a torn tail cut by recovery is
//! rewritten by a new session, under a new key. See ARCHITECTURE.md,
//! "Encryption", for the whole argument.

#[cfg(feature = "encrypt")]
mod keyring;
#[cfg(feature = "encrypt")]
mod keys;

#[cfg(feature = "encrypt")]
pub(crate) use keyring::Keyring;
#[cfg(feature = "encrypt")]
pub(crate) use keys::random;
#[cfg(feature = "encrypt")]
pub use keys::{Cipher, EncryptionInput};
#[cfg(feature = "encrypt")]
pub(crate) use keys::{Crypto, KeyCache};

#[cfg(not(feature = "encrypt"))]
mod off;
#[cfg(not(feature = "encrypt"))]
pub(crate) use off::{Crypto, KeyCache};

use crate::log::frame::{Frame, Kind};

/// Where a frame lives, as encryption sees it: the shard and segment its
/// data keys derive from, and that segment's cache of them.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
pub(crate) struct Place<'a> {
    pub shard: u32,
    pub segment: u32,
    pub keys: &'a KeyCache,
}

/// Whether frame `f` holds `key`: equal bytes, or for an encrypted frame an
/// equal key check (the index hash matched already, so 128 bits of MAC
/// agree) and length. Kind and namespace are the caller's to check.
#[inline]
pub(crate) fn key_matches(f: &Frame<'_>, key: &[u8], crypto: Option<&Crypto>) -> bool {
    key_matches_mac(f, key, crypto.map(|c| c.mac(f.namespace, key)))
}

/// [`key_matches`] with the key's MAC already computed (`None` in a
/// plaintext database).
#[inline]
pub(crate) fn key_matches_mac(f: &Frame<'_>, key: &[u8], mac: Option<(u64, u64)>) -> bool {
    match (f.sealed, mac) {
        (None, None) => crate::log::frame::same_bytes(f.key, key),
        (Some(s), Some((_, check))) => f.key.len() == key.len() && check == s.check,
        // A plaintext record in an encrypted database, or the reverse, is
        // no record of this key (recovery refuses both).
        _ => false,
    }
}

/// Whether frames of this kind are encrypted (authenticated): those that
/// carry a key, and clears (no user data, but a forged one would empty a
/// namespace). Sync markers stay plain: they carry a log position.
#[inline]
pub(crate) fn sealed_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Put | Kind::Remove | Kind::Clear)
}

/// The name of the keyring file; known to every build, so one without the
/// `encrypt` feature can refuse an encrypted database clearly.
pub(crate) const KEYRING_NAME: &str = "KEYRING";

#[cfg(all(feature = "encrypt", feature = "fault-injection"))]
#[doc(hidden)]
pub mod nonce_log {
    use parking_lot::Mutex;

    /// Shard, segment, key id (the data key's identity) and offset (the
    /// nonce) of one sealed frame.
    pub type Sealed = (u32, u32, u64, u32);

    static LOG: Mutex<Option<Vec<Sealed>>> = Mutex::new(None);

    /// Starts recording (clearing what was recorded).
    pub fn start() {
        *LOG.lock() = Some(Vec::new());
    }

    /// Stops recording; returns what was recorded.
    pub fn take() -> Vec<Sealed> {
        LOG.lock().take().unwrap_or_default()
    }

    pub(crate) fn record(s: Sealed) {
        if let Some(v) = LOG.lock().as_mut() {
            v.push(s);
        }
    }
}
