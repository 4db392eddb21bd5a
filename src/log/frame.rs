//! The byte layout of one log record (a frame) and of a segment file header.
//! Pure encode/decode with CRC32C; no I/O.
//!
//! Frame layout, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: whole frame in bytes, this field and the CRC included |
//! | 4 | 1 | `kind`: 1 put, 2 remove, 3 clear namespace, 4 sync marker |
//! | 5 | 1 | `flags`: bit 0 has expiry, bit 1 encrypted, bit 2 member of a batch |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | `seq`: database-wide sequence number (a batch shares one) |
//! | 16 | 4 | `namespace` id (0 is the default namespace) |
//! | 20 | 4 | `key_len` |
//! | 24 | 4 | `value_len` |
//! | 28 | 4 | `batch_count`: records in the whole batch, all shards; 0 if not a batch |
//! | 32 | 8 | `expires_at` Unix ms, present only with flag bit 0 |
//! | .. | 8 | key id, only with flag bit 1 (encrypted): the append session whose key sealed the frame |
//! | .. | 16 | keyed MAC of namespace and key, only with flag bit 1: index hash (8), then key check (8) |
//! | .. | key_len | key (ciphertext with flag bit 1) |
//! | .. | value_len | value (ciphertext with flag bit 1) |
//! | .. | 16 | AEAD tag, only with flag bit 1 |
//! | len-4 | 4 | CRC32C of bytes `0 .. len-4` |
//!
//! An encrypted frame's additional data is bytes `4 ..` up to the key: every
//! field but the length (which the lengths inside it fix), so kind,
//! sequence, namespace, expiry, key id and MAC are all authenticated. The
//! nonce is not stored: it is the frame's offset in its segment (see
//! `crate::crypt`).

/// Fixed part of a frame header.
pub(crate) const HEADER_LEN: usize = 32;
/// Trailing checksum.
pub(crate) const CRC_LEN: usize = 4;
/// Smallest possible frame.
pub(crate) const MIN_FRAME: usize = HEADER_LEN + CRC_LEN;
pub(crate) const EXPIRY_LEN: usize = 8;
/// Key id and key MAC of an encrypted frame.
pub(crate) const SEAL_HEAD_LEN: usize = 24;
/// AEAD tag of an encrypted frame.
pub(crate) const TAG_LEN: usize = 16;
/// What encryption adds to a frame.
pub(crate) const SEAL_LEN: usize = SEAL_HEAD_LEN + TAG_LEN;

pub(crate) const FLAG_EXPIRES: u8 = 1 << 0;
pub(crate) const FLAG_ENCRYPTED: u8 = 1 << 1;
pub(crate) const FLAG_BATCH: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_EXPIRES | FLAG_ENCRYPTED | FLAG_BATCH;

/// Segment file header: magic, format version, feature flags, identity.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `EMDBSEG\0` |
/// | 8 | 4 | format version |
/// | 12 | 4 | feature flags (0) |
/// | 16 | 4 | shard |
/// | 20 | 4 | shard count |
/// | 24 | 4 | segment id |
/// | 28 | 4 | reserved, zero |
/// | 32 | 8 | hash seed of the database |
/// | 40 | 20 | reserved, zero |
/// | 60 | 4 | CRC32C of bytes `0 .. 60` |
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"EMDBSEG\0";
/// Version of every file format this build writes (segments, hints, manifest).
/// Version 2 added the manifest's batch floor and aborted batches, and the
/// data end of a segment in its hint file. Version 3 added the namespace
/// registry to the manifest and each entry's namespace to hint files.
/// Frames and segment headers are unchanged since version 1.
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The oldest version this build opens (hint files of an older version are
/// ignored: the log is replayed instead).
pub(crate) const OLDEST_READ_VERSION: u32 = 1;

const _: () = assert!(HEADER_LEN == 32 && MIN_FRAME == 36);
const _: () = assert!(SEGMENT_HEADER_LEN % 8 == 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Put = 1,
    Remove = 2,
    Clear = 3,
    /// Written by a shard core after an fsync completed: its value is the
    /// shard position (see [`pack_pos`]) that was durable at that moment.
    /// Recovery uses it to tell a torn tail from damage to durable data.
    Sync = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Remove),
            3 => Some(Kind::Clear),
            4 => Some(Kind::Sync),
            _ => None,
        }
    }
}

