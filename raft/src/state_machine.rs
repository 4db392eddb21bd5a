//! `RaftStateMachine` on emdb: a key-value map.
//!
//! The map lives in one namespace, `sm-<generation>`, named by the key `sm`
//! of `raft-meta`. In it, data keys carry the prefix `0x01`; the last
//! applied log id and the last membership sit under `0x00` keys, so that
//! `apply` writes a whole batch of commands and the last applied id in one
//! transaction (crash-atomic). A transaction begins only once every earlier
//! one is durable (a flush is started as each commits, and the next waits
//! for it), so after a crash the state machine is whole as of some applied
//! id: never a later transaction without an earlier one. Nothing waits for
//! the last one: the log holds every applied entry until `purge`, which
//! flushes first, and openraft applies again from the log what a crash
//! took.
//!
//! A snapshot is the namespace read through one point-in-time iterator
//! (writers go on meanwhile), data and metadata from the same instant. Its
//! bytes are kept in namespace `raft-snap` in chunks under a generation of
//! their own; the key `snap` of `raft-meta` describes the current one and is
//! switched last. Installing one fills a new `sm-<generation>` namespace and
//! the snapshot's chunks, makes them durable, and switches both pointers
//! (`sm` and `snap`) in one atomic batch: a crash leaves the old state
//! machine and snapshot or the new ones, and the next open removes the
//! leftovers. One lock orders the snapshot's writers and readers (openraft
//! builds snapshots on a task of its own).

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};

use emdb::{AsyncEmdb, AsyncNamespace};
use futures::{Stream, TryStreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use crate::{io_err, json, unjson, Request, Response, TypeConfig, META_NS, SNAP_NS};

const APPLIED: &[u8] = b"\x00applied";
const MEMBERSHIP: &[u8] = b"\x00membership";
const DATA: u8 = 0x01;
/// `raft-meta` key naming the current state-machine namespace.
const SM_POINTER: &[u8] = b"sm";
/// `raft-meta` key of the current snapshot's description.
const CURRENT: &[u8] = b"snap";
/// Bytes per stored snapshot chunk.
const CHUNK: usize = 1 << 20;
/// Most bytes of records in one transaction or batch (apply, install):
/// well inside emdb's default `max_batch_bytes` (64 MiB).
const BATCH_BYTES: usize = 16 << 20;
/// Most records in one transaction or batch.
const BATCH_RECORDS: usize = 10_000;

/// The stored description of the current snapshot.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMetaOf<TypeConfig>,
    generation: u64,
    chunks: u64,
}

/// The key-value state machine of one node (cheap to clone: clones share
/// it, and see an installed snapshot as the node does).
#[derive(Clone)]
pub struct StateMachine {
    db: AsyncEmdb,
    meta: AsyncNamespace,
    snaps: AsyncNamespace,
    /// The current namespace and its generation, switched by an install.
    current: Arc<Mutex<(AsyncNamespace, u64)>>,
    /// Held while the stored snapshot is written or read.
    snapshot: Arc<tokio::sync::Mutex<()>>,
    /// The flush started after the last apply transaction: the next one
    /// waits for it.
    applied_flush: Arc<Mutex<Option<tokio::task::JoinHandle<emdb::Result<()>>>>>,
}

fn sm_name(generation: u64) -> String {
    format!("sm-{generation}")
}

impl StateMachine {
    /// The state machine of the database `db`; drops a namespace that an
    /// interrupted install left.
    pub async fn open(db: AsyncEmdb) -> io::Result<StateMachine> {
        let meta = db.namespace(META_NS).await.map_err(io_err)?;
        let snaps = db.namespace(SNAP_NS).await.map_err(io_err)?;
        let generation: u64 = match meta.get(SM_POINTER).await.map_err(io_err)? {
            Some(v) => unjson(&v)?,
            None => 0,
        };
        let current = sm_name(generation);
        for name in db.list_namespaces().await.map_err(io_err)? {
            if name.starts_with("sm-") && name != current {
                db.drop_namespace(name).await.map_err(io_err)?;
            }
        }
        let sm = db.namespace(&current).await.map_err(io_err)?;
        let this = StateMachine {
            db,
            meta,
            snaps,
            current: Arc::new(Mutex::new((sm, generation))),
            snapshot: Arc::default(),
            applied_flush: Arc::default(),
        };
        this.remove_stray_chunks().await?;
        Ok(this)
    }

