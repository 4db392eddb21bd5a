//! Where a sorted set's blocks are found: the blocks in key order, each
//! under its lower fence, in runs of up to [`RUN_MAX`] blocks.
//!
//! A search reads two arrays of numbers: the head ([`key_head`]) of each
//! run's first fence, then the heads of the chosen run's fences, and
//! follows a fence's key only when two heads tie. A `BTreeMap` of fences
//! (what this replaced) compared fences through a `dyn` view at every
//! node of a descent four levels deep, each node an allocation of its
//! own: in
//! a profile of 10,000 prefix scans of about 100 keys, finding the first
//! block took 13.9 % of the samples with it and 8.5 % with this
//! (ARCHITECTURE.md, "Blocks found in runs").

use super::block::Block;
use super::key_head;

/// Blocks per run before the run splits in two.
const RUN_MAX: usize = 128;

/// A block's place: its run, and its index in the run. A change of the
/// directory ([`Dir::insert_after`], [`Dir::remove`]) moves places.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct At {
    run: usize,
    i: usize,
}

impl At {
    /// The first block, whose fence is the empty key.
    pub(super) const FIRST: At = At { run: 0, i: 0 };
}

/// Consecutive blocks and their fences: each fence's head (what searches
/// compare), its key (read when heads tie) and the block.
struct Run {
    heads: Vec<u64>,
    fences: Vec<Box<[u8]>>,
    blocks: Vec<Block>,
}

impl Run {
    fn of(fence: Box<[u8]>, block: Block) -> Run {
        Run {
            heads: vec![key_head(&fence)],
            fences: vec![fence],
            blocks: vec![block],
        }
    }

    fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Moves blocks `at..` into a new run.
    fn split_off(&mut self, at: usize) -> Run {
        Run {
            heads: self.heads.split_off(at),
            fences: self.fences.split_off(at),
            blocks: self.blocks.split_off(at),
        }
    }

    fn append(&mut self, other: Run) {
        self.heads.extend(other.heads);
        self.fences.extend(other.fences);
        self.blocks.extend(other.blocks);
    }
}

/// The blocks of a set in key order (see the module doc). The first
/// block's fence is the empty key, so every key has a block; it is never
/// removed.
pub(super) struct Dir {
    /// The head of each run's first fence.
    firsts: Vec<u64>,
    runs: Vec<Run>,
}

