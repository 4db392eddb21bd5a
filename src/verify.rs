//! `EmdbBuilder::verify`: reads every file of a closed (or read-only
//! shared) database without changing a byte, and reports each problem with
//! its file and offset.
//!
//! Two passes. The first reads the files directly: the manifest, every
//! segment frame by frame (header, checksum, and for an encrypted database
//! authentication), and the hint files of the last checkpoint; after a
//! damaged frame it looks for the next valid one, so one damaged byte does
//! not hide a second. The second is a read-only open, which runs recovery
//! with every rule it has (batches whole or not at all, the checkpoint's
//! claim on durable data), so anything recovery would refuse is reported
//! too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::crypt::{Crypto, KeyCache, Place};
use crate::error::{Error, Result};
use crate::lock::LockFile;
use crate::log::frame::{self, DecodeError, Kind, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::log::manifest::{self, Manifest, Names};
use crate::log::{hint, segment};

/// What [`EmdbBuilder::verify`](crate::EmdbBuilder::verify) found.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Every problem, in the order found: damage first file by file, then
    /// what the read-only open refused, if anything.
    pub findings: Vec<Finding>,
    /// Segment files read.
    pub segments: usize,
    /// Frames read whose checksum (and, encrypted, authentication) held.
    pub frames: u64,
    /// Bytes of frames read.
    pub frame_bytes: u64,
    /// Hint files read and found intact.
    pub hint_files: usize,
    /// Whether the database is encrypted.
    pub encrypted: bool,
    /// Live records, when the read-only open succeeded.
    pub live_records: Option<u64>,
}

impl VerifyReport {
    /// Whether any finding is damage (a notice, such as a torn tail that
    /// the next open cuts, is not).
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.damage)
    }
}

/// One problem: where it is and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// Byte offset within the file.
    pub offset: u64,
    /// Damage (`true`): bytes that are wrong, or data that is missing.
    /// Notice (`false`): something a crash leaves and the next writable
    /// open repairs, such as a torn tail or an unlisted segment file.
    pub damage: bool,
    /// What is wrong, and what it means.
    pub what: String,
}

/// Most findings listed per file; the rest are counted in one more.
const FINDINGS_PER_FILE: usize = 100;

struct Verifier<'a> {
    dir: &'a Path,
    crypto: Option<Arc<Crypto>>,
    report: VerifyReport,
    /// Findings at or after the last durable point of their shard: damage
    /// unless the read-only open shows that recovery cuts the log there
    /// (a write a crash cut short), then notices.
    tentative: Vec<usize>,
    /// Per file: findings listed, findings left out, any of those damage.
    counts: BTreeMap<PathBuf, (usize, usize, bool)>,
}

impl Verifier<'_> {
    /// Records a finding; its index, or `None` past the per-file cap.
    fn find(
        &mut self,
        file: &Path,
        offset: u64,
        damage: bool,
        what: impl Into<String>,
    ) -> Option<usize> {
        let c = self.counts.entry(file.to_path_buf()).or_default();
        if c.0 >= FINDINGS_PER_FILE {
            c.1 += 1;
            c.2 |= damage;
            return None;
        }
        c.0 += 1;
        self.report.findings.push(Finding {
            file: file.to_path_buf(),
            offset,
            damage,
            what: what.into(),
        });
        Some(self.report.findings.len() - 1)
    }

    /// A problem at or after the shard's last durable point (see
    /// `tentative`).
    fn find_tentative(&mut self, file: &Path, offset: u64, what: String) {
        if let Some(i) = self.find(file, offset, true, what) {
            self.tentative.push(i);
        }
    }

    /// The open's verdict on the tentative findings: with `cut`, recovery
    /// accepted the database, so each is where it cuts a torn tail.
    fn settle(&mut self, cut: bool) {
        for i in std::mem::take(&mut self.tentative) {
            let f = &mut self.report.findings[i];
            if cut && f.damage {
                f.damage = false;
                f.what = format!(
                    "{}; it lies after the last durable point, so recovery takes it for a \
                     write a crash cut short, and the next writable open cuts the log here \
                     (with what follows in this shard)",
                    f.what
                );
            }
        }
        let left_out: Vec<(PathBuf, usize, bool)> = self
            .counts
            .iter()
            .filter(|(_, c)| c.1 > 0)
            .map(|(p, c)| (p.clone(), c.1, c.2))
            .collect();
        for (file, n, damage) in left_out {
            self.report.findings.push(Finding {
                file,
                offset: 0,
                damage,
                what: format!("and {n} more problems in this file, not listed"),
            });
        }
    }
}

