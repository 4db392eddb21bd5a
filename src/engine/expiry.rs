//! The TTL calls: a record's expiry, `persist`, and `sweep_expired` (the
//! expiry list itself is in `ttl.rs`).

use crossbeam_epoch as epoch;

use super::shard::{Inner, Shard};
use super::State;
use crate::error::Result;
use crate::log::frame::{self, unpack_pos, FrameSpec, Kind};
use crate::log::segtable::account;

/// Expired records a sweep removes under one hold of a shard lock.
const SWEEP_CHUNK: usize = 512;

impl State {
    #[cfg(feature = "ttl")]
    /// The expiry of `key` in Unix ms; `None` if it has none or is absent
    /// (an expired record is absent).
    pub(crate) fn expires_at(&self, ns: u32, key: &[u8]) -> Result<Option<u64>> {
        Ok(self.lookup_expiry(ns, key)?.flatten())
    }

    /// The expiry of a write that names `ttl`.
    #[cfg(feature = "ttl")]
    pub(crate) fn expiry_of(&self, ttl: crate::config::Ttl) -> Result<Option<u64>> {
        use crate::config::Ttl;
        match ttl {
            Ttl::Default => self.default_expiry(),
            Ttl::Never => Ok(None),
            Ttl::After(d) => super::ttl::deadline(d)
                .map(Some)
                .ok_or(crate::error::Error::TtlOverflow),
        }
    }

    #[cfg(feature = "ttl")]
    /// Removes the expiry of `key`: the record is written again without
    /// one. False if the key is absent or has no expiry.
    pub(crate) async fn persist(&self, ns: u32, key: &[u8]) -> Result<bool> {
        self.ctx.writable()?;
        self.check_key(key)?;
        let h = self.ctx.hash(ns, key);
        let si = self.ctx.shard_of(h);
        let shard = &self.shards[si];
        // Room for the record as it is (re-read under the lock below).
        let Some(Some(len)) = self.lookup_with(ns, key, |fr| {
            fr.expires_at
                .map(|_| self.ctx.frame_len(fr.key.len(), fr.value.len(), false))
        })?
        else {
            return Ok(false);
        };
        let target = {
            let mut g = shard.lock_for_append(len).await?;
            self.ctx.check_namespace(ns)?;
            let value = self.lookup_with(ns, key, |fr| fr.expires_at.map(|_| fr.value.to_vec()))?;
            let Some(Some(value)) = value else {
                return Ok(false);
            };
            self.put_locked(shard, &mut g, (ns, h, None), key, &value, None)?;
            shard.finish_write(&g)
        };
        if self.write_through() {
            self.await_durable(&[(si, target)]).await?;
        }
        Ok(true)
    }

    #[cfg(feature = "ttl")]
    /// Writes a tombstone for every expired record of namespace `ns` and
    /// returns how many, with the error that stopped it early, if any.
    pub(crate) async fn sweep_expired(&self, ns: u32) -> (usize, Option<crate::error::Error>) {
        let mut swept = 0;
        let r = self.sweep_into(Some(ns), &mut swept).await;
        (swept, r.err())
    }

    /// Sweeps every namespace (compaction does, before it picks segments).
    pub(super) async fn sweep_all_expired(&self) -> Result<usize> {
        let mut swept = 0;
        self.sweep_into(None, &mut swept).await?;
        Ok(swept)
    }

    async fn sweep_into(&self, ns: Option<u32>, swept: &mut usize) -> Result<()> {
        self.ctx.writable()?;
        for (si, shard) in self.shards.iter().enumerate() {
            loop {
                if shard
                    .expiring_len
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 0
                {
                    break;
                }
                let (done, target) = {
                    // Room for a chunk of tombstones of 28-byte keys (64
                    // bytes each in plaintext, 104 encrypted).
                    let mut g = shard
                        .lock_for_append(SWEEP_CHUNK * self.ctx.frame_len(28, 0, false))
                        .await?;
                    let done = self.sweep_locked(shard, &mut g, ns, swept);
                    (done, shard.finish_write(&g))
                };
                let done = done?;
                if self.write_through() {
                    self.await_durable(&[(si, target)]).await?;
                }
                if done {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One chunk of a sweep under the shard lock: a tombstone for each of
    /// up to `SWEEP_CHUNK` expired records. Whether the shard has no more.
    fn sweep_locked(
        &self,
        shard: &Shard,
        g: &mut Inner,
        ns: Option<u32>,
        swept: &mut usize,
    ) -> Result<bool> {
        let due = g
            .expiring
            .take_expired(ns, super::ttl::now_ms(), SWEEP_CHUNK);
        let done = due.len() < SWEEP_CHUNK;
        let guard = epoch::pin();
        let segs = shard.segments(&guard);
        for (i, &(_, loc, ens, h)) in due.iter().enumerate() {
            let Some(ix) = shard.indexes.get(ens, &guard) else {
                continue;
            };
            if !ix.points_at(h, loc) {
                continue;
            }
            let (sid, off) = unpack_pos(loc);
            let key = segs.get(sid).and_then(|seg| {
                seg.with_frame(off, |b| {
                    let f = frame::decode_unchecked(b).ok()?;
                    match f.sealed {
                        None => Some(f.key.to_vec()),
                        Some(_) => {
                            let mut buf = Vec::new();
                            let p = self.ctx.open(seg, off, &f, &mut buf).ok()?;
                            Some(p.key.to_vec())
                        }
                    }
                })
                .flatten()
            });
            let Some(key) = key else { continue };
            let spec = FrameSpec {
                kind: Kind::Remove,
                seq: self.ctx.next_seq(),
                namespace: ens,
                batch_count: 0,
                expires_at: None,
                key: &key,
                value: &[],
            };
            if let Err(e) = shard.append(g, &spec, true) {
                // Not swept: back on the list for the next sweep.
                for &(t, l, n, hh) in &due[i..] {
                    g.expiring.add(t, l, n, hh);
                }
                return Err(e);
            }
            let gone = ix.remove(h, |l| l == loc);
            if let (Some(o), Some(_)) = (&mut g.ordered, gone) {
                o.remove(ens, &key);
            }
            account(segs, None, gone);
            *swept += 1;
        }
        Ok(done)
    }

    #[cfg(feature = "ttl")]
    /// `f` of the live (unexpired) record of `key`, if there is one.
    fn lookup_with<R>(
        &self,
        ns: u32,
        key: &[u8],
        f: impl Fn(&frame::Frame<'_>) -> R,
    ) -> Result<Option<R>> {
        self.lookup(ns, key, true, |_, _, fr| f(fr))
    }

    #[cfg(feature = "ttl")]
    fn lookup_expiry(&self, ns: u32, key: &[u8]) -> Result<Option<Option<u64>>> {
        self.lookup_with(ns, key, |fr| fr.expires_at)
    }
}
