//! Removing many keys as one atomic batch (`delete_group`): every removal
//! frame carries the batch's sequence number and count, so recovery applies
//! all of them or none.

use crossbeam_epoch as epoch;

use super::State;
use crate::error::Result;
use crate::log::frame::{FrameSpec, Kind};
use crate::log::segtable::frame_has_key;

impl State {
    /// Removes every key of `keys` that has a live record in namespace
    /// `ns`, atomically across a crash; returns how many it removed.
    pub(crate) async fn remove_batch(&self, ns: u32, keys: &[Vec<u8>]) -> Result<usize> {
        self.ctx.writable()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let cfg = &self.ctx.config;
        super::ops::within("batch record count", keys.len(), cfg.max_batch_records)?;
        let mut per_shard = vec![0usize; self.shards.len()];
        let mut routed = Vec::with_capacity(keys.len());
        for k in keys {
            self.check_key(k)?;
            let h = self.ctx.hash(ns, k);
            let s = self.ctx.shard_of(h);
            per_shard[s] += self.ctx.frame_len(k.len(), 0, false);
            routed.push((h, s));
        }
        let total = per_shard.iter().sum();
        super::ops::within("batch size in bytes", total, cfg.max_batch_bytes)?;
        let (removed, targets) = {
            let mut guards = self.lock_shards(&per_shard).await?;
            // Under every lock: which keys are live decides the batch's size,
            // and nothing can change them until the frames are appended.
            let guard = epoch::pin();
            let live: Vec<bool> = keys
                .iter()
                .zip(&routed)
                .map(|(k, (h, s))| {
                    let shard = &self.shards[*s];
                    let segs = shard.segments(&guard);
                    shard.indexes.get(ns, &guard).is_some_and(|ix| {
                        ix.find_map(*h, &guard, |loc| {
                            frame_has_key(segs, loc, ns, k, self.ctx.crypto())
                                .then(|| super::ttl::frame_expiry(segs, loc))
                                .filter(|t| !super::ttl::is_expired(*t))
                        })
                        .is_some()
                    })
                })
                .collect();
            let count = live.iter().filter(|l| **l).count();
            if count == 0 {
                return Ok(0);
            }
            let seq = self.ctx.next_seq();
            for ((k, (_, s)), is_live) in keys.iter().zip(&routed).zip(&live) {
                let Some(g) = guards[*s].as_mut().filter(|_| *is_live) else {
                    continue;
                };
                let spec = FrameSpec {
                    kind: Kind::Remove,
                    seq,
                    namespace: ns,
                    batch_count: count as u32,
                    expires_at: None,
                    key: k,
                    value: &[],
                };
                if let Err(e) = self.shards[*s].append(g, &spec, true) {
                    self.ctx.abort_batch(seq);
                    return Err(e);
                }
            }
            for ((k, (h, s)), is_live) in keys.iter().zip(&routed).zip(&live) {
                if let Some(g) = guards[*s].as_mut().filter(|_| *is_live) {
                    self.shards[*s].index_remove(g, &guard, (ns, *h), k);
                }
            }
            (count, self.finish_batch(&guards))
        };
        if self.write_through() {
            self.await_durable(&targets).await?;
        }
        Ok(removed)
    }
}
