//! The database key and what is derived from it: the keyed MAC of keys,
//! the data key of each append session, and the sealing of frames and
//! namespace names.

use std::fmt;
use std::sync::OnceLock;

use parking_lot::Mutex;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use siphasher::sip128::{Hasher128, SipHasher24};

use super::Place;
use crate::log::frame::{self, Frame, FrameSpec, Seal, TAG_LEN};

/// The AEAD that seals records (feature `encrypt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256-GCM (hardware-accelerated on current x86-64 and ARM cores).
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (fast without AES instructions).
    ChaCha20Poly1305,
}

impl Cipher {
    pub(crate) fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Cipher> {
        match c {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// What a database is encrypted with (feature `encrypt`): 32 raw key bytes,
/// or a passphrase stretched with Argon2id and the database's random salt.
#[derive(Clone, PartialEq, Eq)]
pub enum EncryptionInput {
    /// A 256-bit key, used as it is.
    Key([u8; 32]),
    /// A passphrase (see the crate docs for the Argon2id parameters).
    Passphrase(String),
}

impl fmt::Debug for EncryptionInput {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncryptionInput::Key(_) => f.write_str("Key(..)"),
            EncryptionInput::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

/// Random bytes from the operating system.
pub(crate) fn random(out: &mut [u8]) -> crate::Result<()> {
    SystemRandom::new()
        .fill(out)
        .map_err(|_| crate::Error::Encryption("the system random number generator failed"))
}

/// A requested output length for HKDF.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Everything derived from an unwrapped database key.
pub(crate) struct Crypto {
    cipher: Cipher,
    prk: hkdf::Prk,
    /// SipHash-2-4 key of the index hash and key check.
    mac_key: [u8; 16],
    names: LessSafeKey,
    /// HMAC key giving each sealed name its (synthetic) nonce.
    name_nonces: hmac::Key,
    /// HMAC key of hint files.
    hints: hmac::Key,
    /// The encoded keyring that wraps the database key (a backup copies it).
    keyring: Vec<u8>,
}

impl Crypto {
    pub(crate) fn new(cipher: Cipher, database_key: &[u8; 32], keyring: Vec<u8>) -> Crypto {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"emdb database key v1").extract(database_key);
        let mut mac_key = [0u8; 16];
        fill(&prk, &[b"emdb key mac"], &mut mac_key);
        let mut names = [0u8; 32];
        fill(&prk, &[b"emdb namespace names"], &mut names);
        let mut nonces = [0u8; 32];
        fill(&prk, &[b"emdb namespace name nonces"], &mut nonces);
        let mut hints = [0u8; 32];
        fill(&prk, &[b"emdb hint files"], &mut hints);
        Crypto {
            cipher,
            names: aead_key(cipher, &names),
            name_nonces: hmac::Key::new(hmac::HMAC_SHA256, &nonces),
            hints: hmac::Key::new(hmac::HMAC_SHA256, &hints),
            prk,
            mac_key,
            keyring,
        }
    }

    /// The keyring file's bytes.
    pub(crate) fn keyring(&self) -> &[u8] {
        &self.keyring
    }

    /// SipHash-2-4 (128-bit) of namespace and key under the derived MAC
    /// key: the index hash (kept clear of the index's reserved values),
    /// then the key check.
    #[inline]
    pub(crate) fn mac(&self, ns: u32, key: &[u8]) -> (u64, u64) {
        let mut h = SipHasher24::new_with_key(&self.mac_key);
        std::hash::Hasher::write(&mut h, &ns.to_le_bytes());
        std::hash::Hasher::write(&mut h, key);
        let r = h.finish128();
        (crate::index::slot_hash(r.h1), r.h2)
    }

    /// The data key of session `key_id` of a segment.
    fn data_key(&self, shard: u32, segment: u32, key_id: u64) -> LessSafeKey {
        let mut k = [0u8; 32];
        fill(
            &self.prk,
            &[
                b"emdb segment data key",
                &shard.to_le_bytes(),
                &segment.to_le_bytes(),
                &key_id.to_le_bytes(),
            ],
            &mut k,
        );
        aead_key(self.cipher, &k)
    }

    /// This process's append session of the segment at `at`, started on
    /// first use.
    fn session<'s>(&self, at: Place<'s>) -> &'s (u64, LessSafeKey) {
        at.keys.writer.get_or_init(|| {
            let mut id = [0u8; 8];
            // A failing system RNG leaves a fixed id: fall back to the
            // clock mixed with the address of this segment, never zero.
            let id = match random(&mut id) {
                Ok(()) => u64::from_le_bytes(id),
                Err(_) => fallback_id(at),
            };
            (id, self.data_key(at.shard, at.segment, id))
        })
    }

    /// Encodes `spec` encrypted at offset `off` of the segment at `at` (the
    /// active segment, under its shard's lock) into `out`, which is
    /// `spec.encoded_len() + SEAL_LEN` long. `mac` is the key's
    /// [`mac`](Crypto::mac) if the caller has it.
    pub(crate) fn seal_frame(
        &self,
        at: Place<'_>,
        off: u32,
        spec: &FrameSpec<'_>,
        mac: Option<(u64, u64)>,
        out: &mut [u8],
    ) {
        let (key_id, key) = self.session(at);
        #[cfg(feature = "fault-injection")]
        super::nonce_log::record((at.shard, at.segment, *key_id, off));
        let (hash, check) = mac.unwrap_or_else(|| self.mac(spec.namespace, spec.key));
        let head = Seal {
            key_id: *key_id,
            hash,
            check,
        };
        frame::encode_sealed(spec, head, out, |aad, body| {
            // Fails only for inputs over 64 GiB; a frame is under 4 GiB.
            key.seal_in_place_separate_tag(nonce(off), Aad::from(aad), body)
                .ok()
                .and_then(|t| t.as_ref().try_into().ok())
                .unwrap_or([0u8; TAG_LEN])
        });
    }

    /// Decrypts and authenticates the encrypted frame `f` found at `off` of
    /// the segment at `place`; the returned frame's key and value live in `buf`.
    pub(crate) fn open_frame<'b>(
        &self,
        place: Place<'_>,
        off: u32,
        f: &Frame<'_>,
        buf: &'b mut Vec<u8>,
    ) -> Result<Frame<'b>, &'static str> {
        let Some(s) = f.sealed else {
            return Err("record is not encrypted in an encrypted database");
        };
        let at = f.key_at();
        let n = f.key.len() + f.value.len();
        buf.clear();
        buf.extend_from_slice(&f.raw[at..at + n + TAG_LEN]);
        let aad = Aad::from(&f.raw[4..at]);
        let opened = match self.cached_key(place, s.key_id) {
            Some(k) => k.open_in_place(nonce(off), aad, buf).is_ok(),
            None => {
                let k = self.data_key(place.shard, place.segment, s.key_id);
                let ok = k.open_in_place(nonce(off), aad, buf).is_ok();
                let _ = place.keys.remember(s.key_id, k);
                ok
            }
        };
        if !opened {
            return Err(
                "record failed authentication: wrong key, or the bytes were changed or moved",
            );
        }
        let (k, v) = buf[..n].split_at(f.key.len());
        Ok(f.with_plain(k, v))
    }

