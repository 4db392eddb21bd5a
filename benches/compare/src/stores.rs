//! One adapter per store. Each uses the store's recommended fast path (batch
//! APIs, one transaction per batch) and its documented durable setting for the
//! durable operations; `settings()` says which.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by main before any store opens when phase 15 or 16 is asked: both
/// emdbs then open with `enable_range_scans(true)` (their scans need it,
/// and its ordered index shows in phase 12's memory per key).
pub static RANGE_SCANS: AtomicBool = AtomicBool::new(false);

fn range_scans() -> bool {
    RANGE_SCANS.load(Ordering::Relaxed)
}

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
pub type Rec = (Vec<u8>, Vec<u8>);

/// A point reader owned by one thread (holds a read transaction where the
/// store has them).
pub trait Reader {
    /// Length of the value stored for `key`, if any.
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>>;
}

pub trait Store: Send + Sync {
    /// Writes a chunk with the store's batch API, without making it durable.
    fn load_chunk(&self, recs: &[Rec]) -> Res<()>;
    /// Makes every earlier write durable.
    fn sync(&self) -> Res<()>;
    /// One record, durable on return.
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()>;
    /// One batch, durable on return.
    fn batch_durable(&self, recs: &[Rec]) -> Res<()>;
    /// One record, not made durable.
    fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()>;
    /// Number of live keys.
    fn len(&self) -> Res<u64>;
    fn reader(&self) -> Res<Box<dyn Reader + '_>>;
    /// Removes keys with the batch API, without making it durable.
    fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()>;
    /// Compacts; `Err(reason)` when the store has no such operation.
    fn compact(&mut self) -> Result<Res<()>, String>;
    /// Size after compaction when it is not the directory's (LMDB's copy).
    fn compacted_size(&self) -> Option<u64> {
        None
    }
    /// Writes a checkpoint if the store has one; returns whether it did.
    fn checkpoint(&self) -> Res<bool> {
        Ok(false)
    }
    /// Hook around the no-sync phases (LMDB switches MDB_NOSYNC on and off).
    fn set_nosync(&self, _on: bool) -> Res<()> {
        Ok(())
    }
    /// Store-reported flush counters for the notes, if any.
    fn flush_stats(&self) -> Option<(u64, f64)> {
        None
    }
    /// Calls `f` on every `(key, value)` whose key starts with `prefix`
    /// (empty: every key) in ascending key order, with the store's own
    /// ordered iteration; `Err(reason)` when the store cannot.
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String>;
}

/// Stores whose durable call does not flush the device's write cache: they
/// are not marked best on rows of durable phases.
pub const NOT_DEVICE_DURABLE: &[&str] = &["sled"];

pub struct Kind {
    pub name: &'static str,
    pub settings: &'static str,
    /// How `scan` reads (phases 15 and 16), added to the settings when
    /// either phase runs.
    pub scan: &'static str,
    pub open: fn(&Path) -> Res<Box<dyn Store>>,
}

