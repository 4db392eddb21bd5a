//! An in-process network: every node's `Raft` handle in one router; an RPC
//! is a direct call of the target's handler. Taking a node off the router
//! (a crash, or a partition) makes it unreachable until it is put back.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend};

use crate::{NodeId, Raft, TypeConfig};

/// The nodes a network reaches.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

impl Router {
    /// A router with no node.
    pub fn new() -> Router {
        Router::default()
    }

    /// Makes `raft` reachable as node `id` (replacing what was there).
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.lock().insert(id, raft);
    }

    /// Takes node `id` off the network; its handle, if it was on.
    pub fn remove(&self, id: NodeId) -> Option<Raft> {
        self.lock().remove(&id)
    }

    /// The handle of node `id`, if it is on the network.
    pub fn get(&self, id: NodeId) -> Option<Raft> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Raft>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(&self, id: NodeId) -> Result<Raft, Unreachable<TypeConfig>> {
        self.get(id)
            .ok_or_else(|| Unreachable::from_string(format!("node {id} is not on the network")))
    }
}

/// A connection to one node.
pub struct Connection {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.target(self.target)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

/// One node of an in-process cluster: its `Raft`, its state machine (for
/// local reads) and its database.
pub struct LocalNode {
    /// The node's id.
    pub id: NodeId,
    /// Its Raft handle.
    pub raft: Raft,
    /// Its state machine (a clone sharing the database).
    pub sm: crate::StateMachine,
    /// Its database.
    pub db: emdb::AsyncEmdb,
}

impl LocalNode {
    /// Starts node `id` on `db` (opened with range scans on) and puts it on
    /// the network.
    pub async fn start(
        id: NodeId,
        db: emdb::AsyncEmdb,
        router: &Router,
        config: Arc<openraft::Config>,
    ) -> std::io::Result<LocalNode> {
        let (log, sm) = crate::open_db(db.clone()).await?;
        let raft = Raft::new(id, config, router.clone(), log, sm.clone())
            .await
            .map_err(std::io::Error::other)?;
        router.add(id, raft.clone());
        Ok(LocalNode { id, raft, sm, db })
    }

    /// Takes the node off the network and stops its Raft; the database is
    /// closed when the last handle goes.
    pub async fn stop(self, router: &Router) {
        router.remove(self.id);
        let _ = self.raft.shutdown().await;
    }
}

/// Writes `request` through whichever node leads now, following
/// `ForwardToLeader` answers and waiting out elections, for up to
/// `patience`. The response once the write is committed (and applied on
/// the leader).
pub async fn write(
    router: &Router,
    request: crate::Request,
    patience: std::time::Duration,
) -> Result<crate::Response, String> {
    request.check()?;
    let deadline = tokio::time::Instant::now() + patience;
    let mut last_err = String::from("no node on the network");
    let mut hint: Option<NodeId> = None;
    while tokio::time::Instant::now() < deadline {
        let ids: Vec<NodeId> = router.lock().keys().copied().collect();
        let order: Vec<NodeId> = hint.into_iter().chain(ids).collect();
        hint = None;
        for id in order {
            let Some(raft) = router.get(id) else { continue };
            match raft.client_write(request.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(e) => {
                    last_err = e.to_string();
                    if let Some(f) = e.forward_to_leader() {
                        hint = f.leader_id;
                        break;
                    }
                }
            }
        }
        if hint.is_none() {
            // An election is running: wait a little before asking again.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Err(last_err)
}
