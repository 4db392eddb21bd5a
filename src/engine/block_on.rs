//! Drives a future to completion on the calling thread: the blocking API is
//! this plus the async core, nothing else.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    static WAKER: Waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
}

pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    // Most writes complete without waiting: poll once with a no-op waker,
    // which costs no reference count. A future that is not ready registers
    // whatever waker it was given, so it is polled again below with the
    // thread's real one before this thread parks.
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    let waker = WAKER
        .try_with(|w| w.clone())
        .unwrap_or_else(|_| Waker::from(Arc::new(ThreadWaker(thread::current()))));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // A spurious wake-up only costs another poll.
        thread::park();
    }
}
