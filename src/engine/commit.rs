//! Group commit across shards: one generation at a time serves every
//! waiter that joined it with one device flush, whatever the shard count.
//!
//! A waiter (a `flush()`, a write-through write, a compaction or backup
//! making its writes durable) joins the *open* generation with the log
//! positions it needs per shard, and waits until that generation is done.
//! When no generation runs, the open one starts: each shard that has
//! something below its wanted position becomes a *part*, and its core is
//! woken. Each core writes its part and, if other parts are still pending,
//! puts it on the device with `sync_file_range` (no device flush); the last
//! core to finish issues the generation's only device flush (an fdatasync of
//! its own file, which also covers its own write), marks every part durable
//! and wakes every waiter once. A core that finds itself the only pending
//! part runs write + fdatasync directly. Waiters arriving meanwhile join the
//! next generation, which the finishing core starts; if fewer have joined
//! than the flushers it knows to be active (those it just served plus those
//! already waiting), it first claims the start and waits a little for the
//! woken ones to come back (gathering).
//!
//! There is no thread besides the cores: a caller wakes at most the cores of
//! its shards and is woken once, by whichever core finished last.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use super::shard::Shard;

/// Longest a finishing core waits for the waiters it just woke to join the
/// next generation.
const MAX_GATHER: Duration = Duration::from_micros(500);

/// One shard's part of the running generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Not involved.
    None,
    /// Its core must write up to this log position and report.
    Pending(u64),
    /// Durable up to its target (its core synced its own file).
    Durable,
    /// On the device, durable after the generation's device flush:
    /// (log position, position to claim in a sync marker, user records).
    Stable(u64, u64, u64),
    /// Its core failed: the shard is poisoned.
    Failed,
}

/// What a core learns when it reports its part.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Nothing more to do (other parts are pending, or the generation was
    /// finished here).
    Done,
    /// This core was the last and some parts are only on the device: it
    /// must issue one device flush, then call [`Commit::flushed`].
    FlushDevice,
}

/// What a core must do for the running generation.
#[derive(Clone, Copy, Debug)]
pub(super) struct PartPlan {
    pub gen: u64,
    pub target: u64,
    /// No other part is pending: write and fdatasync directly.
    pub sole: bool,
    /// Waiters of the generation (a latency hint).
    pub waiters: usize,
}

struct Open {
    id: u64,
    /// Wanted log position per shard (0: nothing).
    wanted: Vec<u64>,
    waiters: Vec<Waker>,
    joined: usize,
}

struct Running {
    id: u64,
    waiters: Vec<Waker>,
    joined: usize,
    parts: Vec<Part>,
    pending: usize,
    started: Instant,
}

struct Inner {
    open: Open,
    running: Option<Running>,
    /// Waiters the last finished generation served, and how long it ran.
    last_served: usize,
    last_took: Duration,
    /// A finishing core waiting for waiters to join the open generation.
    gatherer: Option<Thread>,
}

/// The commit state of one database.
pub(crate) struct Commit {
    inner: Mutex<Inner>,
    /// Highest generation finished (successfully or not).
    done: AtomicU64,
    /// The shards (weak: shards hold the context that holds this).
    shards: OnceLock<Vec<Weak<Shard>>>,
    /// Parts may stop at the device and share one device flush (ext4 and
    /// XFS, where written blocks are overwritten in place).
    shared_ok: std::sync::atomic::AtomicBool,
}