pub fn kinds() -> Vec<Kind> {
    #[allow(unused_mut)]
    let mut v = vec![
        Kind {
            name: "emdb",
            settings: "emdb (this tree): builder().path(dir).flush_policy(FlushPolicy::OnEachFlush), \
                       default shards (= CPUs) and io backend (Auto: io_uring if allowed); \
                       bulk/batch = insert_many; durable = flush() (group commit: concurrent flush() \
                       calls share fdatasyncs); reads = get_zerocopy; background compaction on \
                       (default); compact(); checkpoint() before reopen",
            scan: "scans: opened with enable_range_scans(true) (so phase 12 includes its ordered \
                   index); full scan = range_cursor(..), prefix scan = range_prefix_cursor(prefix) \
                   (lazy, chunks of 128 keys, each record lent without a copy, as the B-trees' \
                   iterators lend theirs; EMDB_COMPARE_SCAN=iter: range_iter and range_prefix_iter, \
                   two Vecs per record)",
            open: EmdbOurs::open,
        },
        Kind {
            name: "emdb 1.0.3",
            settings: "emdb 1.0.3 (crates.io): builder().path(dir/db.emdb).flush_policy(FlushPolicy::Group) \
                       (its docs' choice for many threads flushing per record); bulk/batch = insert_many; \
                       durable = flush(); reads = get_zerocopy; compact(); checkpoint() before reopen",
            scan: "scans: opened with enable_range_scans(true) (its crossbeam SkipMap of keys, so \
                   phase 12 includes it); full scan = range_iter(..) (lazy cursor), prefix scan = \
                   range_prefix_iter(prefix) (lazy)",
            open: EmdbUpstream::open,
        },
        Kind {
            name: "emdb enc",
            settings: "emdb (this tree), encrypted: as `emdb`, plus encryption_key([0x42; 32]) \
                       (AES-256-GCM, the default cipher)",
            scan: "scans: as `emdb`",
            open: EmdbOurs::open_encrypted,
        },
        Kind {
            name: "emdb 1.0.3 enc",
            settings: "emdb 1.0.3, encrypted: as `emdb 1.0.3`, plus encryption_key([0x42; 32]) \
                       (its default cipher, AES-256-GCM)",
            scan: "scans: as `emdb 1.0.3`",
            open: EmdbUpstream::open_encrypted,
        },
        Kind {
            name: "redb",
            settings: "redb 4: Database::create, one table; a write transaction per batch/record; \
                       durable = Durability::Immediate (default) commit; no-sync phases = Durability::None \
                       commits, made durable by a final Immediate commit; reads share one read transaction \
                       per thread; Database::compact()",
            scan: "scans: a read transaction per scan, table.range(prefix..), stopped at the first \
                   key without the prefix",
            open: Redb::open,
        },
        Kind {
            name: "fjall",
            settings: "fjall 3: Database::builder(dir).open(), one keyspace (defaults: LZ4); batch = WriteBatch; \
                       durable = persist(PersistMode::SyncAll) (its README's setting; batches: \
                       WriteBatch::durability(Some(SyncAll))); keyspace.major_compact()",
            scan: "scans: keyspace.iter() (full), keyspace.prefix(prefix); Guard::into_inner per item",
            open: Fjall::open,
        },
        Kind {
            name: "sled",
            settings: "sled 0.34.7: sled::Config::new().path(dir) defaults (1 GiB cache, flush_every_ms 500); \
                       batch = apply_batch(Batch); durable = Db::flush(), which on Linux \
                       ends in sync_file_range(2), not fsync: it does not flush the device's write cache, \
                       so its durable rows are not power-loss durable on a write-back cache; no compaction API",
            scan: "scans: Db::iter() (full), Db::scan_prefix(prefix)",
            open: Sled::open,
        },
        Kind {
            name: "lmdb",
            settings: "LMDB via heed 0.22: map_size 16 GiB, default flags (commits are synced); \
                       a write transaction per batch/record; no-sync phases with MDB_NOSYNC set, then \
                       force_sync(); reads share one read transaction per thread; compaction = \
                       copy_to_path(CompactionOption::Enabled) (mdb_env_copy2 MDB_CP_COMPACT)",
            scan: "scans: a read transaction per scan, Database::iter (full), \
                   Database::prefix_iter(prefix)",
            open: Lmdb::open,
        },
    ];
    #[cfg(feature = "rocksdb")]
    v.push(Kind {
        name: "rocksdb",
        settings: "RocksDB (rust-rocksdb): create_if_missing, defaults otherwise; batch = WriteBatch; \
                   durable = WriteOptions::set_sync(true); no-sync = WAL without sync, then flush_wal(true); \
                   compact_range(None, None)",
        scan: "scans: raw_iterator(), seek(prefix) (seek_to_first for the full scan), next() until \
               the first key without the prefix, then status()",
        open: rocks::Rocks::open,
    });
    v
}

// ------------------------------------------------- emdb (ours) and emdb 1.0.3

/// Both emdbs have the same API: one reader type and the common `Store`
/// methods for each, from one definition.
macro_rules! emdb_store_common {
    ($reader:ident, $db:ty) => {
        struct $reader<'a>(&'a $db);
        impl Reader for $reader<'_> {
            fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
                Ok(self.0.get_zerocopy(key)?.map(|v| v.len()))
            }
        }
    };
}