/// Everything needed to encode one frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameSpec<'a> {
    pub kind: Kind,
    pub seq: u64,
    pub namespace: u32,
    pub batch_count: u32,
    pub expires_at: Option<u64>,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl FrameSpec<'_> {
    pub(crate) fn encoded_len(&self) -> usize {
        encoded_len(self.key.len(), self.value.len(), self.expires_at.is_some())
    }
}

pub(crate) const fn encoded_len(key_len: usize, value_len: usize, expires: bool) -> usize {
    MIN_FRAME + key_len + value_len + if expires { EXPIRY_LEN } else { 0 }
}

/// Encodes `spec` into `out`, which must be exactly `spec.encoded_len()` long.
pub(crate) fn encode(spec: &FrameSpec<'_>, out: &mut [u8]) {
    let at = encode_head(spec, out, 0);
    let at = encode_body(spec, out, at);
    let crc = crc32c::crc32c(&out[..at]);
    out[at..at + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// What an encrypted frame carries besides its spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seal {
    /// The append session whose key sealed the frame.
    pub key_id: u64,
    /// Index hash of namespace and key (a keyed MAC, so recovery and
    /// compaction need not decrypt to index the frame).
    pub hash: u64,
    /// The rest of the MAC: a lookup compares it instead of the key.
    pub check: u64,
}

/// Encodes `spec` as an encrypted frame into `out`, which must be
/// `spec.encoded_len() + SEAL_LEN` long. `seal` encrypts the key and value
/// in place given the additional data and returns the tag.
#[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
pub(crate) fn encode_sealed(
    spec: &FrameSpec<'_>,
    head: Seal,
    out: &mut [u8],
    seal: impl FnOnce(&[u8], &mut [u8]) -> [u8; TAG_LEN],
) {
    let mut at = encode_head(spec, out, FLAG_ENCRYPTED);
    out[at..at + 8].copy_from_slice(&head.key_id.to_le_bytes());
    out[at + 8..at + 16].copy_from_slice(&head.hash.to_le_bytes());
    out[at + 16..at + 24].copy_from_slice(&head.check.to_le_bytes());
    at += SEAL_HEAD_LEN;
    let body_at = at;
    at = encode_body(spec, out, at);
    let (aad, body) = out.split_at_mut(body_at);
    let tag = seal(&aad[4..], &mut body[..at - body_at]);
    out[at..at + TAG_LEN].copy_from_slice(&tag);
    at += TAG_LEN;
    let crc = crc32c::crc32c(&out[..at]);
    out[at..at + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Writes the fixed header and the expiry; returns where the next field goes.
fn encode_head(spec: &FrameSpec<'_>, out: &mut [u8], extra_flags: u8) -> usize {
    let len = out.len();
    let mut flags = extra_flags;
    if spec.expires_at.is_some() {
        flags |= FLAG_EXPIRES;
    }
    if spec.batch_count > 0 {
        flags |= FLAG_BATCH;
    }
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4] = spec.kind as u8;
    out[5] = flags;
    out[6..8].copy_from_slice(&[0, 0]);
    out[8..16].copy_from_slice(&spec.seq.to_le_bytes());
    out[16..20].copy_from_slice(&spec.namespace.to_le_bytes());
    out[20..24].copy_from_slice(&(spec.key.len() as u32).to_le_bytes());
    out[24..28].copy_from_slice(&(spec.value.len() as u32).to_le_bytes());
    out[28..32].copy_from_slice(&spec.batch_count.to_le_bytes());
    let mut at = HEADER_LEN;
    if let Some(exp) = spec.expires_at {
        out[at..at + EXPIRY_LEN].copy_from_slice(&exp.to_le_bytes());
        at += EXPIRY_LEN;
    }
    at
}

/// Writes key and value at `at`; returns where they end.
fn encode_body(spec: &FrameSpec<'_>, out: &mut [u8], mut at: usize) -> usize {
    out[at..at + spec.key.len()].copy_from_slice(spec.key);
    at += spec.key.len();
    out[at..at + spec.value.len()].copy_from_slice(spec.value);
    at + spec.value.len()
}

/// A decoded frame borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub len: usize,
    pub kind: Kind,
    pub seq: u64,
    pub namespace: u32,
    pub batch_count: u32,
    pub expires_at: Option<u64>,
    /// Plaintext, or ciphertext when `sealed` is set.
    pub key: &'a [u8],
    /// Plaintext, or ciphertext when `sealed` is set.
    pub value: &'a [u8],
    /// Set on an encrypted frame (`crate::crypt` opens it).
    pub sealed: Option<Seal>,
    /// The whole frame's bytes (empty for a decrypted copy, see `with_plain`).
    pub raw: &'a [u8],
}

#[cfg_attr(not(feature = "encrypt"), allow(dead_code))]
impl<'a> Frame<'a> {
    /// This frame's fields with a decrypted key and value.
    pub(crate) fn with_plain<'b>(&self, key: &'b [u8], value: &'b [u8]) -> Frame<'b> {
        Frame {
            len: self.len,
            kind: self.kind,
            seq: self.seq,
            namespace: self.namespace,
            batch_count: self.batch_count,
            expires_at: self.expires_at,
            key,
            value,
            sealed: None,
            // Not the frame's bytes: the plaintext lives elsewhere.
            raw: &[],
        }
    }

    /// Where the key starts within the frame.
    pub(crate) fn key_at(&self) -> usize {
        self.len - CRC_LEN - self.sealed.map_or(0, |_| TAG_LEN) - self.value.len() - self.key.len()
    }

    /// The key and the value back to back, as a plaintext frame holds
    /// them (one copy takes both); `None` for an encrypted frame and for a
    /// decrypted copy, whose key and value lie apart.
    #[inline]
    pub(crate) fn key_and_value(&self) -> Option<&'a [u8]> {
        if self.sealed.is_some() || self.raw.is_empty() {
            return None;
        }
        let at = self.key_at();
        self.raw.get(at..at + self.key.len() + self.value.len())
    }

    /// Whether two frames hold the same namespace and key: equal bytes, or
    /// for encrypted frames an equal MAC (128 bits) and length.
    pub(crate) fn same_key(&self, other: &Frame<'_>) -> bool {
        self.namespace == other.namespace
            && self.key.len() == other.key.len()
            && match (self.sealed, other.sealed) {
                (None, None) => self.key == other.key,
                (Some(a), Some(b)) => a.hash == b.hash && a.check == b.check,
                _ => false,
            }
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The length field is zero: the preallocated, never-written rest of a
    /// segment (or a hole).
    Zero,
    /// Not a valid frame: bad length, kind, flags, layout or checksum.
    Invalid(&'static str),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the frame at the start of `buf`, checking layout and CRC.
pub(crate) fn decode(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let f = decode_unchecked(buf)?;
    let body = f.len - CRC_LEN;
    if crc32c::crc32c(&buf[..body]) != u32_at(buf, body) {
        return Err(DecodeError::Invalid("checksum mismatch"));
    }
    Ok(f)
}

/// Whether `frame` (exactly one frame's bytes) carries a matching CRC.
#[inline]
pub(crate) fn crc_ok(frame: &[u8]) -> bool {
    if frame.len() < MIN_FRAME {
        return false;
    }
    let body = frame.len() - CRC_LEN;
    crc32c::crc32c(&frame[..body]) == u32_at(frame, body)
}

/// The checks of a header's flags, its reserved bytes and its batch count,
/// which [`decode_unchecked`] and [`plain_record`] share.
#[inline(always)]
fn check_flags(flags: u8, reserved: [u8; 2], batch_count: u32) -> Result<(), DecodeError> {
    if flags & !KNOWN_FLAGS != 0 || reserved != [0, 0] {
        return Err(DecodeError::Invalid("unknown frame flags"));
    }
    if (flags & FLAG_BATCH != 0) != (batch_count > 0) {
        return Err(DecodeError::Invalid("batch flag and count disagree"));
    }
    Ok(())
}

/// Where a frame with these header fields has its seal and its key (the
/// value follows the key), and the length its fields add up to (`None` if
/// the sum overflows: a damaged length must not wrap where `usize` is 32
/// bits). Shared by [`decode_unchecked`] and [`plain_record`].
#[inline(always)]
fn field_offsets(flags: u8, key_len: usize, value_len: usize) -> (usize, usize, Option<usize>) {
    let mut at = HEADER_LEN;
    if flags & FLAG_EXPIRES != 0 {
        at += EXPIRY_LEN;
    }
    let sealed_at = at;
    let tag = if flags & FLAG_ENCRYPTED != 0 {
        at += SEAL_HEAD_LEN;
        TAG_LEN
    } else {
        0
    };
    let len = at
        .checked_add(key_len)
        .and_then(|n| n.checked_add(value_len))
        .and_then(|n| n.checked_add(tag + CRC_LEN));
    (sealed_at, at, len)
}

/// Decodes the frame at the start of `buf`, checking the layout but not the
/// CRC. For frames that were already verified once.
///
/// Always inlined: a call returns the `Frame` through memory in 8-byte
/// stores that the caller read back 16 bytes at a time, a store-forwarding
/// stall on every read (a sixth of a cached scan's time).
#[inline(always)]
pub(crate) fn decode_unchecked(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Invalid("truncated length field"));
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Err(DecodeError::Zero);
    }
    if len < MIN_FRAME {
        return Err(DecodeError::Invalid("frame shorter than its header"));
    }
    if len > buf.len() {
        return Err(DecodeError::Invalid(
            "frame runs past the end of the segment",
        ));
    }
    let kind = Kind::from_u8(buf[4]).ok_or(DecodeError::Invalid("unknown frame kind"))?;
    let flags = buf[5];
    let key_len = u32_at(buf, 20) as usize;
    let value_len = u32_at(buf, 24) as usize;
    let batch_count = u32_at(buf, 28);
    check_flags(flags, [buf[6], buf[7]], batch_count)?;
    let (sealed_at, at, expected) = field_offsets(flags, key_len, value_len);
    if expected != Some(len) {
        return Err(DecodeError::Invalid(
            "frame length disagrees with its fields",
        ));
    }
    // Read only now: `len` (within `buf`) covers the expiry field.
    let expires_at = (flags & FLAG_EXPIRES != 0).then(|| u64_at(buf, HEADER_LEN));
    let sealed = (flags & FLAG_ENCRYPTED != 0).then(|| Seal {
        key_id: u64_at(buf, sealed_at),
        hash: u64_at(buf, sealed_at + 8),
        check: u64_at(buf, sealed_at + 16),
    });
    Ok(Frame {
        len,
        kind,
        seq: u64_at(buf, 8),
        namespace: u32_at(buf, 16),
        batch_count,
        expires_at,
        key: &buf[at..at + key_len],
        value: &buf[at + key_len..at + key_len + value_len],
        sealed,
        raw: &buf[..len],
    })
}

/// A scan's read of a plaintext record of namespace `ns` and key `key`
/// at the start of `frame` (exactly one frame's bytes, as
/// `Segment::written_frame` gives them): its key and value back to back,
/// and its expiry. Only the fields such a record needs are read, checked
/// with [`decode_unchecked`]'s own checks ([`check_flags`],
/// [`field_offsets`]); `None` for anything else (another kind, key or
/// namespace, an encrypted or malformed frame), which the caller leaves to
/// `decode_unchecked` and the point read's checks.
#[inline(always)]
pub(crate) fn plain_record<'a>(
    frame: &'a [u8],
    ns: u32,
    key: &[u8],
) -> Option<(&'a [u8], Option<u64>)> {
    let head: &[u8; HEADER_LEN] = frame.first_chunk()?;
    debug_assert_eq!(u32_at(frame, 0) as usize, frame.len(), "one frame's bytes");
    let flags = head[5];
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let (key_len, value_len) = (word(20) as usize, word(24) as usize);
    if head[4] != Kind::Put as u8
        || flags & FLAG_ENCRYPTED != 0
        || word(16) != ns
        || key_len != key.len()
        || check_flags(flags, [head[6], head[7]], word(28)).is_err()
    {
        return None;
    }
    let (_, at, len) = field_offsets(flags, key_len, value_len);
    if len != Some(frame.len()) {
        return None;
    }
    // Read only now: the length covers the expiry field.
    let expires_at = (flags & FLAG_EXPIRES != 0).then(|| u64_at(frame, HEADER_LEN));
    let both = &frame[at..at + key_len + value_len];
    same_bytes(&both[..key_len], key).then_some((both, expires_at))
}

