//! Work that must not run on a caller's polling thread: opening (recovery),
//! checkpoints, compaction, backups and closing do file I/O for
//! milliseconds to seconds. The async API hands each such call to a thread
//! of its own and awaits a [`Handoff`]; the blocking API runs them inline.
//!
//! Closing in the background: the last `AsyncEmdb` handle dropped without
//! `close()` must not block the task that drops it, so its engine closes on
//! a closer thread. Until that thread is done the database is listed in
//! [`CLOSING`]; an open of the same directory in this process waits for it
//! (instead of failing with `Error::LockBusy`), and the process waits for
//! every closer at exit, so nothing accepted is left unwritten.

use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};

#[cfg(feature = "async")]
pub(crate) use background::{close_in_background, offload};

/// Databases (by directory) whose engine a closer thread is closing.
static CLOSING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CLOSED: Condvar = Condvar::new();

fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Waits until no closer thread of this process is closing the database at
/// `path`.
pub(crate) fn wait_for_close(path: &Path) {
    let p = key(path);
    let mut list = CLOSING.lock();
    while list.contains(&p) {
        CLOSED.wait(&mut list);
    }
}

/// The async-only half: offloading and closing in the background.
#[cfg(feature = "async")]
mod background {
    use std::future::Future;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::{Arc, Once};
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::{key, CLOSED, CLOSING};
    use crate::error::{Error, Result};

    static AT_EXIT: Once = Once::new();
    /// How long the process waits at exit for background closes.
    const EXIT_WAIT: Duration = Duration::from_secs(60);

    struct Slot<T> {
        value: Option<Result<T>>,
        waker: Option<Waker>,
    }

    /// The result of work running on a thread of its own. Dropping it does not
    /// stop the work: it runs to completion and its result is discarded.
    pub(crate) struct Handoff<T> {
        slot: Arc<Mutex<Slot<T>>>,
    }

    /// Runs `work` on a new thread named `name`. If no thread can be started
    /// the future resolves to that error.
    pub(crate) fn offload<T, F>(name: &str, work: F) -> Handoff<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            waker: None,
        }));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let value = work();
                let waker = {
                    let mut s = theirs.lock();
                    s.value = Some(value);
                    s.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            });
        if let Err(e) = spawned {
            slot.lock().value = Some(Err(Error::Io(e)));
        }
        Handoff { slot }
    }

    impl<T> Future for Handoff<T> {
        type Output = Result<T>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
            let mut s = self.slot.lock();
            if let Some(v) = s.value.take() {
                return Poll::Ready(v);
            }
            match &s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => s.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        }
    }

    /// An engine being closed, and its entry in [`CLOSING`]: dropping it
    /// closes the engine, then removes the entry, whichever thread drops it.
    struct Closing {
        engine: Option<crate::engine::Engine>,
        path: Option<PathBuf>,
    }

    impl Drop for Closing {
        fn drop(&mut self) {
            drop(self.engine.take());
            if let Some(p) = self.path.take() {
                let mut list = CLOSING.lock();
                if let Some(i) = list.iter().position(|q| *q == p) {
                    list.swap_remove(i);
                }
                CLOSED.notify_all();
            }
        }
    }

    /// Closes `engine` on a closer thread (dropping it writes, syncs,
    /// checkpoints and releases the lock). If no thread can be started, the
    /// failed spawn drops the work, which closes the engine on this thread.
    pub(crate) fn close_in_background(engine: crate::engine::Engine) {
        let path = (!engine.path().as_os_str().is_empty()).then(|| key(engine.path()));
        if let Some(p) = &path {
            AT_EXIT.call_once(|| {
                // SAFETY: registers a plain extern "C" function with no
                // arguments; it only waits on a static condition variable.
                unsafe { libc::atexit(wait_for_closers) };
            });
            CLOSING.lock().push(p.clone());
        }
        let closing = Closing {
            engine: Some(engine),
            path,
        };
        let _ = std::thread::Builder::new()
            .name("emdb-close".into())
            .spawn(move || drop(closing));
    }

    extern "C" fn wait_for_closers() {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        let mut list = CLOSING.lock();
        while !list.is_empty() {
            if CLOSED.wait_until(&mut list, deadline).timed_out() {
                break;
            }
        }
    }
}
