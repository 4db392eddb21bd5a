//! The futures callers wait on: room in a shard's tail buffer and a
//! prepared next segment (durability is waited for in `commit.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use parking_lot::MutexGuard;

use super::shard::{Inner, Shard};
use crate::error::Result;

impl Shard {
    /// Waits until the shard can take `need` more unwritten bytes, and
    /// until the next segment is prepared if those bytes rotate the active
    /// one, then returns its lock. A caller never waits under the lock:
    /// not for the core, nor for a file being created.
    pub(crate) fn lock_for_append(&self, need: usize) -> LockForAppend<'_> {
        LockForAppend {
            shard: self,
            need: need as u64,
        }
    }
}

/// Future of [`Shard::lock_for_append`].
pub(crate) struct LockForAppend<'a> {
    pub(super) shard: &'a Shard,
    pub(super) need: u64,
}

impl<'a> Future for LockForAppend<'a> {
    type Output = Result<MutexGuard<'a, Inner>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shard = self.shard;
        let mut g = shard.lock();
        if let Err(e) = shard.check_poison(&g) {
            return Poll::Ready(Err(e));
        }
        let backlog = g.lpos - shard.written_lpos.load(Ordering::Acquire);
        let limit = shard.ctx.config.tail_buffer_bytes as u64;
        // A small backlog admits one append whatever its size, so a batch
        // part larger than the buffer is not starved by steady writers; the
        // backlog then overshoots by at most that part plus limit / 8.
        if backlog + self.need <= limit || backlog <= limit / 8 {
            if Shard::needs_rotation(&g, self.need) {
                match shard.poll_next_segment(&mut g, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            return Poll::Ready(Ok(g));
        }
        if register(&g.space_waiters, cx) {
            g.space_waiters.push(cx.waker().clone());
        }
        drop(g);
        shard.wake_core();
        Poll::Pending
    }
}

/// Whether a pending future should add its waker to `list`: not when it
/// is there already, and never the no-op waker of `block_on`'s first poll
/// (waking it does nothing).
fn register(list: &[Waker], cx: &Context<'_>) -> bool {
    !cx.waker().will_wake(Waker::noop()) && !list.iter().any(|w| w.will_wake(cx.waker()))
}

impl Shard {
    /// Waits until the next segment is prepared (see
    /// [`Shard::poll_next_segment`]).
    pub(crate) fn next_segment(&self) -> NextSegment<'_> {
        NextSegment { shard: self }
    }
}

/// Future of [`Shard::next_segment`].
pub(crate) struct NextSegment<'a> {
    shard: &'a Shard,
}

impl Future for NextSegment<'_> {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let mut g = self.shard.lock();
        if let Err(e) = self.shard.check_poison(&g) {
            return Poll::Ready(Err(e));
        }
        self.shard.poll_next_segment(&mut g, cx)
    }
}
