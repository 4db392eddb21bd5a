//! Three in-process nodes take writes while the leader's disk loses power
//! (emdb's fault plan: every later write and sync fails, and the disk
//! keeps only what was durable, with a random share of what was not). The
//! node restarts from that image and catches up. Every write the cluster
//! acknowledged is in every node's state machine, and the three agree.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use emdb::{AsyncEmdb, FaultPlan, ImagePolicy};
use emdb_raft::local::{write, LocalNode, Router};
use emdb_raft::{NodeId, Request};
use openraft::{BasicNode, SnapshotPolicy};

const PATIENCE: Duration = Duration::from_secs(60);

fn config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // Snapshots and purges happen during the test, so a node that
        // comes back may need a snapshot.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(200),
        max_in_snapshot_log_to_keep: 50,
        ..Default::default()
    };
    Arc::new(c.validate().expect("a valid config"))
}

async fn db(path: &Path, plan: Option<FaultPlan>) -> AsyncEmdb {
    let mut b = AsyncEmdb::builder().path(path).enable_range_scans(true);
    if let Some(p) = plan {
        b = b.fault_plan(p);
    }
    b.build_async().await.expect("open a node's database")
}

async fn leader(router: &Router, nodes: &[NodeId]) -> NodeId {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for id in nodes {
            if let Some(r) = router.get(*id) {
                if r.current_leader().await == Some(*id) {
                    return *id;
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the writers have `n` writes acknowledged (`done`); fails
/// after [`PATIENCE`] instead of waiting for ever.
async fn acknowledged(done: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while done.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} writes acknowledged",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Nodes `ids`, each on a database in `root` watched by a fault plan of
/// its own, initialized as one cluster.
async fn cluster(
    root: &Path,
    router: &Router,
    ids: &[NodeId],
) -> (BTreeMap<NodeId, FaultPlan>, BTreeMap<NodeId, LocalNode>) {
    let mut plans = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for &id in ids {
        let plan = FaultPlan::new();
        plan.track_durable();
        let path = root.join(format!("node-{id}"));
        let node = LocalNode::start(id, db(&path, Some(plan.clone())).await, router, config())
            .await
            .unwrap();
        plans.insert(id, plan);
        nodes.insert(id, node);
    }
    let members: BTreeMap<NodeId, BasicNode> =
        ids.iter().map(|id| (*id, BasicNode::default())).collect();
    nodes[&ids[0]].raft.initialize(members).await.unwrap();
    (plans, nodes)
}

/// Waits until every node has applied the leader's whole log, and returns
/// each node's state machine, after checking that it holds every write in
/// `acked`.
async fn caught_up_maps(
    nodes: &BTreeMap<NodeId, LocalNode>,
    leader_id: NodeId,
    acked: &BTreeMap<String, String>,
) -> Vec<BTreeMap<String, String>> {
    let last = nodes[&leader_id]
        .raft
        .wait(Some(PATIENCE))
        .metrics(|_| true, "now")
        .await
        .unwrap()
        .last_log_index;
    let mut maps = Vec::new();
    for node in nodes.values() {
        node.raft
            .wait(Some(PATIENCE))
            .applied_index_at_least(last, "catch up")
            .await
            .unwrap_or_else(|e| panic!("node {} did not catch up: {e}", node.id));
        let dump: BTreeMap<String, String> = node.sm.dump().await.unwrap().into_iter().collect();
        for (k, v) in acked {
            assert_eq!(
                dump.get(k),
                Some(v),
                "node {} lost acknowledged write {k}",
                node.id
            );
        }
        maps.push(dump);
    }
    maps
}

/// Writes keys `prefix-0..n` through the cluster; every key acknowledged.
async fn write_keys(router: &Router, prefix: &str, n: usize, acked: &mut BTreeMap<String, String>) {
    for i in 0..n {
        let (key, value) = (format!("{prefix}-{i:05}"), format!("value {prefix} {i}"));
        let r = write(
            router,
            Request::Set {
                key: key.clone(),
                value: value.clone(),
            },
            PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("write {key}: {e}"));
        assert_eq!(r.value.as_deref(), Some(value.as_str()));
        acked.insert(key, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_loses_power_during_writes_and_catches_up() {
    let root = tempfile::tempdir().unwrap();
    let router = Router::new();
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let (plans, mut nodes) = cluster(root.path(), &router, &ids).await;

    let mut acked = BTreeMap::new();
    // Concurrent writers on the old leader, then its power goes while
    // they write.
    let old = leader(&router, &ids).await;
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (router, done) = (router.clone(), done.clone());
            tokio::spawn(async move {
                let mut mine = BTreeMap::new();
                for i in 0..150 {
                    write_keys(&router, &format!("before-{w}-{i}"), 1, &mut mine).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                mine
            })
        })
        .collect();
    // The power goes while the writers are at it: after 200 of their 600
    // writes were acknowledged.
    acknowledged(&done, 200).await;
    plans[&old].power_off();
    let crashed = nodes.remove(&old).unwrap();
    let crashed_path = root.path().join(format!("node-{old}"));
    crashed.stop(&router).await;
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // The other two elect a leader and take more writes.
    let rest: Vec<NodeId> = ids.iter().copied().filter(|i| *i != old).collect();
    let new = leader(&router, &rest).await;
    assert_ne!(new, old);
    write_keys(&router, "after", 300, &mut acked).await;

    // What the crashed disk held: durable bytes, plus some of the rest.
    let image = root.path().join(format!("node-{old}-restarted"));
    let report = plans[&old]
        .durable_image(&crashed_path, &image, ImagePolicy::Random, 0x5eed)
        .unwrap();
    assert!(!report.directory_lost, "{report:?}");
    eprintln!("the crashed node's disk: {report:?}");
    let back = LocalNode::start(old, db(&image, None).await, &router, config())
        .await
        .expect("the crashed node reopens");
    nodes.insert(old, back);
    write_keys(&router, "rejoined", 50, &mut acked).await;

    // Everyone applies everything the leader has.
    let leader_id = leader(&router, &ids).await;
    let dumps = caught_up_maps(&nodes, leader_id, &acked).await;
    assert_eq!(dumps[0], dumps[1], "state machines differ");
    assert_eq!(dumps[1], dumps[2], "state machines differ");
    assert_eq!(acked.len(), 4 * 150 + 300 + 50);
    for node in nodes.into_values() {
        node.stop(&router).await;
    }
}

/// Every node loses power at once during concurrent writes. Restarted from
/// their disk images (only what was durable on two of them, some of the
/// rest too on the third), they elect a leader, and every write that was
/// acknowledged before the power went is there: an acknowledgement means
/// durable on a majority, so it is in the log of any leader they elect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_loses_power_at_once() {
    let root = tempfile::tempdir().unwrap();
    let router = Router::new();
    let ids: Vec<NodeId> = vec![1, 2, 3];
    let (plans, mut nodes) = cluster(root.path(), &router, &ids).await;
    leader(&router, &ids).await;

    // Writers record what was acknowledged. A write that fails before the
    // power goes (a slow election on a loaded machine outlasts its three
    // seconds) is not acknowledged and the writer goes on; once the power
    // is off, the first failure stops it. A write is also given up after
    // five seconds: one issued as the power goes sometimes never returns
    // (about one run in eight under load; not emdb's flush, which
    // `tests/async_api.rs` shows returning an error after a power cut, but
    // openraft's handling of the failed append). That is not what this
    // test checks, which is that every acknowledged write survives.
    let done = Arc::new(AtomicUsize::new(0));
    let off = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (router, done, off) = (router.clone(), done.clone(), off.clone());
            tokio::spawn(async move {
                let mut mine = BTreeMap::new();
                for i in 0.. {
                    let (key, value) = (format!("w{w}-{i:05}"), format!("value {w} {i}"));
                    let req = Request::Set {
                        key: key.clone(),
                        value: value.clone(),
                    };
                    let sent = write(&router, req, Duration::from_secs(3));
                    match tokio::time::timeout(Duration::from_secs(5), sent).await {
                        Ok(Ok(_)) => {
                            mine.insert(key, value);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ if off.load(Ordering::SeqCst) => break,
                        _ => {}
                    }
                }
                mine
            })
        })
        .collect();
    acknowledged(&done, 300).await;
    off.store(true, Ordering::SeqCst);
    for plan in plans.values() {
        plan.power_off();
    }
    let mut acked = BTreeMap::new();
    for w in writers {
        acked.extend(within("a writer's last write", w).await.unwrap());
    }
    for node in std::mem::take(&mut nodes).into_values() {
        within("a node's stop", node.stop(&router)).await;
    }
    // Restart every node from its disk image.
    for &id in &ids {
        let live = root.path().join(format!("node-{id}"));
        let image = root.path().join(format!("node-{id}-restarted"));
        let policy = if id == 3 {
            ImagePolicy::Random
        } else {
            ImagePolicy::DurableOnly
        };
        let report = plans[&id].durable_image(&live, &image, policy, id).unwrap();
        assert!(!report.directory_lost, "{report:?}");
        let db = within("an open after the power cut", db(&image, None)).await;
        let node = within(
            "a node's start",
            LocalNode::start(id, db, &router, config()),
        )
        .await
        .expect("a node reopens after the power cut");
        nodes.insert(id, node);
    }
    let leader_id = leader(&router, &ids).await;
    // A write through the new leader commits everything before it.
    let mut after = BTreeMap::new();
    write_keys(&router, "after-restart", 1, &mut after).await;
    caught_up_maps(&nodes, leader_id, &acked).await;
    assert!(acked.len() >= 300, "{} writes acknowledged", acked.len());
    for node in nodes.into_values() {
        within("a node's stop", node.stop(&router)).await;
    }
}

/// `f`, or a failure naming `what` after [`PATIENCE`]: a step that hangs
/// fails the test instead of stalling the suite.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took over {PATIENCE:?}"))
}
