//! `checkpoint()`: hint files for every segment up to one consistent cut of
//! all shards, then the manifest that names them.

use std::sync::atomic::Ordering;

use super::State;
use crate::error::Result;
use crate::log::frame::{pack_pos, unpack_pos};
use crate::log::{hint, segment};

impl State {
    /// Writes hint files for every segment up to the current tail of each
    /// shard and records them in the manifest.
    pub(crate) async fn checkpoint(&self) -> Result<()> {
        self.ctx.writable()?;
        let Some(dir) = self.ctx.config.dir.clone() else {
            return Ok(());
        };
        self.ctx
            .config
            .files()
            .fault_point(crate::io::FaultPoint::Metadata)?;
        let files = self.ctx.config.files();
        // 1. A consistent cut of every shard: positions and index entries.
        let mut snaps = Vec::with_capacity(self.shards.len());
        let seq_floor;
        let gen;
        {
            let guards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
            // Drawn under every shard lock: a later generation has a later cut.
            gen = self.ctx.checkpoint_gen.fetch_add(1, Ordering::AcqRel) + 1;
            for (s, g) in guards.iter().enumerate() {
                self.shards[s].check_poison(g)?;
                let mut entries = Vec::with_capacity(self.shards[s].indexes.total_len());
                let guard = crossbeam_epoch::pin();
                let expiry = g.expiring.by_location();
                self.shards[s].indexes.for_each(&guard, |ns, ix| {
                    ix.for_each(|h, loc| {
                        entries.push((h, loc, ns, expiry.get(&loc).copied().unwrap_or(0)))
                    });
                });
                snaps.push((pack_pos(g.active.id, g.reserved), g.lpos, entries));
            }
            // Under every shard lock: all frames so far have a lower number.
            seq_floor = self.ctx.seq.load(Ordering::Acquire);
        }
        // 2. Everything up to the cut durable.
        let targets: Vec<(usize, u64)> = snaps
            .iter()
            .enumerate()
            .map(|(s, (_, lpos, _))| (s, *lpos))
            .collect();
        self.await_durable(&targets).await?;
        // 3. Hint files, synced, then the manifest that names them. One
        // checkpoint writes files at a time (they share the hint files'
        // names); one that finds a later generation already written has
        // nothing to add.
        let mut written = self.ctx.maintenance.lock();
        if *written >= gen {
            return Ok(());
        }
        let entries: usize = snaps.iter().map(|(_, _, e)| e.len()).sum();
        let tracking = self
            .ctx
            .progress
            .begin(super::progress::MaintenanceTask::Checkpoint, entries as u64);
        let mut positions = Vec::with_capacity(snaps.len());
        for (s, (pos, _, entries)) in snaps.into_iter().enumerate() {
            let (cut_seg, cut_off) = unpack_pos(pos);
            let mut by_seg: std::collections::BTreeMap<u32, (u32, Vec<hint::Entry>)> =
                Default::default();
            for seg in self.shards[s].segment_list() {
                if seg.id < cut_seg {
                    let end = seg.data_end.load(Ordering::Acquire);
                    by_seg.insert(seg.id, (end, Vec::new()));
                } else if seg.id == cut_seg {
                    by_seg.insert(seg.id, (cut_off, Vec::new()));
                }
            }
            for (h, loc, ns, expires_at) in entries {
                let (sid, off) = unpack_pos(loc);
                if let Some((_, v)) = by_seg.get_mut(&sid) {
                    v.push(hint::Entry {
                        hash: h,
                        off,
                        ns,
                        expires_at,
                    });
                }
            }
            for (sid, (data_end, mut list)) in by_seg {
                list.sort_unstable_by_key(|e| e.off);
                tracking.add(list.len() as u64);
                hint::write(
                    &files,
                    &dir.join(segment::hint_name(s as u32, sid)),
                    (s as u32, sid),
                    gen,
                    data_end,
                    &list,
                    self.ctx.crypto(),
                )?;
            }
            positions.push(pos);
        }
        // The new hint files' entries, before the manifest that names them.
        files.sync_dir(&dir)?;
        if let Some(m) = &self.ctx.manifest {
            let mut m = m.lock();
            if gen > m.checkpoint_gen {
                m.checkpoint_gen = gen;
                m.seq_floor = m.seq_floor.max(seq_floor);
                for (s, pos) in positions.into_iter().enumerate() {
                    m.shards[s].checkpoint_pos = pos;
                }
                m.store(&files, &dir)?;
            }
        }
        *written = gen;
        Ok(())
    }
}
