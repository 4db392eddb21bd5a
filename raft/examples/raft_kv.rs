//! A replicated key-value service: three emdb-backed openraft nodes, each a
//! process of its own serving TCP on 127.0.0.1, and a client that puts,
//! gets and deletes through whichever node leads.
//!
//! ```sh
//! cargo run --release -p emdb-raft --example raft_kv            # the failover run below
//! cargo run --release -p emdb-raft --example raft_kv -- node 1 DIR 127.0.0.1:21001   # one node
//! ```
//!
//! Without arguments it runs the whole story and checks it: start three
//! nodes, form the cluster (node 1 alone, then 2 and 3 added as learners
//! and made voters), write, read and delete; `kill -9` the leader; show a
//! new leader taking writes; restart the old leader's process on its
//! directory; show it catching up; and check that every write the cluster
//! acknowledged is on every node. It exits non-zero if anything is lost.
//! The ports are three the kernel has free; `EMDB_RAFT_PORT=P` uses P, P+1
//! and P+2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use emdb_raft::tcp::{Client, TcpNode};
use emdb_raft::NodeId;

fn config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Default::default()
    };
    Arc::new(c.validate().expect("a valid Raft config"))
}

/// A node process: serves until killed.
async fn node(id: NodeId, dir: &Path, addr: &str) {
    let _node = TcpNode::start(id, addr, dir, config())
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"));
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn spawn(id: NodeId, dir: &Path, addr: &str) -> Child {
    Command::new(std::env::current_exe().expect("this program's path"))
        .args(["node", &id.to_string()])
        .arg(dir)
        .arg(addr)
        .spawn()
        .expect("start a node process")
}

fn step(t0: Instant, what: &str) {
    println!("[{:6.2} s] {what}", t0.elapsed().as_secs_f64());
}

async fn run() -> Result<(), String> {
    let t0 = Instant::now();
    let ports = ports()?;
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let addrs: BTreeMap<NodeId, String> = (1..=3u64)
        .zip(ports)
        .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
        .collect();
    let dir = |id: NodeId| -> PathBuf { root.path().join(format!("node-{id}")) };
    let mut procs = Procs(
        addrs
            .iter()
            .map(|(id, addr)| (*id, spawn(*id, &dir(*id), addr)))
            .collect(),
    );
    let client = Client::new(addrs.clone(), Duration::from_secs(30));
    step(t0, "started 3 node processes on 127.0.0.1");

    // Membership: node 1 alone, then 2 and 3 as learners, then voters.
    // (Node 1 answers once its process has started.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = client.init(1, vec![(1, addrs[&1].clone())]).await {
        if Instant::now() > deadline {
            return Err(format!("node 1 could not be initialized: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [2, 3] {
        client.add_learner(id, &addrs[&id]).await?;
    }
    client.change_membership(vec![1, 2, 3]).await?;
    step(
        t0,
        "cluster formed: node 1 initialized, 2 and 3 added as learners, all three voters",
    );

    // Writes, reads, deletes; `model` is what the cluster acknowledged.
    let mut model = BTreeMap::new();
    for i in 0..200 {
        let (k, v) = (format!("user:{i:04}"), format!("name {i}"));
        client.put(&k, &v).await?;
        model.insert(k, v);
    }
    for i in (0..200).step_by(20) {
        let k = format!("user:{i:04}");
        let old = client.delete(&k).await?;
        if old.as_deref() != model.remove(&k).as_deref() {
            return Err(format!("delete {k} returned {old:?}"));
        }
    }
    let got = client.get("user:0001").await?;
    step(
        t0,
        &format!("200 puts and 10 deletes acknowledged; get user:0001 = {got:?}"),
    );
    if got.as_deref() != Some("name 1") {
        return Err("a read missed an acknowledged write".into());
    }

    // Kill the leader.
    let old = client.leader_seen_by(1).await.ok_or("no leader is known")?;
    procs
        .0
        .get_mut(&old)
        .ok_or("no such process")?
        .kill()
        .map_err(|e| e.to_string())?;
    let _ = procs.0.get_mut(&old).map(|p| p.wait());
    step(t0, &format!("kill -9 of the leader, node {old}"));

    // A new leader takes writes.
    let others: Vec<NodeId> = addrs.keys().copied().filter(|i| *i != old).collect();
    let new = loop {
        let mut seen = None;
        for id in &others {
            if let Some(l) = client.leader_seen_by(*id).await.filter(|l| *l != old) {
                seen = Some(l);
            }
        }
        if let Some(l) = seen {
            break l;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err("no new leader".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for i in 200..400 {
        let (k, v) = (format!("user:{i:04}"), format!("name {i}"));
        client.put(&k, &v).await?;
        model.insert(k, v);
    }
    step(
        t0,
        &format!("node {new} leads now; it acknowledged 200 more puts"),
    );

    // The old leader comes back on its directory and catches up.
    procs.0.insert(old, spawn(old, &dir(old), &addrs[&old]));
    step(t0, &format!("node {old} restarted on its own directory"));
    let target = client
        .applied(new)
        .await
        .ok_or("the leader's applied index")?;
    for id in addrs.keys().copied() {
        loop {
            let applied = client.applied(id).await;
            if applied.is_some_and(|a| a >= target) {
                if id == old {
                    let at = applied.unwrap_or(0);
                    step(
                        t0,
                        &format!("node {old} caught up: applied index {at} (leader at {target})"),
                    );
                }
                break;
            }
            if t0.elapsed() > Duration::from_secs(180) {
                return Err(format!(
                    "node {id} did not catch up (applied {applied:?}, leader {target})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every acknowledged write on every node.
    for id in addrs.keys() {
        let dump: BTreeMap<String, String> = client.dump(*id).await?.into_iter().collect();
        if dump != model {
            let missing = model.keys().filter(|k| !dump.contains_key(*k)).count();
            return Err(format!(
                "node {id} differs from what the cluster acknowledged ({missing} keys missing)"
            ));
        }
    }
    step(
        t0,
        &format!(
            "no acknowledged write lost: all {} keys, and the deletes, on every node",
            model.len()
        ),
    );
    drop(procs);
    Ok(())
}

/// The node processes, killed when this goes (on success or failure).
struct Procs(BTreeMap<NodeId, Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in self.0.values_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Three ports: from `EMDB_RAFT_PORT` on, or three the kernel has free now.
fn ports() -> Result<Vec<u16>, String> {
    let base = std::env::var("EMDB_RAFT_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    if let Some(base) = base {
        return Ok(vec![base, base + 1, base + 2]);
    }
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if args.first().map(String::as_str) == Some("node") {
        let id: NodeId = args
            .get(1)
            .and_then(|s| s.parse().ok())
            .expect("node ID DIR ADDR");
        let dir = PathBuf::from(args.get(2).expect("node ID DIR ADDR"));
        let addr = args.get(3).expect("node ID DIR ADDR").clone();
        // Die with the process that started this one.
        // SAFETY: prctl with PR_SET_PDEATHSIG only sets a signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        rt.block_on(node(id, &dir, &addr));
        return;
    }
    if let Err(e) = rt.block_on(run()) {
        eprintln!("raft_kv: {e}");
        std::process::exit(1);
    }
}
