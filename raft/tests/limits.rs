//! A committed command over the limits must not stop the state machine: it
//! is applied as a no-op answered with its error, and the next command
//! goes through. The networks' write paths refuse it before it is proposed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use emdb::AsyncEmdb;
use emdb_raft::local::{write, LocalNode, Router};
use emdb_raft::{Request, MAX_KEY};
use openraft::BasicNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_command_is_a_no_op_not_a_halt() {
    let d = tempfile::tempdir().unwrap();
    let router = Router::new();
    let db = AsyncEmdb::builder()
        .path(d.path())
        .enable_range_scans(true)
        .build_async()
        .await
        .unwrap();
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let node = LocalNode::start(1, db, &router, config).await.unwrap();
    node.raft
        .initialize(BTreeMap::from([(1, BasicNode::default())]))
        .await
        .unwrap();
    node.raft
        .wait(Some(Duration::from_secs(30)))
        .current_leader(1, "leader")
        .await
        .unwrap();
    let huge = Request::Set {
        key: "k".repeat(MAX_KEY + 1),
        value: "v".into(),
    };
    // Refused before it is proposed.
    assert!(write(&router, huge.clone(), Duration::from_secs(5))
        .await
        .is_err());
    // A value under MAX_VALUE of control characters is over MAX_ENCODED
    // as JSON (six bytes each): refused too.
    let escaped = Request::Set {
        key: "k".into(),
        value: "\u{1}".repeat(emdb_raft::MAX_VALUE - 1),
    };
    assert!(escaped.check().is_err());
    assert!(write(&router, escaped, Duration::from_secs(5))
        .await
        .is_err());
    // Proposed anyway (straight to Raft): committed, applied as a no-op.
    let r = node.raft.client_write(huge).await.unwrap();
    assert!(r.data.error.is_some(), "{:?}", r.data);
    assert_eq!(r.data.value, None);
    // The state machine goes on.
    let ok = Request::Set {
        key: "after".into(),
        value: "fine".into(),
    };
    let r = write(&router, ok, Duration::from_secs(30)).await.unwrap();
    assert_eq!(r.value.as_deref(), Some("fine"));
    assert_eq!(node.sm.get("after").await.unwrap().as_deref(), Some("fine"));
    node.stop(&router).await;
}
