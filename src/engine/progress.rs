//! What a long maintenance call (compaction, a backup, a checkpoint) has
//! done so far, for `Emdb::maintenance_progress` (the CLI's progress bars).
//!
//! One call is tracked at a time: the first to begin owns the tracker until
//! it ends; a call nested in it (the checkpoint that ends a compaction) or
//! running beside it is not tracked.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Which maintenance call is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaintenanceTask {
    /// `compact()`, or a background compaction run: bytes of the segments
    /// being compacted, scanned.
    Compact,
    /// `backup_to()`: bytes copied.
    Backup,
    /// `checkpoint()` (also run by `close()`): index entries written to
    /// hint files.
    Checkpoint,
}

/// How far the running maintenance call is: `done` of `total` units (bytes
/// or entries, see [`MaintenanceTask`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceProgress {
    /// The call.
    pub task: MaintenanceTask,
    /// Units done.
    pub done: u64,
    /// Units in all (known when the call begins).
    pub total: u64,
}

#[derive(Default)]
pub(crate) struct Tracker {
    /// 0: none; else the task's number plus one.
    task: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
}

/// A tracked call: advances the tracker if it owns it, and frees it when
/// dropped.
pub(crate) struct Tracking<'a> {
    tracker: &'a Tracker,
    owned: bool,
}

const TASKS: [MaintenanceTask; 3] = [
    MaintenanceTask::Compact,
    MaintenanceTask::Backup,
    MaintenanceTask::Checkpoint,
];

impl Tracker {
    /// Begins tracking `task` of `total` units, unless another call is
    /// tracked.
    pub(crate) fn begin(&self, task: MaintenanceTask, total: u64) -> Tracking<'_> {
        let n = TASKS.iter().position(|t| *t == task).unwrap_or(0) as u8 + 1;
        let owned = self
            .task
            .compare_exchange(0, n, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if owned {
            self.done.store(0, Ordering::Release);
            self.total.store(total, Ordering::Release);
        }
        Tracking {
            tracker: self,
            owned,
        }
    }

    pub(crate) fn get(&self) -> Option<MaintenanceProgress> {
        let n = self.task.load(Ordering::Acquire);
        let task = *TASKS.get((n as usize).checked_sub(1)?)?;
        let total = self.total.load(Ordering::Acquire);
        Some(MaintenanceProgress {
            task,
            done: self.done.load(Ordering::Acquire).min(total),
            total,
        })
    }
}

impl Tracking<'_> {
    /// `n` more units done.
    pub(crate) fn add(&self, n: u64) {
        if self.owned {
            self.tracker.done.fetch_add(n, Ordering::AcqRel);
        }
    }
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        if self.owned {
            self.tracker.total.store(0, Ordering::Release);
            self.tracker.done.store(0, Ordering::Release);
            self.tracker.task.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_is_tracked_at_a_time() {
        let t = Tracker::default();
        assert_eq!(t.get(), None);
        {
            let outer = t.begin(MaintenanceTask::Compact, 100);
            outer.add(30);
            {
                // Nested: not tracked, and its progress is not counted.
                let inner = t.begin(MaintenanceTask::Checkpoint, 5);
                inner.add(5);
            }
            let p = t.get().unwrap();
            assert_eq!(
                (p.task, p.done, p.total),
                (MaintenanceTask::Compact, 30, 100)
            );
            outer.add(500);
            assert_eq!(t.get().unwrap().done, 100, "never past the total");
        }
        assert_eq!(t.get(), None);
        let b = t.begin(MaintenanceTask::Backup, 7);
        b.add(1);
        assert_eq!(t.get().unwrap().task, MaintenanceTask::Backup);
        assert_eq!(t.get().unwrap().done, 1);
    }
}