/// Verifies the database `config` names (see the module doc).
pub(crate) fn verify(config: Config) -> Result<VerifyReport> {
    let Some(dir) = config.dir.clone() else {
        return Err(Error::InvalidConfig("verify() needs a database on disk"));
    };
    let _lock = LockFile::acquire_shared(&dir)?;
    let crypto = crate::engine::open::open_keys(&config)?;
    let mut v = Verifier {
        dir: &dir,
        crypto: crypto.clone(),
        report: VerifyReport {
            encrypted: crypto.is_some(),
            ..VerifyReport::default()
        },
        tentative: Vec::new(),
        counts: BTreeMap::new(),
    };
    let on_disk = segment_files(&dir)?;
    let manifest_path = dir.join(manifest::FILE);
    let m = match Manifest::load(&dir, Names(crypto.clone())) {
        Ok(Some(m)) => Some(m),
        Ok(None) if on_disk.is_empty() => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} holds no emdb database (no MANIFEST)", dir.display()),
            )))
        }
        Ok(None) => {
            v.find(
                &manifest_path,
                0,
                true,
                "the manifest is missing but segment files exist",
            );
            None
        }
        Err(Error::Corrupted { offset, reason, .. }) => {
            v.find(&manifest_path, offset, true, reason);
            None
        }
        Err(Error::MagicMismatch) => {
            v.find(&manifest_path, 0, true, "not a manifest (bad magic bytes)");
            None
        }
        Err(Error::VersionMismatch { found, expected }) => {
            let what = format!("manifest format version {found}; this build reads {expected}");
            v.find(&manifest_path, 8, true, what);
            None
        }
        Err(e) => return Err(e),
    };
    match &m {
        Some(m) => {
            let listed: BTreeSet<(u32, u32)> = m
                .shards
                .iter()
                .enumerate()
                .flat_map(|(s, e)| e.segments.iter().map(move |id| (s as u32, *id)))
                .collect();
            for (s, id) in on_disk.keys().filter(|k| !listed.contains(k)) {
                v.find(
                    &dir.join(segment::file_name(*s, *id)),
                    0,
                    false,
                    "segment file not listed in the manifest (left by a segment creation or \
                     compaction a crash interrupted); ignored, and removed by the next writable \
                     open",
                );
            }
            for (s, entry) in m.shards.iter().enumerate() {
                for id in &entry.segments {
                    v.segment(Some(m), s as u32, *id);
                }
            }
        }
        None => {
            // No manifest to follow: every segment file on disk, each
            // checked on its own.
            for (s, id) in on_disk.keys() {
                v.segment(None, *s, *id);
            }
        }
    }
    // Recovery's own judgement, in memory only.
    let mut ro = config;
    ro.read_only = true;
    ro.background_compaction = false;
    ro.range_scans = false;
    let opened = crate::Emdb::open_with(ro);
    v.settle(opened.is_ok());
    match opened {
        Ok(db) => {
            v.report.live_records = db.stats().ok().map(|s| s.live_records);
        }
        Err(Error::Corrupted {
            offset,
            reason,
            file,
        }) => {
            // Found already: a notice there (a torn tail, to the scan)
            // becomes damage, since recovery will not cut it.
            match v
                .report
                .findings
                .iter_mut()
                .find(|f| f.file == file && f.offset == offset)
            {
                Some(f) => {
                    f.damage = true;
                    let why = if f.what.contains(reason) {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    };
                    f.what = format!(
                        "{}; recovery refuses it{why}: data made durable earlier is damaged or \
                         missing here",
                        f.what
                    );
                }
                None => {
                    v.find(
                        &file,
                        offset,
                        true,
                        format!("the open refuses it: {reason}"),
                    );
                }
            }
        }
        Err(e) if v.report.is_damaged() => {
            // Explained by what was found already.
            let _ = e;
        }
        Err(e) => {
            v.find(&dir, 0, true, format!("the open fails: {e}"));
        }
    }
    Ok(v.report)
}

