//! Opening and starting an engine: the database directory, the manifest (new
//! or recovered), the shard cores and the commit state.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::shard::Shard;
use super::{Ctx, Engine};
use crate::config::Config;
use crate::crypt::Crypto;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::io::IoBackend;
use crate::lock::LockFile;
use crate::log::frame::{self, SegmentHeader};
use crate::log::manifest::{self, Manifest, Names, ShardEntry};
use crate::log::segment::{self, Segment};
use crate::nsindex::Indexes;
use crate::recovery;

impl Engine {
    pub(crate) fn open(config: Config) -> Result<Engine> {
        let backend = match config.backend {
            IoBackend::Memory => IoBackend::Memory,
            requested => crate::io::resolve(requested, config.sqpoll_idle_ms).map_err(|e| {
                if requested == IoBackend::Uring {
                    Error::Io(io::Error::new(
                        e.kind(),
                        format!("io_uring was requested but the kernel refused it: {e}"),
                    ))
                } else {
                    Error::Io(e)
                }
            })?,
        };
        if let Some(dir) = &config.dir {
            // A database this process is closing in the background (the
            // last async handle dropped without `close()`) is reopened
            // once that close is done, not refused as locked.
            super::handoff::wait_for_close(dir);
        }
        let (lock, path) = match &config.dir {
            Some(dir) if config.read_only => (LockFile::acquire_shared(dir)?, dir.clone()),
            Some(dir) => {
                let lock = Some(prepare_dir(&config.files(), dir)?);
                // Under the lock no rewrite runs: one a crash interrupted
                // left its staging directory (maybe a plaintext copy).
                remove_stale_rewrite(&config.files(), dir)?;
                (lock, dir.clone())
            }
            None => (None, PathBuf::new()),
        };
        let crypto = open_keys(&config)?;
        let (ctx, parts) = match &config.dir {
            None => {
                let ctx = Arc::new(Ctx::new(
                    &config,
                    config.shards,
                    random_seed(),
                    backend,
                    (1, 0),
                    None,
                    crypto,
                ));
                let mut parts = Vec::new();
                for s in 0..ctx.shard_count {
                    let header = SegmentHeader {
                        shard: s as u32,
                        shard_count: ctx.shard_count as u32,
                        segment: 1,
                        hash_seed: ctx.hash_seed,
                    };
                    let seg = Arc::new(Segment::create(None, header, &ctx.config)?);
                    parts.push(recovery::RecoveredShard {
                        segs: vec![seg],
                        append_at: frame::SEGMENT_HEADER_LEN as u32,
                        indexes: Indexes::new(Index::new(), Vec::new()),
                        expiring: Default::default(),
                    });
                }
                (ctx, parts)
            }
            Some(dir) => open_dir(dir, &config, backend, crypto)?,
        };
        let shards: Vec<Arc<Shard>> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Arc::new(Shard::new(
                    ctx.clone(),
                    i,
                    p.segs,
                    p.append_at,
                    p.indexes,
                    p.expiring,
                ))
            })
            .collect();
        for s in &shards {
            s.set_self();
        }
        if config.range_scans {
            // One thread per shard: the keys are read and sorted at once.
            std::thread::scope(|sc| {
                for s in &shards {
                    sc.spawn(|| s.rebuild_ordered());
                }
            });
        }
        let shared_ok = config.dir.as_deref().is_some_and(overwrites_in_place);
        ctx.commit.attach(&shards, shared_ok);
        // A read-only open writes nothing, so it needs no cores: reads are
        // plain functions and a flush has nothing to wait for.
        let threads = if config.read_only {
            Vec::new()
        } else {
            start_cores(&shards, &config, backend)?
        };
        let state = Arc::new(super::State { ctx, shards });
        let engine = Engine {
            state: state.clone(),
            threads: Mutex::new(threads),
            compactor: Mutex::new(None),
            scrubber: Mutex::new(None),
            path,
            closed: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        };
        // Frames recovery took from hint files are checked once in the
        // background, after which their reads check no CRC.
        let segs = state.shards.iter().flat_map(|s| s.segment_list()).collect();
        *engine.scrubber.lock() = super::scrub::Scrubber::start(segs).map_err(Error::Io)?;
        if config.background_compaction {
            // On failure the engine drops, which stops what it started.
            let c = super::compaction::Compactor::start(state).map_err(Error::Io)?;
            *engine.compactor.lock() = Some(c);
        }
        Ok(engine)
    }
}

