//! An in-process network: every node's `Raft` handle in one router; an RPC
//! is a direct call of the target's handler. A node can be taken off the
//! router (a crash, or a partition) and put back.
