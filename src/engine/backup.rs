//! `backup_to`: a consistent, openable copy of the database while writers go
//! on.
//!
//! One cut of every shard is taken under all shard locks at once (so no
//! batch straddles it), everything up to the cut is made durable, and then,
//! outside every lock, each shard's segments are copied up to the cut: the
//! sealed ones whole (they never change), the active one up to the cut's
//! offset. The copy gets a manifest of its own (no checkpoint: it opens by
//! replaying its log), and every file and directory of it is fsynced before
//! the call returns. Compaction waits meanwhile, so the segments copied are
//! the ones the cut saw (each stays readable anyway: the copy holds them).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{block_on, State};
use crate::error::{Error, Result};
use crate::io::Files;
use crate::log::manifest::{Manifest, ShardEntry};
use crate::log::segment::{self, Segment};

/// A segment is copied this many bytes at a time.
const COPY_PIECE: usize = 8 << 20;

impl State {
    /// Copies the database to the new directory `dest`. See `Emdb::backup_to`.
    pub(crate) fn backup_to(&self, dest: &Path) -> Result<()> {
        let dest = check_destination(self.ctx.config.dir.as_deref(), dest)?;
        let _no_compaction = self.ctx.compaction.lock();
        // 1. The cut: per shard, its segments up to the active one and the
        // active one's end; batch knowledge as of then.
        let mut cut: Vec<(Vec<Arc<Segment>>, u32)> = Vec::with_capacity(self.shards.len());
        let mut targets = Vec::with_capacity(self.shards.len());
        let (batch_floor, aborted) = {
            let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
            for (i, (s, g)) in self.shards.iter().zip(&guards).enumerate() {
                s.check_flushable(g)?;
                let active = g.active.id;
                let mut segs: Vec<Arc<Segment>> = s
                    .segment_list()
                    .into_iter()
                    .filter(|x| x.id <= active)
                    .collect();
                segs.sort_unstable_by_key(|x| x.id);
                cut.push((segs, g.reserved));
                targets.push((i, g.lpos));
            }
            match &self.ctx.manifest {
                Some(m) => {
                    let m = m.lock();
                    (m.batch_floor, m.aborted.clone())
                }
                None => (0, Vec::new()),
            }
        };
        // 2. Everything up to the cut written and durable, so the files (or
        // memory) hold it.
        block_on(self.await_durable(&targets))?;
        // 3. The copy, outside every lock.
        // The copy is written even from a read-only open: it goes to
        // another directory (`check_destination`), never into this one.
        let files = self.ctx.config.files().read_only(false);
        files.opening(&dest);
        files.create_dir_all(&dest)?;
        let made = self.write_copy(&files, &dest, &cut, batch_floor, aborted);
        if made.is_err() {
            // Give the space back; a half-made copy is not a database.
            if let Ok(rd) = std::fs::read_dir(&dest) {
                for e in rd.flatten() {
                    let _ = files.remove(&e.path());
                }
            }
        }
        made
    }

    fn write_copy(
        &self,
        files: &Files,
        dest: &Path,
        cut: &[(Vec<Arc<Segment>>, u32)],
        batch_floor: u64,
        aborted: Vec<u64>,
    ) -> Result<()> {
        let upto = |seg: &Segment, segs: &[Arc<Segment>], end: u32| {
            if Some(seg.id) == segs.last().map(|x| x.id) {
                end
            } else {
                seg.data_end.load(Ordering::Acquire)
            }
        };
        let total: u64 = cut
            .iter()
            .flat_map(|(segs, end)| segs.iter().map(move |g| upto(g, segs, *end) as u64))
            .sum();
        let tracking = self
            .ctx
            .progress
            .begin(super::progress::MaintenanceTask::Backup, total);
        let mut shards = Vec::with_capacity(cut.len());
        for (s, (segs, end)) in cut.iter().enumerate() {
            let mut ids = Vec::with_capacity(segs.len());
            for seg in segs {
                let upto = upto(seg, segs, *end);
                let bytes = seg.file_bytes();
                let bytes = &bytes[..(upto as usize).min(bytes.len())];
                let f = files.create_new(&dest.join(segment::file_name(s as u32, seg.id)))?;
                // In pieces, so the progress moves on a large segment.
                for (i, piece) in bytes.chunks(COPY_PIECE).enumerate() {
                    files.write_at(&f, piece, (i * COPY_PIECE) as u64)?;
                    tracking.add(piece.len() as u64);
                }
                files.sync_data(&f)?;
                ids.push(seg.id);
            }
            shards.push(ShardEntry {
                segments: ids,
                checkpoint_pos: 0,
            });
        }
        let (namespaces, next_namespace) = self.ctx.namespace_registry();
        let m = Manifest {
            shard_count: self.ctx.shard_count as u32,
            hash_seed: self.ctx.hash_seed,
            checkpoint_gen: 0,
            seq_floor: 0,
            batch_floor,
            aborted,
            shards,
            namespaces,
            next_namespace,
            names: crate::log::manifest::Names(self.ctx.crypto.clone()),
        };
        if let Some(c) = &self.ctx.crypto {
            // The keyring before the manifest: a copy with a manifest is
            // whole. Synced; its entry is durable with the manifest's.
            let f = files.create_new(&dest.join(crate::crypt::KEYRING_NAME))?;
            files.write_at(&f, c.keyring(), 0)?;
            files.sync_data(&f)?;
        }
        // The manifest's store syncs the directory: every segment's entry
        // and its own are durable after it.
        m.store(files, dest)?;
        Ok(())
    }
}

/// `dest` made absolute and checked: not inside the database (nor the
/// database itself), and not an existing directory with anything in it.
fn check_destination(db: Option<&Path>, dest: &Path) -> Result<PathBuf> {
    let dest = std::path::absolute(dest)?;
    if let Some(db) = db {
        let db = std::fs::canonicalize(db)?;
        // Resolve what exists of the destination, so a symlink or `..`
        // cannot hide that it lies inside the database.
        let mut existing = dest.as_path();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.parent(), existing.file_name()) {
                (Some(p), Some(n)) => {
                    rest.push(n.to_os_string());
                    existing = p;
                }
                _ => break,
            }
        }
        let mut resolved = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.into());
        for n in rest.into_iter().rev() {
            resolved.push(n);
        }
        if resolved.starts_with(&db) {
            return Err(Error::InvalidInput(
                "backup_to: the destination is inside the database directory; choose a path outside it",
            ));
        }
    }
    match std::fs::read_dir(&dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::InvalidInput(
                    "backup_to: the destination directory exists and is not empty; choose a new or empty directory",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::InvalidInput(
                "backup_to: the destination is a file; choose a new or empty directory",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(dest)
}
