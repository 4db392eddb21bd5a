//! openraft's own storage test suite (`openraft::testing::log::Suite`) on
//! emdb: every test gets a fresh database in a directory of its own.

use emdb_raft::{LogStore, StateMachine, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore<TypeConfig>, StateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, sm) = emdb_raft::open(dir.path().join("node"))
            .await
            .expect("open the node's database");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("the suite passes");
}