impl Commit {
    pub(super) fn new(shard_count: usize) -> Commit {
        Commit {
            inner: Mutex::new(Inner {
                open: Open {
                    id: 1,
                    wanted: vec![0; shard_count],
                    waiters: Vec::new(),
                    joined: 0,
                },
                running: None,
                last_served: 0,
                last_took: Duration::ZERO,
                gatherer: None,
            }),
            done: AtomicU64::new(0),
            shards: OnceLock::new(),
            shared_ok: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Called once at open, with the shards in order.
    pub(super) fn attach(&self, shards: &[Arc<Shard>], shared_ok: bool) {
        let _ = self.shards.set(shards.iter().map(Arc::downgrade).collect());
        self.shared_ok.store(shared_ok, Ordering::Release);
    }

    pub(super) fn shared_ok(&self) -> bool {
        self.shared_ok.load(Ordering::Acquire)
    }

    fn shard(&self, i: usize) -> Option<Arc<Shard>> {
        self.shards.get()?.get(i)?.upgrade()
    }

    /// Joins the open generation with the positions wanted per shard,
    /// registers `cx`'s waker in it (one lock for both), and starts it when
    /// nothing runs. Returns its id and where the waker went. Never called
    /// with `block_on`'s no-op waker (`CommitWait` waits for the real one).
    fn join(&self, targets: &[(usize, u64)], cx: &Context<'_>) -> (u64, Option<usize>) {
        let mut g = self.inner.lock();
        for &(s, t) in targets {
            let w = &mut g.open.wanted[s];
            *w = (*w).max(t);
        }
        g.open.joined += 1;
        let id = g.open.id;
        g.open.waiters.push(cx.waker().clone());
        let slot = Some(g.open.waiters.len() - 1);
        if g.running.is_none() && g.gatherer.is_none() {
            self.start(g);
        } else if let Some(t) = &g.gatherer {
            if g.open.joined >= g.last_served {
                t.unpark();
            }
        }
        (id, slot)
    }

    /// Whether generation `gen` is finished.
    #[inline]
    pub(super) fn is_done(&self, gen: u64) -> bool {
        self.done.load(Ordering::Acquire) >= gen
    }

    /// Registers `cx`'s waker for generation `gen` (`slot` remembers where,
    /// so a re-poll replaces it in place). Returns true when `gen` is done.
    pub(super) fn register(&self, gen: u64, slot: &mut Option<usize>, cx: &Context<'_>) -> bool {
        if self.is_done(gen) {
            return true;
        }
        // The no-op waker of `block_on`'s first poll is never registered
        // (nor is the lock taken for it).
        if cx.waker().will_wake(Waker::noop()) {
            return false;
        }
        let mut g = self.inner.lock();
        if self.is_done(gen) {
            return true;
        }
        let list = if g.open.id == gen {
            &mut g.open.waiters
        } else {
            match g.running.as_mut() {
                Some(r) if r.id == gen => &mut r.waiters,
                // Neither open nor running nor done cannot happen; be safe.
                _ => return self.is_done(gen),
            }
        };
        match *slot {
            Some(i) if i < list.len() => {
                if !list[i].will_wake(cx.waker()) {
                    list[i] = cx.waker().clone();
                }
            }
            _ => {
                *slot = Some(list.len());
                list.push(cx.waker().clone());
            }
        }
        false
    }

    /// Starts the open generation (`g` is the lock, released here).
    fn start<'a>(&'a self, mut g: MutexGuard<'a, Inner>) {
        loop {
            let n = g.open.wanted.len();
            let next = Open {
                id: g.open.id + 1,
                wanted: vec![0; n],
                waiters: Vec::new(),
                joined: 0,
            };
            let open = std::mem::replace(&mut g.open, next);
            let mut parts = vec![Part::None; n];
            let mut pending = 0;
            let mut wake = Vec::new();
            for (i, &w) in open.wanted.iter().enumerate() {
                let Some(s) = self.shard(i) else { continue };
                if w == 0 || s.durable_lpos() >= w {
                    continue;
                }
                if s.is_poisoned() {
                    parts[i] = Part::Failed;
                    continue;
                }
                parts[i] = Part::Pending(w);
                pending += 1;
                wake.push(s);
            }
            g.running = Some(Running {
                id: open.id,
                waiters: open.waiters,
                joined: open.joined,
                parts,
                pending,
                started: Instant::now(),
            });
            if pending > 0 {
                drop(g);
                for s in wake {
                    s.wake_core();
                }
                return;
            }
            // Nothing to write: finished at once.
            let waiters = self.take_finished(&mut g);
            drop(g);
            wake_all(waiters);
            g = self.inner.lock();
            if g.running.is_some() || g.gatherer.is_some() || g.open.joined == 0 {
                return;
            }
        }
    }

    /// A device flush failed: every shard is poisoned.
    pub(super) fn poison_all(&self, e: &std::io::Error) {
        for s in self.shards.get().into_iter().flatten() {
            if let Some(s) = s.upgrade() {
                s.poison_from_flush(e);
            }
        }
    }

    /// The running generation's part of shard `s`, if it is pending.
    pub(super) fn part(&self, s: usize) -> Option<PartPlan> {
        let g = self.inner.lock();
        let r = g.running.as_ref()?;
        match r.parts[s] {
            Part::Pending(target) => Some(PartPlan {
                gen: r.id,
                target,
                sole: r.pending == 1,
                waiters: r.joined,
            }),
            _ => None,
        }
    }

    /// A core reports its part of generation `gen`: durable (it synced its
    /// file) or on the device (`stable`: log position, marker position,
    /// records).
    pub(super) fn arrive(&self, gen: u64, s: usize, stable: Option<(u64, u64, u64)>) -> Arrival {
        let part = match stable {
            Some((l, p, r)) => Part::Stable(l, p, r),
            None => Part::Durable,
        };
        self.settle(gen, s, part, true)
    }

    /// Shard `s` failed (it is poisoned): its pending part, if any, fails.
    /// May be called under that shard's lock: it never takes a shard lock
    /// and never waits.
    pub(super) fn part_failed(&self, s: usize) {
        let gen = {
            let g = self.inner.lock();
            match g.running.as_ref() {
                Some(r) if matches!(r.parts[s], Part::Pending(_)) => r.id,
                _ => return,
            }
        };
        // A failed generation issues no device flush.
        let _ = self.settle(gen, s, Part::Failed, false);
    }

    fn settle(&self, gen: u64, s: usize, part: Part, gather: bool) -> Arrival {
        let mut g = self.inner.lock();
        let Some(r) = g.running.as_mut().filter(|r| r.id == gen) else {
            return Arrival::Done;
        };
        if !matches!(r.parts[s], Part::Pending(_)) {
            return Arrival::Done;
        }
        r.parts[s] = part;
        r.pending -= 1;
        if r.pending > 0 {
            return Arrival::Done;
        }
        let failed = r.parts.contains(&Part::Failed);
        let stable = r.parts.iter().any(|p| matches!(p, Part::Stable(..)));
        if stable && !failed {
            return Arrival::FlushDevice;
        }
        drop(g);
        self.finish(gen, false, gather);
        Arrival::Done
    }

    /// The last core's device flush for generation `gen` completed (`ok`)
    /// or failed (the caller poisons every shard first).
    pub(super) fn flushed(&self, gen: u64, ok: bool) {
        self.finish(gen, ok, true);
    }

    /// Ends generation `gen`: with `mark`, every part that was only on the
    /// device is now durable. Wakes its waiters, then starts the next
    /// generation if anyone joined it (with `gather`, after giving the
    /// waiters just woken a moment to join it).
    fn finish(&self, gen: u64, mark: bool, gather: bool) {
        if mark {
            // Marked while the generation still runs: a waiter that sees it
            // done sees these positions too.
            let parts = {
                let g = self.inner.lock();
                match g.running.as_ref() {
                    Some(r) if r.id == gen => r.parts.clone(),
                    _ => return,
                }
            };
            for (i, p) in parts.iter().enumerate() {
                if let (Part::Stable(l, pos, rec), Some(s)) = (*p, self.shard(i)) {
                    s.mark_durable((l, pos, rec));
                }
            }
        }
        let mut g = self.inner.lock();
        if g.running.as_ref().is_none_or(|r| r.id != gen) {
            return;
        }
        let waiters = self.take_finished(&mut g);
        let want = g.last_served;
        if gather && want >= 2 && g.open.joined < want {
            // The flushers just woken are coming back: claim the start of
            // the next generation (joiners do not start it meanwhile), wake
            // them, and wait a little for them to join.
            g.gatherer = Some(std::thread::current());
            let deadline = Instant::now() + g.last_took.min(MAX_GATHER);
            drop(g);
            wake_all(waiters);
            self.gather_and_start(deadline);
        } else if g.open.joined > 0 {
            // Start the next one first: its cores get going while the
            // waiters of this one are woken.
            self.start(g);
            wake_all(waiters);
        } else {
            drop(g);
            wake_all(waiters);
        }
    }

    /// Takes the running generation out and publishes it as done, under
    /// the lock (so a waiter always finds its generation open, running or
    /// done).
    fn take_finished(&self, g: &mut Inner) -> Vec<Waker> {
        let r = g.running.take().expect("a running generation");
        // Every flusher known to be active: those just served (about to
        // come back) and those already waiting for the next generation.
        // Expecting only the ones just served would keep an alternation
        // going: half the flushers in each generation, the other half
        // joining the next one while it runs.
        g.last_served = r.joined + g.open.joined;
        g.last_took = r.started.elapsed();
        self.done.fetch_max(r.id, Ordering::AcqRel);
        r.waiters
    }

    /// Waits until as many flushers as the last generation knew of have
    /// joined the open one, or until `deadline`, then starts it (the caller
    /// claimed the start by setting `gatherer`).
    fn gather_and_start(&self, deadline: Instant) {
        let mut g = self.inner.lock();
        let want = g.last_served;
        while g.open.joined < want {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            drop(g);
            std::thread::park_timeout(deadline - now);
            g = self.inner.lock();
        }
        g.gatherer = None;
        if g.running.is_none() && g.open.joined > 0 {
            self.start(g);
        }
    }
}

fn wake_all(waiters: Vec<Waker>) {
    for w in waiters {
        w.wake();
    }
}

/// Future of a waiter: completes when its generation is done.
pub(super) struct CommitWait<'a> {
    commit: &'a Commit,
    targets: &'a [(usize, u64)],
    /// The generation joined, and where its waker is.
    joined: Option<(u64, Option<usize>)>,
}

impl<'a> CommitWait<'a> {
    /// Waits for the positions `targets` (shard, log position) to be
    /// durable: joins a generation on its first poll with a real waker.
    pub(super) fn new(commit: &'a Commit, targets: &'a [(usize, u64)]) -> Self {
        CommitWait {
            commit,
            targets,
            joined: None,
        }
    }
}

impl std::future::Future for CommitWait<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let commit = self.commit;
        match self.joined {
            None => {
                // `block_on` polls first with a no-op waker and at once again
                // with its thread's: join on that second poll, so joining and
                // registering take the commit lock once.
                if cx.waker().will_wake(Waker::noop()) {
                    return Poll::Pending;
                }
                let joined = commit.join(self.targets, cx);
                self.joined = Some(joined);
                if commit.is_done(joined.0) {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
            Some((gen, mut slot)) => {
                let done = commit.register(gen, &mut slot, cx);
                self.joined = Some((gen, slot));
                if done {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }
}
