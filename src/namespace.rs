//! `Namespace`: a key space of its own inside one database.

use std::sync::Arc;

use crate::db::Emdb;
use crate::engine::Engine;
use crate::error::Result;

/// A named key space of a database, from [`Emdb::namespace`]. It has the
/// whole key/value and iteration surface of [`Emdb`], over its own keys and
/// its own index (so `len`, `clear` and `iter` cost the size of this
/// namespace, not of the database). Cheap to clone; `Send + Sync`.
///
/// After [`Emdb::drop_namespace`], a handle of the dropped namespace reads
/// nothing and its writes fail with `Error::InvalidInput`; a namespace
/// re-created under the same name is a new, empty one.
pub struct Namespace {
    db: Emdb,
    id: u32,
    name: Arc<str>,
}

impl Clone for Namespace {
    fn clone(&self) -> Self {
        Namespace {
            db: self.db.clone_handle(),
            id: self.id,
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The iterator of [`Namespace::iter`].
pub type NamespaceIter = crate::iter::EmdbIter;
/// The iterator of [`Namespace::keys`].
pub type NamespaceKeyIter = crate::iter::EmdbKeyIter;

/// The lazy range iterator of a [`Namespace`]: an [`EmdbRangeIter`](crate::EmdbRangeIter).
pub type NamespaceRangeIter = crate::range::EmdbRangeIter;

crate::kv::key_value_api!(Namespace, "this namespace");

impl Emdb {
    /// The namespace `name`, created (durably) on first use. Each namespace
    /// has its own key space and index; records flushed into it survive a
    /// crash like any other. A name is 1 to 255 bytes without control
    /// characters; a database holds at most 4,096 named namespaces.
    pub fn namespace(&self, name: impl AsRef<str>) -> Result<Namespace> {
        let name = name.as_ref();
        let id = self.engine().ctx.namespace_id(name)?;
        Ok(Namespace::new(self.clone_handle(), id, name))
    }

    /// Drops namespace `name` and every record in it, durably and
    /// atomically: after a crash it is either whole or gone. A later
    /// [`namespace`](Emdb::namespace) of the same name starts empty; the
    /// old records never come back. Handles of the dropped namespace then
    /// read nothing and refuse writes. Returns false if no namespace has
    /// that name. The default namespace cannot be dropped (`""` is not a
    /// name).
    pub fn drop_namespace(&self, name: impl AsRef<str>) -> Result<bool> {
        self.engine().drop_namespace(name.as_ref())
    }

    /// Every namespace name: `""` (the default namespace) first, then the
    /// named ones in byte order.
    pub fn list_namespaces(&self) -> Result<Vec<String>> {
        Ok(self.engine().ctx.namespace_names())
    }
}

impl Namespace {
    pub(crate) fn new(db: Emdb, id: u32, name: &str) -> Namespace {
        Namespace {
            db,
            id,
            name: name.into(),
        }
    }

    #[inline]
    fn engine(&self) -> &Engine {
        self.db.engine()
    }

    #[inline]
    pub(crate) fn ns(&self) -> u32 {
        self.id
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The async twin of [`Namespace`] (feature `async`), from
/// [`AsyncEmdb::namespace`](crate::AsyncEmdb::namespace): the same calls as
/// `AsyncEmdb`'s key/value and stream calls, over this namespace, with
/// futures that are `Send + 'static`. `Send + Sync + Clone`.
#[cfg(feature = "async")]
#[derive(Clone)]
pub struct AsyncNamespace {
    db: crate::AsyncEmdb,
    id: u32,
    name: Arc<str>,
}

#[cfg(feature = "async")]
impl std::fmt::Debug for AsyncNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "async")]
crate::kv::async_key_value_api!(AsyncNamespace, "this namespace");

#[cfg(feature = "async")]
impl AsyncNamespace {
    pub(crate) fn new(db: crate::AsyncEmdb, id: u32, name: &str) -> AsyncNamespace {
        AsyncNamespace {
            db,
            id,
            name: name.into(),
        }
    }

    #[inline]
    fn engine(&self) -> &Engine {
        self.db.engine()
    }

    #[inline]
    fn owner(&self) -> crate::AsyncEmdb {
        self.db.clone()
    }

    #[inline]
    fn ns(&self) -> u32 {
        self.id
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A blocking handle to the same namespace.
    pub fn sync_handle(&self) -> Namespace {
        Namespace::new(Emdb::from_engine(self.db.engine_arc()), self.id, &self.name)
    }
}