/// How many of `n` sorted entries are at or below the key whose head is
/// `head`: `heads` are theirs, and `tie(i)` says whether entry `i`, whose
/// head equals `head`, is at or below the key.
#[inline]
fn at_or_below(heads: &[u64], head: u64, tie: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, heads.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let h = heads[mid];
        if h < head || (h == head && tie(mid)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl Dir {
    /// A directory of one block, `first`, under the empty fence.
    pub(super) fn new(first: Block) -> Dir {
        Dir {
            firsts: vec![0],
            runs: vec![Run::of(Box::default(), first)],
        }
    }

    /// Blocks held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.runs.iter().map(Run::len).sum()
    }

    /// The block whose range holds `key`: the last whose fence is at or
    /// below it.
    #[inline]
    pub(super) fn find(&self, key: &[u8]) -> At {
        let head = key_head(key);
        let run = self.run_of(key, head);
        let r = &self.runs[run];
        // At least one: the run's first fence is at or below the key.
        let i = at_or_below(&r.heads, head, |i| &*r.fences[i] <= key) - 1;
        At { run, i }
    }

    /// The run whose range holds `key` (whose head is `head`).
    #[inline]
    fn run_of(&self, key: &[u8], head: u64) -> usize {
        let runs = &self.runs;
        // At least one: the first fence (the empty key) is at or below
        // every key.
        at_or_below(&self.firsts, head, |r| &*runs[r].fences[0] <= key) - 1
    }

    #[inline]
    pub(super) fn block(&self, at: At) -> &Block {
        &self.runs[at.run].blocks[at.i]
    }

    #[inline]
    pub(super) fn block_mut(&mut self, at: At) -> &mut Block {
        &mut self.runs[at.run].blocks[at.i]
    }

    /// The place of the block after `at`'s.
    #[inline]
    pub(super) fn next(&self, at: At) -> Option<At> {
        if at.i + 1 < self.runs[at.run].len() {
            Some(At {
                run: at.run,
                i: at.i + 1,
            })
        } else if at.run + 1 < self.runs.len() {
            Some(At {
                run: at.run + 1,
                i: 0,
            })
        } else {
            None
        }
    }

    /// The place of the block before `at`'s.
    pub(super) fn prev(&self, at: At) -> Option<At> {
        if at.i > 0 {
            Some(At {
                run: at.run,
                i: at.i - 1,
            })
        } else if at.run > 0 {
            let run = at.run - 1;
            Some(At {
                run,
                i: self.runs[run].len() - 1,
            })
        } else {
            None
        }
    }

    /// Adds `block` under `fence` right after the block at `at` (`fence`
    /// sorts between that block's fence and the next one's). A run that
    /// outgrows [`RUN_MAX`] splits in two.
    pub(super) fn insert_after(&mut self, at: At, fence: Box<[u8]>, block: Block) {
        let run = &mut self.runs[at.run];
        run.heads.insert(at.i + 1, key_head(&fence));
        run.fences.insert(at.i + 1, fence);
        run.blocks.insert(at.i + 1, block);
        if run.len() > RUN_MAX {
            let right = run.split_off(run.len() / 2);
            self.firsts.insert(at.run + 1, right.heads[0]);
            self.runs.insert(at.run + 1, right);
        }
    }

    /// Adds `block` under `fence` after every block (`fence` sorts after
    /// theirs): a set built whole fills runs three-quarters full.
    pub(super) fn push(&mut self, fence: Box<[u8]>, block: Block) {
        let last = self.runs.len() - 1;
        if self.runs[last].len() < RUN_MAX * 3 / 4 {
            let run = &mut self.runs[last];
            run.heads.push(key_head(&fence));
            run.fences.push(fence);
            run.blocks.push(block);
        } else {
            self.firsts.push(key_head(&fence));
            self.runs.push(Run::of(fence, block));
        }
    }

    /// Takes out the block at `at` (not the first block). A run left with
    /// under a quarter of [`RUN_MAX`] blocks joins a neighbour (the one
    /// before, else the one after) if the two fit in three quarters of a
    /// run; an empty run goes.
    pub(super) fn remove(&mut self, at: At) -> Block {
        assert!(at != At::FIRST, "the first block stays");
        let run = &mut self.runs[at.run];
        run.heads.remove(at.i);
        run.fences.remove(at.i);
        let block = run.blocks.remove(at.i);
        let left = run.len();
        if left == 0 {
            self.runs.remove(at.run);
            self.firsts.remove(at.run);
            return block;
        }
        if at.i == 0 {
            self.firsts[at.run] = run.heads[0];
        }
        if left < RUN_MAX / 4 {
            let fits = |r: usize| left + self.runs[r].len() <= RUN_MAX * 3 / 4;
            let into = if at.run > 0 && fits(at.run - 1) {
                Some(at.run - 1)
            } else if at.run + 1 < self.runs.len() && fits(at.run + 1) {
                Some(at.run)
            } else {
                None
            };
            if let Some(into) = into {
                let from = self.runs.remove(into + 1);
                self.firsts.remove(into + 1);
                self.runs[into].append(from);
            }
        }
        block
    }

    /// Every block, in key order.
    pub(super) fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.runs.iter().flat_map(|r| r.blocks.iter())
    }

    pub(super) fn blocks_mut(&mut self) -> impl Iterator<Item = &mut Block> {
        self.runs.iter_mut().flat_map(|r| r.blocks.iter_mut())
    }

    /// Heap bytes held: the arrays (as allocated) and the fences' keys.
    pub(super) fn memory_bytes(&self) -> usize {
        let per_block = 8 + std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Block>();
        self.firsts.capacity() * 8
            + self.runs.capacity() * std::mem::size_of::<Run>()
            + self
                .runs
                .iter()
                .map(|r| {
                    r.blocks.capacity() * per_block
                        + r.fences.iter().map(|f| f.len()).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Checks what searches rely on: fences ascend across runs, each
    /// head is its fence's, `firsts` holds each run's first head, no run
    /// is empty or over [`RUN_MAX`], and the first fence is the empty key.
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert_eq!(self.firsts.len(), self.runs.len());
        assert!(self.runs[0].fences[0].is_empty());
        let mut prev: Option<&[u8]> = None;
        for (r, run) in self.runs.iter().enumerate() {
            assert!(
                (1..=RUN_MAX).contains(&run.len()),
                "run {r} holds {}",
                run.len()
            );
            assert_eq!(self.firsts[r], run.heads[0]);
            assert_eq!(run.heads.len(), run.len());
            assert_eq!(run.fences.len(), run.len());
            for (h, f) in run.heads.iter().zip(&run.fences) {
                assert_eq!(*h, key_head(f));
                assert!(prev.is_none_or(|p| p < &**f), "fences ascend");
                prev = Some(f);
            }
        }
    }

    /// Runs held (tests check that runs split and join).
    #[cfg(test)]
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The fence of the block at `at`.
    #[cfg(test)]
    pub(super) fn fence(&self, at: At) -> &[u8] {
        &self.runs[at.run].fences[at.i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The fences in the directory's order, each found where it is.
    fn fences(dir: &Dir) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = Some(At::FIRST);
        while let Some(a) = at {
            let f = dir.fence(a);
            assert_eq!(dir.find(f), a, "a fence's search lands on its block");
            out.push(f.to_vec());
            at = dir.next(a);
        }
        out
    }

    #[test]
    fn runs_split_when_full_and_join_when_sparse() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut dir = Dir::new(Block::empty());
        let mut model: BTreeSet<Vec<u8>> = [Vec::new()].into();
        for _ in 0..6_000 {
            // Heads tie often: eight bytes from a few values, then more.
            let mut f = rng.u64(0..16).to_be_bytes().to_vec();
            f.extend((0..rng.usize(0..4)).map(|_| rng.u8(..)));
            if model.insert(f.clone()) {
                let at = dir.find(&f);
                dir.insert_after(at, f.into(), Block::empty());
            }
        }
        dir.check();
        assert_eq!(fences(&dir), model.iter().cloned().collect::<Vec<_>>());
        let full = dir.runs();
        assert!(full >= model.len() / RUN_MAX, "{full} runs");
        let mut gone: Vec<Vec<u8>> = model.iter().skip(1).cloned().collect();
        rng.shuffle(&mut gone);
        for (j, f) in gone.iter().enumerate().filter(|(j, _)| j % 10 != 0) {
            let at = dir.find(f);
            assert_eq!(dir.fence(at), &f[..]);
            dir.remove(at);
            model.remove(f);
            if j % 500 == 1 {
                dir.check();
            }
        }
        dir.check();
        assert_eq!(fences(&dir), model.iter().cloned().collect::<Vec<_>>());
        assert!(dir.runs() < full / 2, "runs join: {} of {full}", dir.runs());
    }

    /// Keys shorter than eight bytes tie on their heads with longer keys
    /// whose bytes after them are zeros: the fences' bytes decide.
    #[test]
    fn fences_whose_heads_tie_are_told_apart_by_their_bytes() {
        let mut dir = Dir::new(Block::empty());
        let fences: [&[u8]; 5] = [
            &[1],
            &[1, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0],
            &[1, 0, 0, 0, 0, 0, 0, 0, 5],
            &[2],
        ];
        for f in fences {
            dir.push(f.into(), Block::empty());
        }
        dir.check();
        let probes: [(&[u8], &[u8]); 8] = [
            (&[0], &[]),
            (&[1], &[1]),
            (&[1, 0, 0], &[1, 0]),
            (&[1, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0, 0, 0, 0, 0]),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 0], &[1, 0, 0, 0, 0, 0, 0, 0]),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 6], &[1, 0, 0, 0, 0, 0, 0, 0, 5]),
            (&[1, 1], &[1, 0, 0, 0, 0, 0, 0, 0, 5]),
            (&[3], &[2]),
        ];
        for (probe, fence) in probes {
            assert_eq!(dir.fence(dir.find(probe)), fence, "probe {probe:?}");
        }
    }

    /// A run that loses every block while neither neighbour has room for
    /// it to join goes, and the runs around it stay as they were.
    #[test]
    fn a_run_emptied_between_full_neighbours_goes() {
        let mut dir = Dir::new(Block::empty());
        let per = RUN_MAX * 3 / 4;
        // Three runs filled as a set built whole fills them.
        for i in 1..3 * per as u32 {
            dir.push(i.to_be_bytes().into(), Block::empty());
        }
        assert_eq!(dir.runs(), 3);
        for i in (per as u32..2 * per as u32).rev() {
            let at = dir.find(&i.to_be_bytes());
            assert_eq!(dir.fence(at), i.to_be_bytes());
            dir.remove(at);
            dir.check();
        }
        assert_eq!(dir.runs(), 2);
        assert_eq!(fences(&dir).len(), 2 * per);
        assert_eq!(
            dir.fence(dir.find(&(2 * per as u32 - 1).to_be_bytes())),
            (per as u32 - 1).to_be_bytes()
        );
    }
}