/// Calls `f` on every record of `prefix` (empty: all) with an emdb's
/// `range_iter`/`range_prefix_iter` (this tree's and emdb 1.0.3's).
macro_rules! scan_with_iterator {
    ($db:expr, $prefix:expr, $f:expr) => {
        let it = if $prefix.is_empty() {
            $db.range_iter(..)?
        } else {
            $db.range_prefix_iter($prefix)?
        };
        for (k, v) in it {
            $f(&k, &v);
        }
    };
}

macro_rules! emdb_store_methods {
    ($reader:ident) => {
        fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
            Ok(self.0.insert_many(recs.iter().map(|(k, v)| (k, v)))?)
        }
        fn sync(&self) -> Res<()> {
            Ok(self.0.flush()?)
        }
        fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
            self.0.insert(key, value)?;
            Ok(self.0.flush()?)
        }
        fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
            self.load_chunk(recs)?;
            self.sync()
        }
        fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
            Ok(self.0.insert(key, value)?)
        }
        fn len(&self) -> Res<u64> {
            Ok(self.0.len()? as u64)
        }
        fn reader(&self) -> Res<Box<dyn Reader + '_>> {
            Ok(Box::new($reader(&self.0)))
        }
        fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
            for k in keys {
                self.0.remove(k)?;
            }
            Ok(())
        }
        fn checkpoint(&self) -> Res<bool> {
            self.0.checkpoint()?;
            Ok(true)
        }
    };
}

struct EmdbOurs(emdb::Emdb);
emdb_store_common!(EmdbOursReader, emdb::Emdb);

/// The key of the encrypted configurations.
const BENCH_KEY: [u8; 32] = [0x42; 32];

impl EmdbOurs {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        Self::open_as(dir, None)
    }

    fn open_encrypted(dir: &Path) -> Res<Box<dyn Store>> {
        Self::open_as(dir, Some(BENCH_KEY))
    }

    fn open_as(dir: &Path, key: Option<[u8; 32]>) -> Res<Box<dyn Store>> {
        let b = emdb::Emdb::builder()
            .path(dir)
            .flush_policy(emdb::FlushPolicy::OnEachFlush)
            .enable_range_scans(range_scans());
        let b = match key {
            Some(k) => b.encryption_key(k),
            None => b,
        };
        Ok(Box::new(EmdbOurs(b.build()?)))
    }
}

impl Store for EmdbOurs {
    emdb_store_methods!(EmdbOursReader);
    fn compact(&mut self) -> Result<Res<()>, String> {
        Ok(self.0.compact().map_err(Into::into))
    }
    fn flush_stats(&self) -> Option<(u64, f64)> {
        self.0
            .stats()
            .ok()
            .map(|s| (s.device_flushes, s.records_per_flush))
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        if !range_scans() {
            return Err("opened without enable_range_scans".into());
        }
        Ok((|| -> Res<()> {
            if scan_with_iterators() {
                scan_with_iterator!(self.0, prefix, f);
                return Ok(());
            }
            let mut cursor = if prefix.is_empty() {
                self.0.range_cursor(..)?
            } else {
                self.0.range_prefix_cursor(prefix)?
            };
            while let Some((k, v)) = cursor.next_record() {
                f(k, v);
            }
            Ok(())
        })())
    }
}

/// `EMDB_COMPARE_SCAN=iter`: this tree's scans use `range_iter` and
/// `range_prefix_iter` (a `Vec` pair per record) instead of the cursors
/// (records lent, as the B-trees' iterators lend them).
fn scan_with_iterators() -> bool {
    // Read once: an environment lookup per scan would weigh on phase 16.
    static ITER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ITER.get_or_init(|| std::env::var("EMDB_COMPARE_SCAN").is_ok_and(|v| v == "iter"))
}

struct EmdbUpstream(emdb_upstream::Emdb);
emdb_store_common!(EmdbUpstreamReader, emdb_upstream::Emdb);

impl EmdbUpstream {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        Self::open_as(dir, None)
    }

    fn open_encrypted(dir: &Path) -> Res<Box<dyn Store>> {
        Self::open_as(dir, Some(BENCH_KEY))
    }

    fn open_as(dir: &Path, key: Option<[u8; 32]>) -> Res<Box<dyn Store>> {
        std::fs::create_dir_all(dir)?;
        let b = emdb_upstream::Emdb::builder()
            .path(dir.join("db.emdb"))
            .flush_policy(emdb_upstream::FlushPolicy::Group)
            .enable_range_scans(range_scans());
        let b = match key {
            Some(k) => b.encryption_key(k),
            None => b,
        };
        Ok(Box::new(EmdbUpstream(b.build()?)))
    }
}

