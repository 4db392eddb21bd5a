//! What the log store repairs at open, from states a crash can leave:
//! entries after a gap (a later append durable, an earlier one not: never
//! both reported durable) are removed, and a purge cut short is finished.

use std::path::Path;

use emdb::AsyncEmdb;
use emdb_raft::{LogStore, TypeConfig, LOG_NS, META_NS};
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::{blank_ent, log_id};
use openraft::RaftLogReader;

async fn db(path: &Path) -> AsyncEmdb {
    AsyncEmdb::builder()
        .path(path)
        .enable_range_scans(true)
        .build_async()
        .await
        .unwrap()
}

/// Writes entries straight into the log namespace, as a crash leaves them.
async fn put_entries(db: &AsyncEmdb, indexes: impl IntoIterator<Item = u64>) {
    let log = db.namespace(LOG_NS).await.unwrap();
    for i in indexes {
        let e = blank_ent::<TypeConfig>(1, 1, i);
        log.insert(i.to_be_bytes().to_vec(), serde_json::to_vec(&e).unwrap())
            .await
            .unwrap();
    }
    db.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_after_a_gap_are_removed_at_open() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path()).await;
    put_entries(&db, (0..=5).chain(7..=9)).await;
    let mut store = LogStore::<TypeConfig>::open(db.clone()).await.unwrap();
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_log_id, Some(log_id::<TypeConfig>(1, 1, 5)));
    let got = store.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(got.len(), 6);
    // An append goes on from there.
    store
        .append([blank_ent::<TypeConfig>(1, 1, 6)], IOFlushed::noop())
        .await
        .unwrap();
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id::<TypeConfig>(1, 1, 6))
    );
}

/// A gap at the start: the log must go on right after the purge point (or
/// start at index 0). Entries that follow a missing start are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_start_removes_what_follows() {
    for purged in [None, Some(2u64)] {
        let d = tempfile::tempdir().unwrap();
        let db = db(d.path()).await;
        put_entries(&db, 5..=8).await;
        if let Some(p) = purged {
            let meta = db.namespace(META_NS).await.unwrap();
            meta.insert(
                b"last_purged".to_vec(),
                serde_json::to_vec(&log_id::<TypeConfig>(1, 1, p)).unwrap(),
            )
            .await
            .unwrap();
        }
        let mut store = LogStore::<TypeConfig>::open(db.clone()).await.unwrap();
        assert!(
            store.try_get_log_entries(0..100).await.unwrap().is_empty(),
            "purged {purged:?}"
        );
        let st = store.get_log_state().await.unwrap();
        assert_eq!(
            st.last_log_id.map(|l| l.index),
            purged,
            "the log ends at the purge point"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_cut_short_is_finished_at_open() {
    let d = tempfile::tempdir().unwrap();
    let db = db(d.path()).await;
    put_entries(&db, 3..=10).await;
    // The purge point was recorded up to 6; entries 3 to 6 are still there.
    let meta = db.namespace(META_NS).await.unwrap();
    meta.insert(
        b"last_purged".to_vec(),
        serde_json::to_vec(&log_id::<TypeConfig>(1, 1, 6)).unwrap(),
    )
    .await
    .unwrap();
    let mut store = LogStore::<TypeConfig>::open(db.clone()).await.unwrap();
    let got = store.try_get_log_entries(0..100).await.unwrap();
    let idx: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
    assert_eq!(idx, vec![7, 8, 9, 10]);
    let st = store.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(log_id::<TypeConfig>(1, 1, 6)));
    assert_eq!(st.last_log_id, Some(log_id::<TypeConfig>(1, 1, 10)));
}

/// The vote is durable when `save_vote` returns: the power goes right
/// after, and the disk image holding only what was durable has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vote_survives_a_power_cut() {
    let d = tempfile::tempdir().unwrap();
    let live = d.path().join("node");
    let plan = emdb::FaultPlan::new();
    plan.track_durable();
    {
        let db = AsyncEmdb::builder()
            .path(&live)
            .enable_range_scans(true)
            .fault_plan(plan.clone())
            .build_async()
            .await
            .unwrap();
        let (mut log, _sm) = emdb_raft::open_db(db).await.unwrap();
        log.save_vote(&openraft::impls::Vote::new(3, 2))
            .await
            .unwrap();
        plan.power_off();
    }
    let image = d.path().join("after");
    plan.durable_image(&live, &image, emdb::ImagePolicy::DurableOnly, 1)
        .unwrap();
    let (mut log, _sm) = emdb_raft::open(&image).await.unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::impls::Vote::new(3, 2))
    );
}
