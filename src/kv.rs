//! The key/value surface shared by [`Emdb`](crate::Emdb) and
//! [`Namespace`](crate::Namespace) (and, with `async`, by `AsyncEmdb` and
//! `AsyncNamespace`): written once, instantiated for each handle. A handle
//! provides `engine()` and `ns()` (its namespace id); for `Emdb` the id is
//! the constant 0, so its calls cost what they did before namespaces.

/// The blocking key/value calls for `$ty`, whose key space `$what` names.
macro_rules! key_value_api {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("Inserts or silently replaces `key` in ", $what, ". Returns once the")]
            /// record is in the shard's tail buffer (durable with
            /// `FlushPolicy::WriteThrough`); call `flush` to make it durable.
            pub fn insert<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(
                &self,
                key: K,
                value: V,
            ) -> $crate::error::Result<()> {
                let (k, v) = (key.into(), value.into());
                $crate::engine::block_on(self.engine().insert(self.ns(), &k, &v))
            }

            /// Inserts every pair as one atomic batch: after a crash it is
            /// all there or not there. Later pairs with the same key win.
            pub fn insert_many<I, K, V>(&self, items: I) -> $crate::error::Result<()>
            where
                I: IntoIterator<Item = (K, V)>,
                K: AsRef<[u8]>,
                V: AsRef<[u8]>,
            {
                let items: Vec<(K, V)> = items.into_iter().collect();
                $crate::engine::block_on(self.engine().insert_many(self.ns(), &items))
            }

            /// The value of `key`, copied.
            pub fn get<Q: AsRef<[u8]>>(&self, key: Q) -> $crate::error::Result<Option<Vec<u8>>> {
                self.engine().get(self.ns(), key.as_ref())
            }

            /// The value of `key` without copying it out of the file mapping.
            pub fn get_zerocopy<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> $crate::error::Result<Option<$crate::value::ValueRef<'_>>> {
                self.engine().get_ref(self.ns(), key.as_ref())
            }

            /// Removes `key`; returns its previous value.
            pub fn remove<Q: AsRef<[u8]>>(&self, key: Q) -> $crate::error::Result<Option<Vec<u8>>> {
                $crate::engine::block_on(self.engine().remove(self.ns(), key.as_ref()))
            }

            /// Whether `key` has a value.
            pub fn contains_key<Q: AsRef<[u8]>>(&self, key: Q) -> $crate::error::Result<bool> {
                self.engine().contains(self.ns(), key.as_ref())
            }

            #[doc = concat!("Live keys in ", $what, ".")]
            pub fn len(&self) -> $crate::error::Result<usize> {
                Ok(self.engine().len(self.ns()))
            }

            #[doc = concat!("Whether ", $what, " is empty.")]
            pub fn is_empty(&self) -> $crate::error::Result<bool> {
                Ok(self.engine().len(self.ns()) == 0)
            }

            #[doc = concat!("Removes every key of ", $what, " (atomically, and durably after")]
            /// the next flush), in time proportional to its size.
            pub fn clear(&self) -> $crate::error::Result<()> {
                $crate::engine::block_on(self.engine().clear(self.ns()))
            }

            #[doc = concat!("Every `(key, value)` of ", $what, ", lazily, as of this call (a")]
            /// point-in-time snapshot), in no particular order.
            pub fn iter(&self) -> $crate::error::Result<$crate::iter::EmdbIter> {
                let ns = self.ns();
                Ok($crate::iter::EmdbIter::new(self.engine().snapshot(ns), ns))
            }

            /// Every key, as `iter` does.
            pub fn keys(&self) -> $crate::error::Result<$crate::iter::EmdbKeyIter> {
                let ns = self.ns();
                Ok($crate::iter::EmdbKeyIter::new(
                    self.engine().snapshot(ns),
                    ns,
                ))
            }

            #[doc = concat!("Every `(key, value)` of ", $what, " with its key in `range`, in")]
            /// ascending key order, read at one point in time (every
            /// shard's lock is held while the result is read: writers wait
            /// about a microsecond per key, so use `range_iter` for large
            /// ranges). Expired records are left out. `Error::InvalidConfig`
            /// unless the database was opened with `enable_range_scans(true)`.
            pub fn range<R: ::std::ops::RangeBounds<Vec<u8>>>(
                &self,
                range: R,
            ) -> $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                self.engine().range_all(self.ns(), $crate::range::owned_bounds(&range))
            }

            /// Every `(key, value)` whose key starts with `prefix`, as `range`.
            pub fn range_prefix<Q: AsRef<[u8]>>(
                &self,
                prefix: Q,
            ) -> $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let bounds = $crate::engine::range::prefix_bounds(prefix.as_ref());
                self.engine().range_all(self.ns(), bounds)
            }

            /// The records of `range` in ascending key order, lazily; see
            /// [`EmdbRangeIter`]($crate::EmdbRangeIter) for what a concurrent
            /// write may show. `Error::InvalidConfig` without range scans.
            pub fn range_iter<R: ::std::ops::RangeBounds<Vec<u8>>>(
                &self,
                range: R,
            ) -> $crate::error::Result<$crate::EmdbRangeIter> {
                self.range_iter_of($crate::range::owned_bounds(&range))
            }

            fn range_iter_of(
                &self,
                bounds: (::std::ops::Bound<Vec<u8>>, ::std::ops::Bound<Vec<u8>>),
            ) -> $crate::error::Result<$crate::EmdbRangeIter> {
                $crate::EmdbRangeIter::new(self.engine().state(), self.ns(), bounds)
            }

            /// The records whose key starts with `prefix`, as `range_iter`.
            pub fn range_prefix_iter<Q: AsRef<[u8]>>(
                &self,
                prefix: Q,
            ) -> $crate::error::Result<$crate::EmdbRangeIter> {
                self.range_iter_of($crate::engine::range::prefix_bounds(prefix.as_ref()))
            }

            /// The records from `key` on (inclusive), as `range_iter`.
            pub fn iter_from<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> $crate::error::Result<$crate::EmdbRangeIter> {
                let from = ::std::ops::Bound::Included(key.as_ref().to_vec());
                self.range_iter_of((from, ::std::ops::Bound::Unbounded))
            }

            /// The records after `key` (exclusive), as `range_iter`.
            pub fn iter_after<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> $crate::error::Result<$crate::EmdbRangeIter> {
                let from = ::std::ops::Bound::Excluded(key.as_ref().to_vec());
                self.range_iter_of((from, ::std::ops::Bound::Unbounded))
            }

            $crate::kv::range_cursor_api!(
                "Beyond the API contract. `Error::InvalidConfig` without range scans."
            );

            #[doc = concat!("Runs `f` as a transaction on ", $what, ": its reads see its own")]
            /// staged writes; if `f` returns `Ok`, the writes commit as one
            /// batch (after a crash all there or none), provided no key it
            /// read changed meanwhile; otherwise `Error::TransactionAborted
            /// ("conflict")` and nothing is written (see `transaction_retry`).
            /// `Err` from `f` discards everything. Transactions are
            /// serializable. Durable on return under
            /// `FlushPolicy::WriteThrough`, else after the next flush.
            pub fn transaction<T, F>(&self, f: F) -> $crate::error::Result<T>
            where
                F: FnOnce(&mut $crate::Transaction<'_>) -> $crate::error::Result<T>,
            {
                $crate::engine::block_on(self.engine().transaction(self.ns(), f))
            }

            /// [`transaction`](Self::transaction), run again (up to `retries`
            /// more times) while its commit fails on a conflict. Beyond the
            /// emdb API.
            pub fn transaction_retry<T, F>(&self, retries: usize, mut f: F) -> $crate::error::Result<T>
            where
                F: FnMut(&mut $crate::Transaction<'_>) -> $crate::error::Result<T>,
            {
                let mut left = retries;
                loop {
                    match $crate::engine::block_on(self.engine().transaction(self.ns(), &mut f)) {
                        Err(e) if left > 0 && $crate::engine::txn::is_conflict(&e) => left -= 1,
                        r => return r,
                    }
                }
            }

            #[doc = concat!("Inserts `key` in ", $what, " with an expiry: `Ttl::After(d)` from now")]
            /// (wall clock), `Ttl::Never`, or `Ttl::Default` (the builder's
            /// `default_ttl`, else none). An expired record is invisible to
            /// every read. `Error::TtlOverflow` if the expiry does not fit.
            #[cfg(feature = "ttl")]
            pub fn insert_with_ttl<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(
                &self,
                key: K,
                value: V,
                ttl: $crate::Ttl,
            ) -> $crate::error::Result<()> {
                let (k, v) = (key.into(), value.into());
                let exp = self.engine().expiry_of(ttl)?;
                $crate::engine::block_on(self.engine().insert_expiring(self.ns(), &k, &v, exp))
            }

            /// When `key` expires, in Unix milliseconds; `None` if it does
            /// not expire or is absent (an expired key is absent).
            #[cfg(feature = "ttl")]
            pub fn expires_at<Q: AsRef<[u8]>>(&self, key: Q) -> $crate::error::Result<Option<u64>> {
                self.engine().expires_at(self.ns(), key.as_ref())
            }

            /// How long `key` has left; `None` if it does not expire or is
            /// absent.
            #[cfg(feature = "ttl")]
            pub fn ttl<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> $crate::error::Result<Option<::std::time::Duration>> {
                let at = self.engine().expires_at(self.ns(), key.as_ref())?;
                let now = $crate::engine::ttl::now_ms();
                Ok(at.map(|t| ::std::time::Duration::from_millis(t.saturating_sub(now))))
            }

            /// Removes the expiry of `key` (the record is written again
            /// without one; durable like any write). False if `key` is
            /// absent, expired, or has no expiry.
            #[cfg(feature = "ttl")]
            pub fn persist<Q: AsRef<[u8]>>(&self, key: Q) -> $crate::error::Result<bool> {
                $crate::engine::block_on(self.engine().persist(self.ns(), key.as_ref()))
            }

            #[doc = concat!("Writes a tombstone for every expired record of ", $what, " and returns")]
            /// how many. It finds them in the in-memory expiry list, without
            /// reading the log. Best effort, as in emdb: an error (a full
            /// disk) stops it early and is not returned; the next flush
            /// reports it.
            #[cfg(feature = "ttl")]
            pub fn sweep_expired(&self) -> usize {
                $crate::engine::block_on(self.engine().sweep_expired(self.ns())).0
            }
        }
    };
}