impl Store for EmdbUpstream {
    emdb_store_methods!(EmdbUpstreamReader);
    fn compact(&mut self) -> Result<Res<()>, String> {
        Ok(self.0.compact().map_err(Into::into))
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        if !range_scans() {
            return Err("opened without enable_range_scans".into());
        }
        Ok((|| -> Res<()> {
            scan_with_iterator!(self.0, prefix, f);
            Ok(())
        })())
    }
}

// ---------------------------------------------------------------- redb

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t");

struct Redb(redb::Database);

impl Redb {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("db.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(Box::new(Redb(db)))
    }

    fn write(
        &self,
        durability: redb::Durability,
        recs: &mut dyn Iterator<Item = (&[u8], &[u8])>,
    ) -> Res<()> {
        let mut txn = self.0.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut t = txn.open_table(REDB_TABLE)?;
            for (k, v) in recs {
                t.insert(k, v)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

struct RedbReader(redb::ReadOnlyTable<&'static [u8], &'static [u8]>);
impl Reader for RedbReader {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.value().len()))
    }
}

impl Store for Redb {
    fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
        self.write(
            redb::Durability::None,
            &mut recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
    }
    fn sync(&self) -> Res<()> {
        self.write(redb::Durability::Immediate, &mut std::iter::empty())
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.write(
            redb::Durability::Immediate,
            &mut std::iter::once((key, value)),
        )
    }
    fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
        self.write(
            redb::Durability::Immediate,
            &mut recs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
    }
    fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.write(redb::Durability::None, &mut std::iter::once((key, value)))
    }
    fn len(&self) -> Res<u64> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        Ok(self.0.begin_read()?.open_table(REDB_TABLE)?.len()?)
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        use redb::ReadableDatabase;
        Ok(Box::new(RedbReader(
            self.0.begin_read()?.open_table(REDB_TABLE)?,
        )))
    }
    fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
        let mut txn = self.0.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut t = txn.open_table(REDB_TABLE)?;
            for k in keys {
                t.remove(*k)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
    fn compact(&mut self) -> Result<Res<()>, String> {
        Ok(self.0.compact().map(|_| ()).map_err(Into::into))
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        use redb::ReadableDatabase;
        Ok((|| -> Res<()> {
            let t = self.0.begin_read()?.open_table(REDB_TABLE)?;
            for item in t.range::<&[u8]>(prefix..)? {
                let (k, v) = item?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                f(k, v.value());
            }
            Ok(())
        })())
    }
}

// ---------------------------------------------------------------- fjall

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        let db = fjall::Database::builder(dir).open()?;
        let ks = db.keyspace("t", fjall::KeyspaceCreateOptions::default)?;
        Ok(Box::new(Fjall { db, ks }))
    }
}

struct FjallReader<'a>(&'a fjall::Keyspace);
impl Reader for FjallReader<'_> {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.len()))
    }
}

impl Store for Fjall {
    fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
        let mut b = self.db.batch();
        for (k, v) in recs {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        Ok(b.commit()?)
    }
    fn sync(&self) -> Res<()> {
        Ok(self.db.persist(fjall::PersistMode::SyncAll)?)
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.ks.insert(key, value)?;
        self.sync()
    }
    fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
        let mut b = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in recs {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        Ok(b.commit()?)
    }
    fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
        Ok(self.ks.insert(key, value)?)
    }
    fn len(&self) -> Res<u64> {
        Ok(self.ks.len()? as u64)
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader(&self.ks)))
    }
    fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
        let mut b = self.db.batch();
        for k in keys {
            b.remove(&self.ks, *k);
        }
        Ok(b.commit()?)
    }
    fn compact(&mut self) -> Result<Res<()>, String> {
        Ok(self.ks.major_compact().map_err(Into::into))
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        Ok((|| -> Res<()> {
            let it = if prefix.is_empty() {
                self.ks.iter()
            } else {
                self.ks.prefix(prefix)
            };
            for g in it {
                let (k, v) = g.into_inner()?;
                f(&k, &v);
            }
            Ok(())
        })())
    }
}