    fn cached_key<'s>(&self, at: Place<'s>, key_id: u64) -> Option<&'s LessSafeKey> {
        let c = at.keys;
        if let Some((id, k)) = c.writer.get() {
            if *id == key_id {
                return Some(k);
            }
        }
        c.readers
            .iter()
            .map_while(|s| s.get())
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
    }

    /// The HMAC-SHA256 that authenticates a hint file's `body`.
    pub(crate) fn hint_tag(&self, body: &[u8]) -> [u8; 32] {
        let mut t = [0u8; 32];
        t.copy_from_slice(hmac::sign(&self.hints, body).as_ref());
        t
    }

    /// Whether `tag` authenticates a hint file's `body` (in constant time).
    pub(crate) fn hint_tag_ok(&self, body: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.hints, body, tag).is_ok()
    }

    /// A namespace name sealed for the manifest: synthetic nonce (HMAC of
    /// id and name, so sealing the same name twice gives the same bytes and
    /// two names never share a nonce), ciphertext, tag.
    pub(crate) fn seal_name(&self, id: u32, name: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.name_nonces);
        ctx.update(&id.to_le_bytes());
        ctx.update(name.as_bytes());
        let tag = ctx.sign();
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut out = Vec::with_capacity(NONCE_LEN + name.len() + TAG_LEN);
        out.extend_from_slice(&n);
        out.extend_from_slice(name.as_bytes());
        let t = self
            .names
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(id.to_le_bytes()),
                &mut out[NONCE_LEN..],
            )
            .ok();
        out.extend_from_slice(t.as_ref().map_or(&[0u8; TAG_LEN][..], |t| t.as_ref()));
        out
    }

    /// The name [`seal_name`](Crypto::seal_name) sealed, if `sealed` is
    /// authentic for namespace `id`.
    pub(crate) fn open_name(&self, id: u32, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let n: [u8; NONCE_LEN] = sealed[..NONCE_LEN].try_into().ok()?;
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let plain = self
            .names
            .open_in_place(
                Nonce::assume_unique_for_key(n),
                Aad::from(id.to_le_bytes()),
                &mut buf,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// The nonce of the frame at offset `off`: the offset, then zeros.
fn nonce(off: u32) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[..4].copy_from_slice(&off.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn fill(prk: &hkdf::Prk, info: &[&[u8]], out: &mut [u8]) {
    // `expand` fails only for outputs over 255 hash lengths.
    if let Ok(okm) = prk.expand(info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

pub(crate) fn aead_key(cipher: Cipher, key: &[u8; 32]) -> LessSafeKey {
    // Both algorithms take 32-byte keys, so this cannot fail.
    match UnboundKey::new(cipher.algorithm(), key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("both ciphers take 256-bit keys"),
    }
}

fn fallback_id(at: Place<'_>) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (t ^ (at.keys as *const KeyCache as u64).rotate_left(32)) | 1
}

/// The data keys of one segment's append sessions this process has used:
/// its own (`writer`) and up to four it read. Lock-free to read.
#[derive(Default)]
pub(crate) struct KeyCache {
    writer: OnceLock<(u64, LessSafeKey)>,
    readers: [OnceLock<(u64, LessSafeKey)>; 4],
    fill: Mutex<()>,
}

impl KeyCache {
    /// Keeps `key` for session `key_id` if a slot is free.
    fn remember(&self, key_id: u64, key: LessSafeKey) -> bool {
        let _g = self.fill.lock();
        for slot in &self.readers {
            match slot.get() {
                Some((id, _)) if *id == key_id => return true,
                Some(_) => continue,
                None => return slot.set((key_id, key)).is_ok(),
            }
        }
        false
    }
}