    /// The description of the current snapshot, if any.
    async fn stored(&self) -> io::Result<Option<Stored>> {
        match self.meta.get(CURRENT).await.map_err(io_err)? {
            Some(v) => unjson(&v).map(Some),
            None => None.map(Ok).transpose(),
        }
    }

    /// Removes snapshot chunks of any generation but the current one (left
    /// by a crash, or by a snapshot that was replaced).
    async fn remove_stray_chunks(&self) -> io::Result<()> {
        let keep = self.stored().await?.map(|s| s.generation);
        let mut rows = self.snaps.keys_stream().await.map_err(io_err)?;
        let mut stray = Vec::new();
        while let Some(k) = futures::StreamExt::next(&mut rows).await {
            if chunk_generation(&k) != keep {
                stray.push(k);
            }
        }
        for k in stray {
            self.snaps.remove(k).await.map_err(io_err)?;
        }
        Ok(())
    }

    /// The current state-machine namespace.
    fn sm(&self) -> AsyncNamespace {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    fn generation(&self) -> u64 {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// The value of `key` in the map (a local read: as fresh as this
    /// node's applies).
    pub async fn get(&self, key: &str) -> io::Result<Option<String>> {
        let v = self.sm().get(data_key(key)).await.map_err(io_err)?;
        v.map(|v| String::from_utf8(v).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)))
            .transpose()
    }

    /// Every key and value of the map, in key order.
    pub async fn dump(&self) -> io::Result<Vec<(String, String)>> {
        let rows = self.sm().range(vec![DATA]..).await.map_err(io_err)?;
        rows.into_iter()
            .map(|(k, v)| {
                let k = String::from_utf8(k[1..].to_vec());
                let v = String::from_utf8(v);
                match (k, v) {
                    (Ok(k), Ok(v)) => Ok((k, v)),
                    _ => Err(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")),
                }
            })
            .collect()
    }

    async fn applied(
        &self,
    ) -> io::Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>)> {
        let applied = match self.sm().get(APPLIED).await.map_err(io_err)? {
            Some(v) => unjson(&v)?,
            None => None,
        };
        let membership = match self.sm().get(MEMBERSHIP).await.map_err(io_err)? {
            Some(v) => unjson(&v)?,
            None => StoredMembershipOf::<TypeConfig>::default(),
        };
        Ok((applied, membership))
    }

    /// Writes `bytes` as the chunks of a new snapshot generation, durably;
    /// its description (not yet the current one). The caller holds the
    /// snapshot lock.
    async fn write_chunks(
        &self,
        meta: &SnapshotMetaOf<TypeConfig>,
        bytes: &[u8],
    ) -> io::Result<Stored> {
        let generation = self.stored().await?.map_or(1, |o| o.generation + 1);
        // Chunks a crash left under this generation go first.
        self.remove_stray_chunks().await?;
        let mut chunks = 0u64;
        for (i, c) in bytes.chunks(CHUNK).enumerate() {
            self.snaps
                .insert(chunk_key(generation, i as u64), c.to_vec())
                .await
                .map_err(io_err)?;
            chunks += 1;
        }
        self.db.flush().await.map_err(io_err)?;
        Ok(Stored {
            meta: meta.clone(),
            generation,
            chunks,
        })
    }

