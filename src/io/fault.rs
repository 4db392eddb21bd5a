//! A fault-injecting wrapper around a real backend (cargo feature
//! `fault-injection`), for tests: fail the Nth write or sync of a database
//! with a chosen errno, and count the syncs issued after a failure.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Io, Op};
use crate::builder::IoBackend;

/// Faults to inject into a database's I/O. Cheap to clone; every clone
/// controls the same plan, so a test keeps one and passes one to
/// `EmdbBuilder::fault_plan`. Counts cover all shard cores and the device
/// flusher of that database.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    state: Arc<Mutex<PlanState>>,
}

#[derive(Debug, Default)]
struct PlanState {
    /// (ops of this kind to let through first, errno).
    fail_write: Option<(u64, i32)>,
    fail_sync: Option<(u64, i32)>,
    writes: u64,
    syncs: u64,
    faults_injected: u64,
    syncs_after_fault: u64,
}

impl FaultPlan {
    /// An empty plan: nothing fails.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets `after` more writes through, then fails the next one with
    /// `errno` (for example `libc::EIO` or `libc::ENOSPC`). One-shot.
    pub fn fail_write(&self, after: u64, errno: i32) {
        self.lock().fail_write = Some((after, errno));
    }

    /// Lets `after` more syncs (fdatasync or sync_file_range) through, then
    /// fails the next one with `errno`. One-shot.
    pub fn fail_sync(&self, after: u64, errno: i32) {
        self.lock().fail_sync = Some((after, errno));
    }

    /// Writes issued so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// Syncs issued so far (the failed ones included).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Faults injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.lock().faults_injected
    }

    /// Syncs issued after the first injected fault.
    pub fn syncs_after_fault(&self) -> u64 {
        self.lock().syncs_after_fault
    }

    /// Index of the first op of `ops` to fail, and its errno.
    fn decide(&self, ops: &[Op<'_>]) -> Option<(usize, i32)> {
        let mut st = self.lock();
        for (i, op) in ops.iter().enumerate() {
            let is_sync = !matches!(op, Op::Write { .. });
            if is_sync {
                st.syncs += 1;
                if st.faults_injected > 0 {
                    st.syncs_after_fault += 1;
                }
            } else {
                st.writes += 1;
            }
            let slot = if is_sync {
                &mut st.fail_sync
            } else {
                &mut st.fail_write
            };
            if let Some((after, errno)) = *slot {
                if after == 0 {
                    *slot = None;
                    st.faults_injected += 1;
                    return Some((i, errno));
                }
                *slot = Some((after - 1, errno));
            }
        }
        None
    }
}

pub(crate) struct FaultIo {
    pub inner: Box<dyn Io>,
    pub plan: FaultPlan,
}

impl FaultIo {
    fn run_with(&mut self, ops: &[Op<'_>], latency: bool) -> io::Result<()> {
        let (upto, fault) = match self.plan.decide(ops) {
            Some((i, errno)) => (i, Some(errno)),
            None => (ops.len(), None),
        };
        if upto > 0 {
            if latency {
                self.inner.run_latency_bound(&ops[..upto])?;
            } else {
                self.inner.run(&ops[..upto])?;
            }
        }
        match fault {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

impl Io for FaultIo {
    fn kind(&self) -> IoBackend {
        self.inner.kind()
    }

    fn run(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run_with(ops, false)
    }

    fn run_latency_bound(&mut self, ops: &[Op<'_>]) -> io::Result<()> {
        self.run_with(ops, true)
    }
}