pub(crate) use key_value_api;

/// `range_cursor` and `range_prefix_cursor`, the same on the sync and the
/// async handles (`$note` ends the first one's doc).
macro_rules! range_cursor_api {
    ($note:literal) => {
        /// The records of `range` in ascending key order, each lent
        /// without a copy until the next one is asked for (see
        /// [`EmdbRangeCursor`]($crate::EmdbRangeCursor)): what
        /// `range_iter` yields, without two allocations per record.
        #[doc = $note]
        pub fn range_cursor<R: ::std::ops::RangeBounds<Vec<u8>>>(
            &self,
            range: R,
        ) -> $crate::error::Result<$crate::EmdbRangeCursor> {
            let bounds = $crate::range::owned_bounds(&range);
            $crate::EmdbRangeCursor::new(self.engine().state(), self.ns(), bounds)
        }

        /// The records whose key starts with `prefix`, as `range_cursor`.
        pub fn range_prefix_cursor<Q: AsRef<[u8]>>(
            &self,
            prefix: Q,
        ) -> $crate::error::Result<$crate::EmdbRangeCursor> {
            let bounds = $crate::engine::range::prefix_bounds(prefix.as_ref());
            $crate::EmdbRangeCursor::new(self.engine().state(), self.ns(), bounds)
        }
    };
}