/// The segment files in `dir`, by (shard, id).
fn segment_files(dir: &Path) -> Result<BTreeMap<(u32, u32), PathBuf>> {
    let mut out = BTreeMap::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let e = e?;
        if let Some(k) = e.file_name().to_str().and_then(segment::parse_file_name) {
            out.insert(k, e.path());
        }
    }
    Ok(out)
}

/// The first offset at or after `from` where a whole, valid frame starts.
fn next_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(frame::MIN_FRAME - 1))
        .find(|&q| bytes[q..q + 4] != [0; 4] && frame::decode(&bytes[q..]).is_ok())
}

impl Verifier<'_> {
    /// Checks one segment (and its hint file, if the last checkpoint
    /// covers it).
    fn segment(&mut self, m: Option<&Manifest>, s: u32, id: u32) {
        let path = self.dir.join(segment::file_name(s, id));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                let what = if e.kind() == io::ErrorKind::NotFound {
                    "a segment listed in the manifest is missing".to_string()
                } else {
                    format!("cannot be read: {e}")
                };
                self.find(&path, 0, true, what);
                return;
            }
        };
        self.report.segments += 1;
        if bytes.len() < SEGMENT_HEADER_LEN || bytes[..SEGMENT_HEADER_LEN].iter().all(|b| *b == 0) {
            self.find(
                &path,
                0,
                true,
                "segment header is missing (file truncated?)",
            );
            return;
        }
        match SegmentHeader::decode(&bytes) {
            Ok(h) => {
                let fits =
                    m.is_none_or(|m| h.shard_count == m.shard_count && h.hash_seed == m.hash_seed);
                if h.shard != s || h.segment != id || !fits {
                    self.find(
                        &path,
                        0,
                        true,
                        "segment header names another shard, segment or database",
                    );
                }
            }
            Err(_) => {
                self.find(&path, 0, true, "segment header is damaged");
                return;
            }
        }
        // What the last checkpoint claims was durable in this segment.
        let (cseg, coff, gen) = match m {
            Some(m) if m.checkpoint_gen > 0 && m.shards[s as usize].checkpoint_pos != 0 => {
                let (cseg, coff) = frame::unpack_pos(m.shards[s as usize].checkpoint_pos);
                (cseg, coff as usize, m.checkpoint_gen)
            }
            _ => (0, 0, 0),
        };
        // A write a crash cut short can only lie after it (recovery also
        // reads the sync markers; the read-only open applies that rule).
        let durable = match cseg.cmp(&id) {
            std::cmp::Ordering::Greater => bytes.len(),
            std::cmp::Ordering::Equal => coff,
            std::cmp::Ordering::Less => 0,
        };
        // A unit struct without the `encrypt` feature.
        #[allow(clippy::default_constructed_unit_structs)]
        let keys = KeyCache::default();
        let mut starts = Vec::new();
        let mut buf = Vec::new();
        let mut p = SEGMENT_HEADER_LEN;
        while p < bytes.len() {
            let why = match frame::decode(&bytes[p..]) {
                Ok(f) => {
                    self.check_frame(&path, s, id, &keys, p, &f, &mut buf);
                    starts.push(p as u32);
                    self.report.frames += 1;
                    self.report.frame_bytes += f.len as u64;
                    p += f.len;
                    continue;
                }
                Err(DecodeError::Zero) if bytes[p..].iter().all(|b| *b == 0) => break,
                Err(DecodeError::Zero) => "zeros where a frame should start",
                Err(DecodeError::Invalid(why)) => why,
            };
            let next = next_frame(&bytes, p + 1);
            let what = match next {
                Some(q) => format!("damaged frame ({why}); valid frames follow at offset {q}"),
                None if bytes.len() - p < frame::MIN_FRAME
                    && bytes[p..].iter().any(|b| *b != 0) =>
                {
                    format!("the segment ends inside a frame ({why})")
                }
                None => {
                    format!("bytes that are not a frame ({why}), and no valid frame after them")
                }
            };
            if p >= durable {
                self.find_tentative(&path, p as u64, what);
            } else {
                self.find(
                    &path,
                    p as u64,
                    true,
                    format!("{what}, in data made durable earlier"),
                );
            }
            match next {
                Some(q) => p = q,
                None => break,
            }
        }
        let data_end = p.min(bytes.len());
        let explained = self
            .report
            .findings
            .iter()
            .any(|f| f.damage && f.file == path);
        if cseg == id && coff > data_end && !explained {
            self.find(
                &path,
                data_end as u64,
                true,
                format!(
                    "the last checkpoint recorded data up to offset {coff}, but the frames end \
                     at {data_end} (segment truncated?)"
                ),
            );
        }
        if gen > 0 && cseg >= id {
            self.hint(s, id, gen, &path, data_end, &starts);
        }
    }

    /// Authentication of an encrypted frame, and the rule that an
    /// encrypted database holds no plaintext puts, removes or clears.
    #[allow(clippy::too_many_arguments)]
    fn check_frame(
        &mut self,
        path: &Path,
        s: u32,
        id: u32,
        keys: &KeyCache,
        p: usize,
        f: &frame::Frame<'_>,
        buf: &mut Vec<u8>,
    ) {
        let Some(c) = self.crypto.clone() else {
            if f.sealed.is_some() {
                self.find(
                    path,
                    p as u64,
                    true,
                    "an encrypted record in a plaintext database",
                );
            }
            return;
        };
        if f.sealed.is_none() {
            if crate::crypt::sealed_kind(f.kind) && f.kind != Kind::Sync {
                self.find(
                    path,
                    p as u64,
                    true,
                    "a plaintext record in an encrypted database (written without the key)",
                );
            }
            return;
        }
        let place = Place {
            shard: s,
            segment: id,
            keys,
        };
        if let Err(why) = c.open_frame(place, p as u32, f, buf) {
            self.find(
                path,
                p as u64,
                true,
                format!("record fails authentication ({why})"),
            );
        }
    }

    /// The checkpoint's hint file of segment `id`: intact, of this
    /// checkpoint, and every entry at a frame the scan found.
    fn hint(&mut self, s: u32, id: u32, gen: u64, seg: &Path, data_end: usize, starts: &[u32]) {
        let path = self.dir.join(segment::hint_name(s, id));
        let tag = self.crypto.clone();
        match hint::check(&path, s, id, gen, tag.as_deref()) {
            Err(u) => {
                let what = format!(
                    "hint file unusable: {}; the next open replays the log",
                    u.what
                );
                self.find(&path, u.offset, u.damaged, what);
            }
            Ok((entries, end)) => {
                self.report.hint_files += 1;
                if end as usize > data_end {
                    self.find(
                        seg,
                        data_end as u64,
                        true,
                        format!(
                            "its hint file records data up to offset {end}, but the frames end \
                             at {data_end} (segment truncated?)"
                        ),
                    );
                }
                if let Some((i, e)) = entries
                    .iter()
                    .enumerate()
                    .find(|(_, e)| starts.binary_search(&e.off).is_err())
                {
                    self.find(
                        &path,
                        (hint::HEAD + i * hint::ENTRY) as u64,
                        true,
                        format!(
                            "entry {i} points at offset {}, where no frame starts",
                            e.off
                        ),
                    );
                }
            }
        }
    }
}