/// The keys of the database `config` opens: `None` for a plaintext
/// database. For an encrypted one the user's key unwraps the keyring
/// (`Error::EncryptionKeyMismatch` if it does not, before anything else is
/// read); a new database gets a fresh database key and keyring, stored
/// durably before its manifest.
#[cfg(feature = "encrypt")]
pub(crate) fn open_keys(config: &crate::config::Config) -> crate::Result<Option<Arc<Crypto>>> {
    let Some((input, cipher)) = &config.encryption else {
        if let Some(dir) = &config.dir {
            if dir.join(crate::crypt::KEYRING_NAME).exists() {
                return Err(Error::Encryption(
                    "the database is encrypted: open it with its key or passphrase",
                ));
            }
        }
        return Ok(None);
    };
    let Some(dir) = &config.dir else {
        // In memory: a keyring all the same, for backups.
        let mut dk = [0u8; 32];
        crate::crypt::random(&mut dk)?;
        let ring = crate::crypt::Keyring::wrap(*cipher, input, &dk)?;
        return Ok(Some(Arc::new(Crypto::new(*cipher, &dk, ring.encode()))));
    };
    let (ring, dk) = match crate::crypt::Keyring::load(dir)? {
        Some(ring) => {
            let dk = ring.unwrap(input)?;
            (ring, dk)
        }
        None => {
            if dir.join(manifest::FILE).exists() {
                return Err(Error::Encryption(
                    "the database is not encrypted: open it without a key, or encrypt it first \
                     with Emdb::enable_encryption",
                ));
            }
            if config.read_only || has_segments(dir)? {
                // Not a new database (or one a read-only open must not
                // create): `open_dir` reports what is wrong, and no keyring
                // is left to make it look encrypted.
                return Ok(None);
            }
            let mut dk = [0u8; 32];
            crate::crypt::random(&mut dk)?;
            let ring = crate::crypt::Keyring::wrap(*cipher, input, &dk)?;
            ring.store(&config.files(), dir)?;
            (ring, dk)
        }
    };
    Ok(Some(Arc::new(Crypto::new(ring.cipher, &dk, ring.encode()))))
}

/// Without the `encrypt` feature: a database with a keyring is refused.
#[cfg(not(feature = "encrypt"))]
pub(crate) fn open_keys(config: &crate::config::Config) -> crate::Result<Option<Arc<Crypto>>> {
    match &config.dir {
        Some(dir) if dir.join(crate::crypt::KEYRING_NAME).exists() => Err(Error::Encryption(
            "the database is encrypted: open it with a build of emdb that has the `encrypt` \
             feature, and its key",
        )),
        _ => Ok(None),
    }
}

/// A record of every (data key, nonce) pair this process sealed a frame
/// with, for the test that asserts none repeats (features `encrypt` and
/// `fault-injection`). Off until [`start`](nonce_log::start).
/// Whether `dir` holds segment files.
fn has_segments(dir: &Path) -> Result<bool> {
    Ok(fs::read_dir(dir)?.filter_map(|e| e.ok()).any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| segment::parse_file_name(n).is_some())
    }))
}

/// Where a rewrite of `dir` (`enable_encryption`, `disable_encryption`) is
/// staged: a hidden sibling, so the swap is a rename within one directory.
pub(crate) fn staging_dir(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?;
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(".emdb-rewrite");
    Some(dir.with_file_name(s))
}

/// Removes a directory tree (missing is fine) and makes that durable.
pub(crate) fn remove_tree(files: &crate::io::Files, p: &Path) -> Result<()> {
    if !p.exists() {
        return Ok(());
    }
    files.remove_tree(p)?;
    if let Some(parent) = p.parent() {
        files.sync_dir(parent)?;
    }
    Ok(())
}