    /// Stores `bytes` as the current snapshot, described by `meta`, unless
    /// the current one is newer (openraft may already have purged the log
    /// it covers).
    async fn keep_snapshot(
        &self,
        meta: &SnapshotMetaOf<TypeConfig>,
        bytes: &[u8],
    ) -> io::Result<()> {
        let _one = self.snapshot.lock().await;
        let old = self.stored().await?;
        if old
            .as_ref()
            .is_some_and(|o| o.meta.last_log_id > meta.last_log_id)
        {
            return Ok(());
        }
        let stored = self.write_chunks(meta, bytes).await?;
        self.meta
            .insert(CURRENT.to_vec(), json(&stored)?)
            .await
            .map_err(io_err)?;
        self.db.flush().await.map_err(io_err)?;
        self.remove_stray_chunks().await
    }
}

/// The generation of a chunk key.
fn chunk_generation(k: &[u8]) -> Option<u64> {
    let g = k.strip_prefix(b"chunk/")?.get(..8)?;
    Some(u64::from_be_bytes(g.try_into().ok()?))
}

/// `rows` cut into batches of at most `BATCH_RECORDS` records and about
/// `BATCH_BYTES` bytes.
fn batches<T>(rows: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let (mut cur, mut bytes) = (Vec::new(), 0usize);
    for r in rows {
        bytes += size(&r);
        cur.push(r);
        if bytes >= BATCH_BYTES || cur.len() >= BATCH_RECORDS {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn data_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key.as_bytes());
    k
}

fn chunk_key(generation: u64, i: u64) -> Vec<u8> {
    let mut k = b"chunk/".to_vec();
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// A snapshot's bytes: every `(key, value)` of the state-machine
/// namespace (metadata keys included), each as a 4-byte length and bytes.
fn encode_row(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    for b in [k, v] {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
}

fn decode(mut b: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a damaged snapshot");
    let take = |b: &mut &[u8]| -> io::Result<Vec<u8>> {
        let n = u32::from_le_bytes(b.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let v = b.get(4..4 + n as usize).ok_or_else(bad)?.to_vec();
        *b = &b[4 + n as usize..];
        Ok(v)
    };
    let mut rows = Vec::new();
    while !b.is_empty() {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        rows.push((k, v));
    }
    Ok(rows)
}

/// An entry to apply: its log id and new membership (JSON), its command.
type Applying = (Vec<u8>, Option<Vec<u8>>, Option<Request>);

/// Applies one command in `tx`. A command over the limits
/// ([`Request::check`]) changes nothing and answers with its error: the
/// entry is committed already, and must not stop the state machine.
fn apply_one(tx: &mut emdb::Transaction<'_>, request: Option<&Request>) -> emdb::Result<Response> {
    let Some(request) = request else {
        return Ok(Response::default());
    };
    if let Err(e) = request.check() {
        return Ok(Response {
            value: None,
            error: Some(e),
        });
    }
    Ok(match request {
        Request::Set { key, value } => {
            tx.insert(data_key(key), value.as_bytes().to_vec())?;
            Response {
                value: Some(value.clone()),
                error: None,
            }
        }
        Request::Delete { key } => {
            let old = tx.remove(data_key(key))?;
            Response {
                value: old.and_then(|v| String::from_utf8(v).ok()),
                error: None,
            }
        }
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<TypeConfig, Cursor<Vec<u8>>>, io::Error> {
        // One point-in-time iterator, streamed: data and metadata of one
        // instant, read without holding writers.
        let mut rows = self.sm().iter_stream().await.map_err(io_err)?;
        let mut bytes = Vec::new();
        let (mut applied, mut membership) = (None, None);
        while let Some((k, v)) = futures::StreamExt::next(&mut rows).await {
            if k == APPLIED {
                applied = Some(v.clone());
            } else if k == MEMBERSHIP {
                membership = Some(v.clone());
            }
            encode_row(&mut bytes, &k, &v);
        }
        let last_log_id = match applied {
            Some(v) => unjson(&v)?,
            None => None,
        };
        let last_membership = match membership {
            Some(v) => unjson(&v)?,
            None => StoredMembershipOf::<TypeConfig>::default(),
        };
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id,
            last_membership,
        };
        self.keep_snapshot(&meta, &bytes).await?;
        Ok(SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        self.applied().await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch: Vec<Applying> = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = json(&Some(entry.log_id()))?;
            let membership = match &entry.payload {
                EntryPayload::Membership(m) => Some(json(&StoredMembershipOf::<TypeConfig>::new(
                    Some(entry.log_id()),
                    m.clone(),
                ))?),
                _ => None,
            };
            let request = match entry.payload {
                EntryPayload::Normal(r) => Some(r),
                _ => None,
            };
            batch.push((applied, membership, request));
            responders.push(responder);
        }
        // Transactions of a bounded size (emdb's batch limits): each writes
        // its commands, its last applied id and any new membership, all or
        // nothing; in order, so the applied id never runs ahead.
        let size = |(_, m, r): &Applying| {
            m.as_ref().map_or(0, |m| m.len())
                + r.as_ref().map_or(0, |r| match r {
                    Request::Set { key, value } => key.len() + value.len(),
                    Request::Delete { key } => key.len(),
                })
                + 64
        };
        let mut responses = Vec::with_capacity(responders.len());
        for part in batches(batch, size) {
            // Every earlier transaction durable first: emdb keeps writes
            // in order within a shard, not across shards, so an unflushed
            // earlier transaction could be lost beside a later one whose
            // applied id would then cover it. Its flush was started when
            // it committed (it shares the log's device flushes), so by the
            // next commit it is usually done.
            let earlier = self
                .applied_flush
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(h) = earlier {
                h.await.map_err(io::Error::other)?.map_err(io_err)?;
            }
            let out = self
                .sm()
                .transaction(move |tx| {
                    let mut out = Vec::with_capacity(part.len());
                    for (applied, membership, request) in &part {
                        out.push(apply_one(tx, request.as_ref())?);
                        tx.insert(APPLIED.to_vec(), applied.clone())?;
                        if let Some(m) = membership {
                            tx.insert(MEMBERSHIP.to_vec(), m.clone())?;
                        }
                    }
                    Ok(out)
                })
                .await
                .map_err(io_err)?;
            let flush = tokio::spawn(self.db.flush());
            *self.applied_flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(flush);
            responses.extend(out);
        }
        for (responder, response) in responders.into_iter().zip(responses) {
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let mut rows = decode(&bytes)?;
        // The metadata is the installed snapshot's, whatever the rows say.
        rows.retain(|(k, _)| k.first() == Some(&DATA));
        rows.push((APPLIED.to_vec(), json(&meta.last_log_id)?));
        rows.push((MEMBERSHIP.to_vec(), json(&meta.last_membership)?));
        let generation = self.generation() + 1;
        let name = sm_name(generation);
        // A leftover of an install a crash interrupted: start it afresh.
        self.db.drop_namespace(&name).await.map_err(io_err)?;
        let fresh = self.db.namespace(&name).await.map_err(io_err)?;
        for part in batches(rows, |(k, v)| k.len() + v.len() + 16) {
            fresh.insert_many(part).await.map_err(io_err)?;
        }
        let _one = self.snapshot.lock().await;
        // The snapshot's chunks, durable with the new map.
        let stored = self.write_chunks(meta, &bytes).await?;
        // The switch: both pointers in one atomic batch, durable.
        self.meta
            .insert_many([
                (SM_POINTER.to_vec(), json(&generation)?),
                (CURRENT.to_vec(), json(&stored)?),
            ])
            .await
            .map_err(io_err)?;
        self.db.flush().await.map_err(io_err)?;
        let old = sm_name(generation - 1);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (fresh, generation);
        self.db.drop_namespace(old).await.map_err(io_err)?;
        self.remove_stray_chunks().await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let _one = self.snapshot.lock().await;
        let Some(stored) = self.stored().await? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        for i in 0..stored.chunks {
            let c = self
                .snaps
                .get(chunk_key(stored.generation, i))
                .await
                .map_err(io_err)?
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a snapshot chunk is missing")
                })?;
            bytes.extend_from_slice(&c);
        }
        Ok(Some(SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
            meta: stored.meta,
            snapshot: Cursor::new(bytes),
        }))
    }
}