// ---------------------------------------------------------------- sled

struct Sled(sled::Db);

impl Sled {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        Ok(Box::new(Sled(sled::Config::new().path(dir).open()?)))
    }
}

struct SledReader<'a>(&'a sled::Db);
impl Reader for SledReader<'_> {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.0.get(key)?.map(|v| v.len()))
    }
}

impl Store for Sled {
    fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
        let mut b = sled::Batch::default();
        for (k, v) in recs {
            b.insert(k.as_slice(), v.as_slice());
        }
        Ok(self.0.apply_batch(b)?)
    }
    fn sync(&self) -> Res<()> {
        self.0.flush()?;
        Ok(())
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.insert(key, value)?;
        self.sync()
    }
    fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
        self.load_chunk(recs)?;
        self.sync()
    }
    fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.0.insert(key, value)?;
        Ok(())
    }
    fn len(&self) -> Res<u64> {
        Ok(self.0.len() as u64)
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        Ok(Box::new(SledReader(&self.0)))
    }
    fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
        let mut b = sled::Batch::default();
        for k in keys {
            b.remove(*k);
        }
        Ok(self.0.apply_batch(b)?)
    }
    fn compact(&mut self) -> Result<Res<()>, String> {
        Err("sled 0.34 has no compaction call (its page GC runs in the background)".into())
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        Ok((|| -> Res<()> {
            let it = if prefix.is_empty() {
                self.0.iter()
            } else {
                self.0.scan_prefix(prefix)
            };
            for item in it {
                let (k, v) = item?;
                f(&k, &v);
            }
            Ok(())
        })())
    }
}

// ---------------------------------------------------------------- LMDB (heed)

type HeedDb = heed::Database<heed::types::Bytes, heed::types::Bytes>;

struct Lmdb {
    env: heed::Env,
    db: HeedDb,
    dir: PathBuf,
    copy_size: Option<u64>,
}

impl Lmdb {
    fn open(dir: &Path) -> Res<Box<dyn Store>> {
        std::fs::create_dir_all(dir)?;
        // SAFETY: the environment is opened once per path in this process and
        // the file is not modified by anything else while it is open.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .map_size(16 << 30)
                .max_dbs(1)
                .max_readers(256)
                .open(dir)?
        };
        let mut wtxn = env.write_txn()?;
        let db: HeedDb = env.create_database(&mut wtxn, None)?;
        wtxn.commit()?;
        Ok(Box::new(Lmdb {
            env,
            db,
            dir: dir.to_path_buf(),
            copy_size: None,
        }))
    }
}

struct LmdbReader<'a> {
    txn: heed::RoTxn<'a, heed::WithTls>,
    db: HeedDb,
}
impl Reader for LmdbReader<'_> {
    fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
        Ok(self.db.get(&self.txn, key)?.map(<[u8]>::len))
    }
}

impl Store for Lmdb {
    fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
        let mut w = self.env.write_txn()?;
        for (k, v) in recs {
            self.db.put(&mut w, k, v)?;
        }
        Ok(w.commit()?)
    }
    fn sync(&self) -> Res<()> {
        Ok(self.env.force_sync()?)
    }
    fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
        let mut w = self.env.write_txn()?;
        self.db.put(&mut w, key, value)?;
        Ok(w.commit()?)
    }
    fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
        self.load_chunk(recs)
    }
    fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
        self.put_durable(key, value)
    }
    fn len(&self) -> Res<u64> {
        let r = self.env.read_txn()?;
        Ok(self.db.len(&r)?)
    }
    fn reader(&self) -> Res<Box<dyn Reader + '_>> {
        Ok(Box::new(LmdbReader {
            txn: self.env.read_txn()?,
            db: self.db,
        }))
    }
    fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
        let mut w = self.env.write_txn()?;
        for k in keys {
            self.db.delete(&mut w, k)?;
        }
        Ok(w.commit()?)
    }
    fn compact(&mut self) -> Result<Res<()>, String> {
        let target = self.dir.join("compacted.mdb");
        let _ = std::fs::remove_file(&target);
        Ok((|| -> Res<()> {
            let f = self
                .env
                .copy_to_path(&target, heed::CompactionOption::Enabled)?;
            f.sync_all()?;
            self.copy_size = Some(crate::sys::disk_usage(&target));
            std::fs::remove_file(&target)?;
            Ok(())
        })())
    }
    fn compacted_size(&self) -> Option<u64> {
        self.copy_size
    }
    fn set_nosync(&self, on: bool) -> Res<()> {
        let mode = if on {
            heed::FlagSetMode::Enable
        } else {
            heed::FlagSetMode::Disable
        };
        // SAFETY: no write transaction is open while the flag changes.
        unsafe { self.env.set_flags(heed::EnvFlags::NO_SYNC, mode)? };
        if !on {
            self.env.force_sync()?;
        }
        Ok(())
    }
    fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
        Ok((|| -> Res<()> {
            let r = self.env.read_txn()?;
            if prefix.is_empty() {
                for item in self.db.iter(&r)? {
                    let (k, v) = item?;
                    f(k, v);
                }
            } else {
                for item in self.db.prefix_iter(&r, prefix)? {
                    let (k, v) = item?;
                    f(k, v);
                }
            }
            Ok(())
        })())
    }
}