pub(crate) use range_cursor_api;

/// The async key/value calls for `$ty` (feature `async`), whose key space
/// `$what` names. `$ty` provides `engine()`, `ns()` and `owner()`, an
/// owning `AsyncEmdb` handle that each future keeps.
#[cfg(feature = "async")]
macro_rules! async_key_value_api {
    ($ty:ident, $what:literal) => {
        impl $ty {
            #[doc = concat!("Inserts or silently replaces `key` in ", $what, ", as `Emdb::insert`.")]
            pub fn insert<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(
                &self,
                key: K,
                value: V,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<()>> + Send + 'static
            {
                let (db, ns, k, v) = (self.owner(), self.ns(), key.into(), value.into());
                async move { db.engine().insert(ns, &k, &v).await }
            }

            /// Inserts every pair as one atomic batch, as `Emdb::insert_many`.
            pub fn insert_many<I, K, V>(
                &self,
                items: I,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<()>> + Send + 'static
            where
                I: IntoIterator<Item = (K, V)>,
                K: AsRef<[u8]>,
                V: AsRef<[u8]>,
            {
                let (db, ns) = (self.owner(), self.ns());
                let items: Vec<(Vec<u8>, Vec<u8>)> = items
                    .into_iter()
                    .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
                    .collect();
                async move { db.engine().insert_many(ns, &items).await }
            }

            /// The value of `key`, copied. The read is done when this is called.
            pub fn get<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<Option<Vec<u8>>>>
                   + Send
                   + 'static {
                ::std::future::ready(self.engine().get(self.ns(), key.as_ref()))
            }

            /// Removes `key`; resolves to its previous value.
            pub fn remove<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<Option<Vec<u8>>>>
                   + Send
                   + 'static {
                let (db, ns, k) = (self.owner(), self.ns(), key.as_ref().to_vec());
                async move { db.engine().remove(ns, &k).await }
            }

            /// Whether `key` has a value. The read is done when this is called.
            pub fn contains_key<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<bool>> + Send + 'static
            {
                ::std::future::ready(self.engine().contains(self.ns(), key.as_ref()))
            }

            #[doc = concat!("Live keys in ", $what, ".")]
            pub fn len(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<usize>> + Send + 'static
            {
                ::std::future::ready(Ok(self.engine().len(self.ns())))
            }

            #[doc = concat!("Whether ", $what, " is empty.")]
            pub fn is_empty(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<bool>> + Send + 'static
            {
                ::std::future::ready(Ok(self.engine().len(self.ns()) == 0))
            }

            #[doc = concat!("Removes every key of ", $what, ", as `Emdb::clear`.")]
            pub fn clear(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<()>> + Send + 'static
            {
                let (db, ns) = (self.owner(), self.ns());
                async move { db.engine().clear(ns).await }
            }

            #[doc = concat!("Every `(key, value)` of a point-in-time snapshot of ", $what, ",")]
            /// collected on a thread of its own. For a large key space prefer
            /// `iter_stream`.
            pub fn iter(
                &self,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                let (db, ns) = (self.owner(), self.ns());
                $crate::engine::handoff::offload("emdb-iter", move || {
                    Ok($crate::iter::EmdbIter::new(db.engine().snapshot(ns), ns).collect())
                })
            }

            /// Every key of a point-in-time snapshot, collected on a thread
            /// of its own.
            pub fn keys(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<Vec<Vec<u8>>>>
                   + Send
                   + 'static {
                let (db, ns) = (self.owner(), self.ns());
                $crate::engine::handoff::offload("emdb-keys", move || {
                    Ok($crate::iter::EmdbKeyIter::new(db.engine().snapshot(ns), ns).collect())
                })
            }

            #[doc = concat!("Every `(key, value)` of a point-in-time snapshot of ", $what)]
            /// (taken when this is called), as a stream that reads each
            /// record when it is polled for it: nothing is read ahead, so
            /// memory in flight is one record, and a consumer that stops
            /// polling stops the reading. Dropping the stream releases the
            /// segments it held. It yields to the executor every 64 records.
            pub fn iter_stream(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbStream>>
                   + Send
                   + 'static {
                let ns = self.ns();
                let it = $crate::iter::EmdbIter::new(self.engine().snapshot(ns), ns);
                ::std::future::ready(Ok($crate::EmdbStream::new(it)))
            }

            /// Every key, as `iter_stream` does.
            pub fn keys_stream(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbKeyStream>>
                   + Send
                   + 'static {
                let ns = self.ns();
                let it = $crate::iter::EmdbKeyIter::new(self.engine().snapshot(ns), ns);
                ::std::future::ready(Ok($crate::EmdbKeyStream::new(it)))
            }

            #[doc = concat!("The records of ", $what, " in `range`, ascending, read at one point")]
            /// in time on a thread of their own, as `Emdb::range`.
            pub fn range<R: ::std::ops::RangeBounds<Vec<u8>>>(
                &self,
                range: R,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                self.range_vec_of($crate::range::owned_bounds(&range))
            }

            /// The records whose key starts with `prefix`, as `range`.
            pub fn range_prefix<Q: AsRef<[u8]>>(
                &self,
                prefix: Q,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                self.range_vec_of($crate::engine::range::prefix_bounds(prefix.as_ref()))
            }

            /// Every record from `key` on (inclusive), ascending, as
            /// `range`.
            pub fn iter_from<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                self.range((
                    ::std::ops::Bound::Included(key.as_ref().to_vec()),
                    ::std::ops::Bound::Unbounded,
                ))
            }

            /// Every record after `key` (exclusive), ascending, as `range`.
            pub fn iter_after<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                self.range((
                    ::std::ops::Bound::Excluded(key.as_ref().to_vec()),
                    ::std::ops::Bound::Unbounded,
                ))
            }

            #[doc = concat!("The records of ", $what, " in `range`, ascending, as a stream of")]
            /// [`EmdbRangeIter`]($crate::EmdbRangeIter)'s chunks (see
            /// [`EmdbRangeStream`]($crate::EmdbRangeStream)).
            /// `Error::InvalidConfig` without range scans.
            pub fn range_stream<R: ::std::ops::RangeBounds<Vec<u8>>>(
                &self,
                range: R,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbRangeStream>>
                   + Send
                   + 'static {
                let bounds = $crate::range::owned_bounds(&range);
                ::std::future::ready(self.range_stream_of(bounds))
            }

            /// The records whose key starts with `prefix`, as `range_stream`.
            pub fn range_prefix_stream<Q: AsRef<[u8]>>(
                &self,
                prefix: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbRangeStream>>
                   + Send
                   + 'static {
                let bounds = $crate::engine::range::prefix_bounds(prefix.as_ref());
                ::std::future::ready(self.range_stream_of(bounds))
            }

            /// The records from `key` on (inclusive), as `range_stream`.
            pub fn iter_from_stream<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbRangeStream>>
                   + Send
                   + 'static {
                let from = ::std::ops::Bound::Included(key.as_ref().to_vec());
                ::std::future::ready(self.range_stream_of((from, ::std::ops::Bound::Unbounded)))
            }

            /// The records after `key` (exclusive), as `range_stream`.
            pub fn iter_after_stream<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<$crate::EmdbRangeStream>>
                   + Send
                   + 'static {
                let from = ::std::ops::Bound::Excluded(key.as_ref().to_vec());
                ::std::future::ready(self.range_stream_of((from, ::std::ops::Bound::Unbounded)))
            }

            fn range_vec_of(
                &self,
                bounds: (::std::ops::Bound<Vec<u8>>, ::std::ops::Bound<Vec<u8>>),
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Vec<(Vec<u8>, Vec<u8>)>>,
            > + Send
                   + 'static {
                let (db, ns) = (self.owner(), self.ns());
                $crate::engine::handoff::offload("emdb-range", move || {
                    db.engine().range_all(ns, bounds)
                })
            }

            $crate::kv::range_cursor_api!(
                "Beyond the API contract. On an async handle, `next_record` reads a \
                 chunk inline when the previous one is used up, holding the shard \
                 locks for tens of microseconds (as a range stream's `poll_next` \
                 does); it does no I/O."
            );

            fn range_stream_of(
                &self,
                bounds: (::std::ops::Bound<Vec<u8>>, ::std::ops::Bound<Vec<u8>>),
            ) -> $crate::error::Result<$crate::EmdbRangeStream> {
                let it = $crate::EmdbRangeIter::new(self.engine().state(), self.ns(), bounds)?;
                Ok($crate::EmdbRangeStream::new(it))
            }

            #[doc = concat!("Runs `f` as a transaction on ", $what, ", as `Emdb::transaction`:")]
            /// `f` runs when the future is first polled (its reads are point
            /// reads, on the polling thread), then the commit waits for its
            /// locks (and, under `WriteThrough`, for durability) without
            /// blocking.
            pub fn transaction<T, F>(
                &self,
                f: F,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<T>> + Send + 'static
            where
                F: FnOnce(&mut $crate::Transaction<'_>) -> $crate::error::Result<T> + Send + 'static,
                T: Send + 'static,
            {
                let (db, ns) = (self.owner(), self.ns());
                async move { db.engine().transaction(ns, f).await }
            }

            #[doc = concat!("Inserts `key` in ", $what, " with an expiry, as `Emdb::insert_with_ttl`.")]
            #[cfg(feature = "ttl")]
            pub fn insert_with_ttl<K: Into<Vec<u8>>, V: Into<Vec<u8>>>(
                &self,
                key: K,
                value: V,
                ttl: $crate::Ttl,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<()>> + Send + 'static
            {
                let (db, ns, k, v) = (self.owner(), self.ns(), key.into(), value.into());
                let exp = self.engine().expiry_of(ttl);
                async move { db.engine().insert_expiring(ns, &k, &v, exp?).await }
            }

            /// When `key` expires (Unix ms), as `Emdb::expires_at`. Done
            /// when called.
            #[cfg(feature = "ttl")]
            pub fn expires_at<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<Option<u64>>>
                   + Send
                   + 'static {
                ::std::future::ready(self.engine().expires_at(self.ns(), key.as_ref()))
            }

            /// How long `key` has left, as `Emdb::ttl`. Done when called.
            #[cfg(feature = "ttl")]
            pub fn ttl<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<
                Output = $crate::error::Result<Option<::std::time::Duration>>,
            > + Send
                   + 'static {
                let at = self.engine().expires_at(self.ns(), key.as_ref());
                let now = $crate::engine::ttl::now_ms();
                ::std::future::ready(at.map(|at| {
                    at.map(|t| ::std::time::Duration::from_millis(t.saturating_sub(now)))
                }))
            }

            /// Removes the expiry of `key`, as `Emdb::persist`.
            #[cfg(feature = "ttl")]
            pub fn persist<Q: AsRef<[u8]>>(
                &self,
                key: Q,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<bool>> + Send + 'static
            {
                let (db, ns, k) = (self.owner(), self.ns(), key.as_ref().to_vec());
                async move { db.engine().persist(ns, &k).await }
            }

            #[doc = concat!("Writes a tombstone for every expired record of ", $what, ", as")]
            /// `Emdb::sweep_expired`; resolves to the count (an error that
            /// stops it early is not returned, as in emdb).
            #[cfg(feature = "ttl")]
            pub fn sweep_expired(
                &self,
            ) -> impl ::std::future::Future<Output = $crate::error::Result<usize>> + Send + 'static
            {
                let (db, ns) = (self.owner(), self.ns());
                async move { Ok(db.engine().sweep_expired(ns).await.0) }
            }
        }
    };
}

#[cfg(feature = "async")]
pub(crate) use async_key_value_api;
