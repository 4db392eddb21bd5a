//! A small TCP network for the `raft_kv` example: each node listens on an
//! address of its own (`BasicNode::addr`, say `127.0.0.1:21001`), and
//! every message is a 4-byte big-endian length and JSON. The same port
//! serves Raft's RPCs and clients' requests (put, get, delete, who leads).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{self, Cursor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, ReadPolicy};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{NodeId, Raft, Request, Response, StateMachine, TypeConfig};

/// Largest message sent or accepted. A snapshot travels whole, as JSON
/// (its bytes as an array of numbers, up to 4 characters a byte), so
/// snapshots of a few tens of MiB at most: this transport is the example's.
const MAX_MESSAGE: usize = 256 << 20;

/// What a node is asked.
#[derive(Serialize, Deserialize)]
enum Ask {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: VoteOf<TypeConfig>,
        meta: SnapshotMetaOf<TypeConfig>,
        data: Vec<u8>,
    },
    Write(Request),
    Get(String),
    Leader,
    /// Initializes a cluster of these members.
    Init(Vec<(NodeId, String)>),
    /// Adds a learner and waits until it has caught up.
    AddLearner(NodeId, String),
    /// Makes these nodes the voters.
    ChangeMembership(Vec<NodeId>),
    /// This node's last applied log index.
    Applied,
    /// This node's whole map, as applied here (not a linearizable read).
    Dump,
}

/// A client request's failure.
#[derive(Debug, Serialize, Deserialize)]
pub enum ClientError {
    /// Not the leader; the leader, if this node knows it.
    NotLeader(Option<NodeId>),
    /// Anything else, as text.
    Failed(String),
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Append(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
    Write(Result<Response, ClientError>),
    Get(Result<Option<String>, ClientError>),
    Leader(Option<NodeId>),
    Admin(Result<(), ClientError>),
    Applied(Option<u64>),
    Dump(Result<Vec<(String, String)>, String>),
}

async fn send<T: Serialize>(s: &mut TcpStream, msg: &T) -> io::Result<()> {
    let b = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if b.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message of {} bytes is over {MAX_MESSAGE}", b.len()),
        ));
    }
    s.write_all(&(b.len() as u32).to_be_bytes()).await?;
    s.write_all(&b).await
}

async fn recv<T: serde::de::DeserializeOwned>(s: &mut TcpStream) -> io::Result<T> {
    let n = s.read_u32().await? as usize;
    if n > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).await?;
    serde_json::from_slice(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// How long a client request may take, connection included.
const CLIENT_TTL: Duration = Duration::from_secs(10);

/// One request and its answer on a new connection, within `ttl`.
async fn call(addr: &str, ask: &Ask, ttl: Duration) -> io::Result<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        send(&mut s, ask).await?;
        recv(&mut s).await
    };
    tokio::time::timeout(ttl, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{addr}: no answer in {ttl:?}"),
        )
    })?
}

/// The network: connections made from `BasicNode::addr`.
#[derive(Clone, Default)]
pub struct Network;