// ---------------------------------------------------------------- RocksDB

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;

    pub struct Rocks(rocksdb::DB);

    impl Rocks {
        pub fn open(dir: &Path) -> Res<Box<dyn Store>> {
            let mut o = rocksdb::Options::default();
            o.create_if_missing(true);
            Ok(Box::new(Rocks(rocksdb::DB::open(&o, dir)?)))
        }
        fn wo(sync: bool) -> rocksdb::WriteOptions {
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(sync);
            w
        }
        fn batch(&self, recs: &[Rec], sync: bool) -> Res<()> {
            let mut b = rocksdb::WriteBatch::default();
            for (k, v) in recs {
                b.put(k, v);
            }
            Ok(self.0.write_opt(b, &Self::wo(sync))?)
        }
    }

    struct RocksReader<'a>(&'a rocksdb::DB);
    impl Reader for RocksReader<'_> {
        fn get(&mut self, key: &[u8]) -> Res<Option<usize>> {
            Ok(self.0.get_pinned(key)?.map(|v| v.len()))
        }
    }

    impl Store for Rocks {
        fn load_chunk(&self, recs: &[Rec]) -> Res<()> {
            self.batch(recs, false)
        }
        fn sync(&self) -> Res<()> {
            Ok(self.0.flush_wal(true)?)
        }
        fn put_durable(&self, key: &[u8], value: &[u8]) -> Res<()> {
            Ok(self.0.put_opt(key, value, &Self::wo(true))?)
        }
        fn batch_durable(&self, recs: &[Rec]) -> Res<()> {
            self.batch(recs, true)
        }
        fn put_nosync(&self, key: &[u8], value: &[u8]) -> Res<()> {
            Ok(self.0.put_opt(key, value, &Self::wo(false))?)
        }
        fn len(&self) -> Res<u64> {
            Ok(self.0.iterator(rocksdb::IteratorMode::Start).count() as u64)
        }
        fn reader(&self) -> Res<Box<dyn Reader + '_>> {
            Ok(Box::new(RocksReader(&self.0)))
        }
        fn remove_chunk(&self, keys: &[&[u8]]) -> Res<()> {
            let mut b = rocksdb::WriteBatch::default();
            for k in keys {
                b.delete(k);
            }
            Ok(self.0.write_opt(b, &Self::wo(false))?)
        }
        fn compact(&mut self) -> Result<Res<()>, String> {
            self.0.compact_range::<&[u8], &[u8]>(None, None);
            Ok(Ok(()))
        }
        fn scan(&self, prefix: &[u8], f: &mut dyn FnMut(&[u8], &[u8])) -> Result<Res<()>, String> {
            Ok((|| -> Res<()> {
                let mut it = self.0.raw_iterator();
                if prefix.is_empty() {
                    it.seek_to_first();
                } else {
                    it.seek(prefix);
                }
                while it.valid() {
                    let (Some(k), Some(v)) = (it.key(), it.value()) else {
                        break;
                    };
                    if !k.starts_with(prefix) {
                        break;
                    }
                    f(k, v);
                    it.next();
                }
                Ok(it.status()?)
            })())
        }
    }
}