/// Removes the staging directory a crashed rewrite of `dir` left behind
/// (called by open, under the database's lock: no rewrite is running).
fn remove_stale_rewrite(files: &crate::io::Files, dir: &Path) -> Result<()> {
    let Some(s) = staging_dir(dir) else {
        return Ok(());
    };
    // Only what a rewrite leaves: a database directory (or an empty one),
    // never anything else a user named so.
    let ours = [manifest::FILE, "LOCK", crate::crypt::KEYRING_NAME]
        .iter()
        .any(|f| s.join(f).exists())
        || fs::read_dir(&s).is_ok_and(|mut d| d.next().is_none());
    if s.is_dir() && ours {
        remove_tree(files, &s)
    } else {
        Ok(())
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Creates the directory if needed (mode 0700, each new entry made durable
/// in its parent) and takes the lock.
fn prepare_dir(files: &crate::io::Files, dir: &Path) -> Result<LockFile> {
    files.opening(dir);
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!(
                    "{} is a file; an emdb database is a directory",
                    dir.display()
                ),
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => files.create_dir_all(dir)?,
        Err(e) => return Err(e.into()),
    }
    LockFile::acquire(files, dir)
}

/// Opens an existing database directory or initialises a new one.
fn open_dir(
    dir: &Path,
    config: &Config,
    backend: IoBackend,
    crypto: Option<Arc<Crypto>>,
) -> Result<(Arc<Ctx>, Vec<recovery::RecoveredShard>)> {
    match Manifest::load(dir, Names(crypto.clone()))? {
        Some(mut m) => {
            let ctx_seed = m.hash_seed;
            let shard_count = m.shard_count as usize;
            let parts = recovery::recover(dir, config, &mut m)?;
            let max_seq = parts.max_seq;
            let gen = m.checkpoint_gen;
            let ctx = Arc::new(Ctx::new(
                config,
                shard_count,
                ctx_seed,
                backend,
                (max_seq + 1, gen),
                Some(m),
                crypto,
            ));
            Ok((ctx, parts.shards))
        }
        None if config.read_only && has_segments(dir)? => Err(Error::corrupted(
            dir.join(manifest::FILE),
            0,
            "manifest is missing but segment files exist",
        )),
        None if config.read_only => Err(Error::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} holds no emdb database (no MANIFEST); a read-only open creates none",
                dir.display()
            ),
        ))),
        None => {
            if has_segments(dir)? {
                return Err(Error::corrupted(
                    dir.join(manifest::FILE),
                    0,
                    "manifest is missing but segment files exist",
                ));
            }
            // The directory may have been created by an open that crashed
            // before making its entry durable: make it so before the
            // database it will hold is relied on.
            let files = config.files();
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                files.sync_dir(parent)?;
            }
            let seed = random_seed();
            let mut m = Manifest {
                shard_count: config.shards as u32,
                hash_seed: seed,
                checkpoint_gen: 0,
                seq_floor: 0,
                batch_floor: 0,
                aborted: Vec::new(),
                shards: vec![ShardEntry::default(); config.shards],
                namespaces: Vec::new(),
                next_namespace: 1,
                names: Names(crypto.clone()),
            };
            // The manifest comes first: a crash before the segments are
            // created and listed leaves a database that opens (recovery
            // creates a shard's missing first segment and removes unlisted
            // segment files), never segments without a manifest.
            m.store(&files, dir)?;
            let mut parts = Vec::with_capacity(config.shards);
            for s in 0..config.shards {
                let header = SegmentHeader {
                    shard: s as u32,
                    shard_count: config.shards as u32,
                    segment: 1,
                    hash_seed: seed,
                };
                let seg = Arc::new(Segment::create(Some(dir), header, config)?);
                m.shards[s].segments.push(1);
                parts.push(recovery::RecoveredShard {
                    segs: vec![seg],
                    append_at: frame::SEGMENT_HEADER_LEN as u32,
                    indexes: Indexes::new(Index::new(), Vec::new()),
                    expiring: Default::default(),
                });
            }
            m.store(&files, dir)?;
            let ctx = Arc::new(Ctx::new(
                config,
                config.shards,
                seed,
                backend,
                (1, 0),
                Some(m),
                crypto,
            ));
            Ok((ctx, parts))
        }
    }
}

/// Starts one core thread per shard; each creates its own backend (an
/// io_uring must be set up on the thread that submits to it).
fn start_cores(
    shards: &[Arc<Shard>],
    config: &Config,
    backend: IoBackend,
) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(shards.len());
    let mut failure = None;
    for shard in shards {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let s = shard.clone();
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("emdb-core-{}", shard.id))
            .spawn(move || match config.backend(backend) {
                Ok(io) => {
                    debug_assert_eq!(io.kind(), backend);
                    let _ = tx.send(Ok(()));
                    let core = s.clone();
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                        super::core_loop::run_core(core, io)
                    }));
                    if ran.is_err() {
                        s.poison_dead_core();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            });
        match spawned {
            Ok(t) => {
                shard.set_core(t.thread().clone());
                threads.push(t);
                match rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failure = Some(Error::Io(e));
                        break;
                    }
                    Err(_) => {
                        failure = Some(Error::Io(io::Error::other(
                            "shard core thread exited during start",
                        )));
                        break;
                    }
                }
            }
            Err(e) => {
                failure = Some(Error::Io(e));
                break;
            }
        }
    }
    match failure {
        None => Ok(threads),
        Some(e) => {
            for s in shards {
                s.request_shutdown();
            }
            for t in threads {
                let _ = t.join();
            }
            Err(e)
        }
    }
}

/// Whether the filesystem of `dir` overwrites written blocks in place, so that
/// a write into an already written and synced block changes no metadata and
/// is durable after `sync_file_range` plus any device flush. True for ext4
/// and XFS; copy-on-write filesystems (btrfs, ZFS) allocate on every write,
/// so there every part of a commit generation syncs its own file.
fn overwrites_in_place(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a valid C string and `st` is a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    matches!(st.f_type as i64, EXT4 | XFS)
}