/// A connection to one node.
pub struct Connection {
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, _target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            addr: node.addr.clone(),
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::from_string(e.to_string())
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match call(&self.addr, &Ask::Append(rpc), option.soft_ttl())
            .await
            .map_err(unreachable)?
        {
            Answer::Append(r) => r.map_err(|e| unreachable(e).into()),
            _ => Err(unreachable("a wrong answer").into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match call(&self.addr, &Ask::Vote(rpc), option.soft_ttl())
            .await
            .map_err(unreachable)?
        {
            Answer::Vote(r) => r.map_err(|e| unreachable(e).into()),
            _ => Err(unreachable("a wrong answer").into()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Cursor<Vec<u8>>>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ask = Ask::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // A whole snapshot: more time than an append gets.
        let ttl = option.hard_ttl().max(Duration::from_secs(60));
        match call(&self.addr, &ask, ttl).await.map_err(unreachable)? {
            Answer::Snapshot(r) => r.map_err(|e| unreachable(e).into()),
            _ => Err(unreachable("a wrong answer").into()),
        }
    }
}

/// A node serving on TCP.
pub struct TcpNode {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Its Raft handle.
    pub raft: Raft,
    server: tokio::task::JoinHandle<()>,
}

impl TcpNode {
    /// Opens (or reopens) the database at `path`, starts node `id` and
    /// serves on `addr`.
    pub async fn start(
        id: NodeId,
        addr: &str,
        path: &Path,
        config: Arc<openraft::Config>,
    ) -> io::Result<TcpNode> {
        let (log, sm) = crate::open(path).await?;
        let raft = Raft::new(id, config, Network, log, sm.clone())
            .await
            .map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let served = (raft.clone(), sm);
        let server = tokio::spawn(async move {
            // The connections' tasks end with this one (stop aborts it).
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let (raft, sm) = served.clone();
                conns.spawn(async move {
                    let _ = s.set_nodelay(true);
                    while let Ok(ask) = recv::<Ask>(&mut s).await {
                        let answer = serve(&raft, &sm, ask).await;
                        if send(&mut s, &answer).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(TcpNode {
            id,
            addr: addr.to_string(),
            raft,
            server,
        })
    }

    /// Stops serving (the listener and every connection) and stops Raft;
    /// the database closes when its last handle goes.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        let _ = self.raft.shutdown().await;
    }
}

async fn serve(raft: &Raft, sm: &StateMachine, ask: Ask) -> Answer {
    match ask {
        Ask::Append(r) => Answer::Append(raft.append_entries(r).await.map_err(|e| e.to_string())),
        Ask::Vote(r) => Answer::Vote(raft.vote(r).await.map_err(|e| e.to_string())),
        Ask::Snapshot { vote, meta, data } => {
            let snapshot = SnapshotOf::<TypeConfig, Cursor<Vec<u8>>> {
                meta,
                snapshot: Cursor::new(data),
            };
            Answer::Snapshot(
                raft.install_full_snapshot(vote, snapshot)
                    .await
                    .map_err(|e| e.to_string()),
            )
        }
        Ask::Write(req) if req.check().is_err() => Answer::Write(Err(ClientError::Failed(
            req.check().err().unwrap_or_default(),
        ))),
        Ask::Write(req) => Answer::Write(match raft.client_write(req).await {
            Ok(r) => Ok(r.data),
            Err(e) => Err(match e.forward_to_leader() {
                Some(f) => ClientError::NotLeader(f.leader_id),
                None => ClientError::Failed(e.to_string()),
            }),
        }),
        Ask::Get(key) => Answer::Get(
            match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                // A linearizable read: confirmed leader, and applied up to
                // what was committed when the read began.
                Ok(_) => sm
                    .get(&key)
                    .await
                    .map_err(|e| ClientError::Failed(e.to_string())),
                Err(e) => Err(match e.forward_to_leader() {
                    Some(f) => ClientError::NotLeader(f.leader_id),
                    None => ClientError::Failed(e.to_string()),
                }),
            },
        ),
        Ask::Leader => Answer::Leader(raft.current_leader().await),
        Ask::Init(members) => {
            let members: BTreeMap<NodeId, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode { addr }))
                .collect();
            Answer::Admin(
                raft.initialize(members)
                    .await
                    .map_err(|e| ClientError::Failed(e.to_string())),
            )
        }
        Ask::AddLearner(id, addr) => Answer::Admin(
            raft.add_learner(id, BasicNode { addr }, true)
                .await
                .map(|_| ())
                .map_err(|e| match e.forward_to_leader() {
                    Some(f) => ClientError::NotLeader(f.leader_id),
                    None => ClientError::Failed(e.to_string()),
                }),
        ),
        Ask::ChangeMembership(ids) => Answer::Admin(
            raft.change_membership(
                ids.into_iter().collect::<std::collections::BTreeSet<_>>(),
                false,
            )
            .await
            .map(|_| ())
            .map_err(|e| match e.forward_to_leader() {
                Some(f) => ClientError::NotLeader(f.leader_id),
                None => ClientError::Failed(e.to_string()),
            }),
        ),
        Ask::Applied => {
            let m = raft
                .wait(Some(Duration::from_secs(1)))
                .metrics(|_| true, "now")
                .await;
            Answer::Applied(m.ok().and_then(|m| m.last_applied.map(|l| l.index())))
        }
        Ask::Dump => Answer::Dump(sm.dump().await.map_err(|e| e.to_string())),
    }
}

/// A client of the cluster: sends each request to the leader, following
/// "not the leader" answers and trying every node while an election runs.
pub struct Client {
    nodes: BTreeMap<NodeId, String>,
    patience: Duration,
}

impl Client {
    /// A client of the nodes at these addresses.
    pub fn new(nodes: BTreeMap<NodeId, String>, patience: Duration) -> Client {
        Client { nodes, patience }
    }

    async fn ask(&self, ask: &Ask) -> Result<Answer, String> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut last = String::from("no node answered");
        let mut hint = None;
        while tokio::time::Instant::now() < deadline {
            let order: Vec<NodeId> = hint.into_iter().chain(self.nodes.keys().copied()).collect();
            hint = None;
            for id in order {
                let answer = match call(&self.nodes[&id], ask, CLIENT_TTL).await {
                    Ok(a) => a,
                    Err(e) => {
                        last = format!("node {id}: {e}");
                        continue;
                    }
                };
                match &answer {
                    Answer::Write(Err(ClientError::NotLeader(l)))
                    | Answer::Get(Err(ClientError::NotLeader(l)))
                    | Answer::Admin(Err(ClientError::NotLeader(l))) => {
                        hint = *l;
                        last = format!("node {id} is not the leader");
                        if hint.is_some() {
                            break;
                        }
                    }
                    Answer::Write(Err(ClientError::Failed(e)))
                    | Answer::Get(Err(ClientError::Failed(e)))
                    | Answer::Admin(Err(ClientError::Failed(e))) => {
                        last = format!("node {id}: {e}")
                    }
                    _ => return Ok(answer),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// `key` = `value`, once committed.
    pub async fn put(&self, key: &str, value: &str) -> Result<(), String> {
        let req = Request::Set {
            key: key.into(),
            value: value.into(),
        };
        match self.ask(&Ask::Write(req)).await? {
            Answer::Write(Ok(_)) => Ok(()),
            _ => Err("a wrong answer".into()),
        }
    }

    /// Removes `key`, once committed; the value it had.
    pub async fn delete(&self, key: &str) -> Result<Option<String>, String> {
        match self
            .ask(&Ask::Write(Request::Delete { key: key.into() }))
            .await?
        {
            Answer::Write(Ok(r)) => Ok(r.value),
            _ => Err("a wrong answer".into()),
        }
    }

    /// The value of `key`, read linearizably on the leader.
    pub async fn get(&self, key: &str) -> Result<Option<String>, String> {
        match self.ask(&Ask::Get(key.into())).await? {
            Answer::Get(Ok(v)) => Ok(v),
            _ => Err("a wrong answer".into()),
        }
    }

    /// Initializes the cluster on node `id` with `members` (id, address).
    pub async fn init(&self, id: NodeId, members: Vec<(NodeId, String)>) -> Result<(), String> {
        let addr = self.nodes.get(&id).ok_or("no such node")?;
        match call(addr, &Ask::Init(members), CLIENT_TTL).await {
            Ok(Answer::Admin(Ok(()))) => Ok(()),
            Ok(Answer::Admin(Err(e))) => Err(format!("{e:?}")),
            Ok(_) => Err("a wrong answer".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Adds node `id` at `addr` as a learner; returns once it caught up.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), String> {
        match self.ask(&Ask::AddLearner(id, addr.into())).await? {
            Answer::Admin(Ok(())) => Ok(()),
            _ => Err("a wrong answer".into()),
        }
    }

    /// Makes `voters` the cluster's voters.
    pub async fn change_membership(&self, voters: Vec<NodeId>) -> Result<(), String> {
        match self.ask(&Ask::ChangeMembership(voters)).await? {
            Answer::Admin(Ok(())) => Ok(()),
            _ => Err("a wrong answer".into()),
        }
    }

    /// Node `id`'s last applied log index.
    pub async fn applied(&self, id: NodeId) -> Option<u64> {
        match call(self.nodes.get(&id)?, &Ask::Applied, CLIENT_TTL).await {
            Ok(Answer::Applied(a)) => a,
            _ => None,
        }
    }

    /// Node `id`'s whole map as applied there.
    pub async fn dump(&self, id: NodeId) -> Result<Vec<(String, String)>, String> {
        let addr = self.nodes.get(&id).ok_or("no such node")?;
        match call(addr, &Ask::Dump, CLIENT_TTL)
            .await
            .map_err(|e| e.to_string())?
        {
            Answer::Dump(r) => r,
            _ => Err("a wrong answer".into()),
        }
    }

    /// Which node node `id` takes for the leader.
    pub async fn leader_seen_by(&self, id: NodeId) -> Option<NodeId> {
        match call(self.nodes.get(&id)?, &Ask::Leader, CLIENT_TTL).await {
            Ok(Answer::Leader(l)) => l,
            _ => None,
        }
    }
}