/// `a == b`, without a call to `memcmp` for keys of 8 to 32 bytes (most
/// keys): words compared in place, the last one overlapping.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if !(8..=32).contains(&n) {
        return a == b;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// A position in a shard's log: segment id in the high half, byte offset in
/// the low half. Ordered like the log.
pub(crate) const fn pack_pos(segment: u32, offset: u32) -> u64 {
    ((segment as u64) << 32) | offset as u64
}

pub(crate) const fn unpack_pos(pos: u64) -> (u32, u32) {
    ((pos >> 32) as u32, pos as u32)
}

/// Identity stored in a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub shard: u32,
    pub shard_count: u32,
    pub segment: u32,
    pub hash_seed: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&0u32.to_le_bytes());
        b[16..20].copy_from_slice(&self.shard.to_le_bytes());
        b[20..24].copy_from_slice(&self.shard_count.to_le_bytes());
        b[24..28].copy_from_slice(&self.segment.to_le_bytes());
        b[32..40].copy_from_slice(&self.hash_seed.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header. The error says what was wrong; the caller
    /// adds the file name.
    pub(crate) fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderError::Corrupt("segment header truncated"));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if crc32c::crc32c(&b[..60]) != u32_at(b, 60) {
            return Err(HeaderError::Corrupt("segment header checksum mismatch"));
        }
        let version = u32_at(b, 8);
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(HeaderError::Version(version));
        }
        if u32_at(b, 12) != 0 {
            return Err(HeaderError::Corrupt("segment uses unknown feature flags"));
        }
        Ok(SegmentHeader {
            shard: u32_at(b, 16),
            shard_count: u32_at(b, 20),
            segment: u32_at(b, 24),
            hash_seed: u64_at(b, 32),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    Magic,
    Version(u32),
    Corrupt(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(spec: FrameSpec<'_>) {
        let mut buf = vec![0u8; spec.encoded_len()];
        encode(&spec, &mut buf);
        let f = decode(&buf).expect("decodes");
        assert_eq!(f.len, buf.len());
        assert_eq!(f.kind, spec.kind);
        assert_eq!(f.seq, spec.seq);
        assert_eq!(f.namespace, spec.namespace);
        assert_eq!(f.batch_count, spec.batch_count);
        assert_eq!(f.expires_at, spec.expires_at);
        assert_eq!(f.key, spec.key);
        assert_eq!(f.value, spec.value);
    }

    /// What the scan's reads decide from a full decode: the record's key
    /// and value and expiry, if it is a plaintext put of `ns` and `key`.
    fn full_read<'a>(b: &'a [u8], ns: u32, key: &[u8]) -> Option<(&'a [u8], Option<u64>)> {
        let f = decode_unchecked(b).ok()?;
        (f.kind == Kind::Put && f.namespace == ns && f.key == key && f.sealed.is_none())
            .then(|| f.key_and_value().map(|kv| (kv, f.expires_at)))
            .flatten()
    }

    #[test]
    fn plain_record_agrees_with_a_full_decode() {
        let mut rng = fastrand::Rng::with_seed(11);
        let (mut compared, mut accepted) = (0, 0);
        for round in 0..20_000 {
            let key: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
            let value: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            let batch_count = if rng.bool() { rng.u32(1..5) } else { 0 };
            let spec = FrameSpec {
                kind: [Kind::Put, Kind::Remove, Kind::Clear][rng.usize(0..3)],
                seq: rng.u64(..),
                namespace: rng.u32(0..3),
                batch_count,
                expires_at: rng.bool().then(|| rng.u64(..)),
                key: &key,
                value: &value,
            };
            let mut buf = vec![0u8; spec.encoded_len()];
            encode(&spec, &mut buf);
            // The bytes after it in a segment (so a length field damaged
            // upwards can still fit, as `written_frame` would give it).
            buf.extend((0..64).map(|_| rng.u8(..)));
            // Damage a byte of the header or the field after it in most
            // rounds: the two must still agree.
            if round % 4 != 0 {
                let at = rng.usize(0..HEADER_LEN + 8).min(buf.len() - 1);
                buf[at] = rng.u8(..);
            }
            // Ask for the frame's own key and namespace, or others.
            let ns = if rng.bool() {
                spec.namespace
            } else {
                rng.u32(0..3)
            };
            let mut asked = key.clone();
            if rng.u8(..) < 32 && !asked.is_empty() {
                asked[0] ^= 1;
            }
            // The bytes its length field claims, as `Segment::written_frame`
            // gives them.
            let len = u32_at(&buf, 0) as usize;
            if !(MIN_FRAME..=buf.len()).contains(&len) {
                continue;
            }
            let b = &buf[..len];
            assert_eq!(
                plain_record(b, ns, &asked),
                full_read(b, ns, &asked),
                "round {round}"
            );
            compared += 1;
            accepted += usize::from(full_read(b, ns, &asked).is_some());
        }
        // Most rounds get this far, and a good share are records the
        // short path takes.
        assert!(compared > 15_000, "{compared} rounds compared");
        assert!(accepted > 1_500, "{accepted} records accepted");
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(FrameSpec {
            kind: Kind::Put,
            seq: 7,
            namespace: 0,
            batch_count: 0,
            expires_at: None,
            key: b"key",
            value: b"value",
        });
        roundtrip(FrameSpec {
            kind: Kind::Remove,
            seq: u64::MAX,
            namespace: 9,
            batch_count: 3,
            expires_at: Some(123456),
            key: &[0xff; 300],
            value: b"",
        });
        roundtrip(FrameSpec {
            kind: Kind::Sync,
            seq: 0,
            namespace: 0,
            batch_count: 0,
            expires_at: None,
            key: b"",
            value: &pack_pos(3, 4096).to_le_bytes(),
        });
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let spec = FrameSpec {
            kind: Kind::Put,
            seq: 42,
            namespace: 1,
            batch_count: 2,
            expires_at: Some(99),
            key: b"some key",
            value: b"some value bytes",
        };
        let mut buf = vec![0u8; spec.encoded_len()];
        encode(&spec, &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode(&b).is_err(),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zero_and_short_input() {
        assert_eq!(decode(&[0u8; 64]), Err(DecodeError::Zero));
        assert!(matches!(decode(&[1, 0]), Err(DecodeError::Invalid(_))));
        let mut b = [0u8; 64];
        b[0] = 200; // longer than the buffer
        assert!(matches!(decode(&b), Err(DecodeError::Invalid(_))));
        b[0] = 10; // shorter than a header
        assert!(matches!(decode(&b), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn expiry_flag_on_a_frame_too_short_for_it_is_invalid() {
        // A 36..=39-byte buffer whose frame claims an expiry field it has no
        // room for: rejected, not read past the end.
        for n in MIN_FRAME..HEADER_LEN + EXPIRY_LEN {
            let mut b = vec![0u8; n];
            b[0..4].copy_from_slice(&(n as u32).to_le_bytes());
            b[4] = Kind::Put as u8;
            b[5] = FLAG_EXPIRES;
            assert!(matches!(decode(&b), Err(DecodeError::Invalid(_))));
            assert!(matches!(decode_unchecked(&b), Err(DecodeError::Invalid(_))));
        }
    }

    #[test]
    fn frame_truncated_anywhere_is_invalid() {
        let spec = FrameSpec {
            kind: Kind::Put,
            seq: 1,
            namespace: 0,
            batch_count: 0,
            expires_at: None,
            key: b"k",
            value: b"v",
        };
        let mut buf = vec![0u8; spec.encoded_len()];
        encode(&spec, &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err());
        }
    }

    #[test]
    fn segment_header_roundtrip_and_checks() {
        let h = SegmentHeader {
            shard: 1,
            shard_count: 2,
            segment: 77,
            hash_seed: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Magic));
        let mut bad = b;
        bad[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(HeaderError::Corrupt(_))
        ));
        let with_version = |v: u32| {
            let mut b = h.encode();
            b[8..12].copy_from_slice(&v.to_le_bytes());
            let crc = crc32c::crc32c(&b[..60]);
            b[60..64].copy_from_slice(&crc.to_le_bytes());
            b
        };
        let next = FORMAT_VERSION + 1;
        assert_eq!(
            SegmentHeader::decode(&with_version(next)),
            Err(HeaderError::Version(next))
        );
        assert_eq!(
            SegmentHeader::decode(&with_version(0)),
            Err(HeaderError::Version(0))
        );
        // Version 1 segments (same layout) are still read.
        assert_eq!(SegmentHeader::decode(&with_version(1)), Ok(h));
    }

    #[test]
    fn positions_order_like_the_log() {
        assert!(pack_pos(1, u32::MAX) < pack_pos(2, 0));
        assert_eq!(unpack_pos(pack_pos(5, 77)), (5, 77));
    }
}
