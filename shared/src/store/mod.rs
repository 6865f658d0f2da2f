//! The object store port: keys below a root location.
//!
//! Keys are `/`-separated and relative to the store's root. Adapters: [`FsStore`] (a local
//! directory; writes are atomic renames, create-if-absent is a hard link) and, with the AWS
//! adapters, S3. Wrappers implementing the same trait add cross-cutting behaviour.

mod fs;
#[cfg(feature = "aws")]
mod s3;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::location::Location;

pub use fs::FsStore;
#[cfg(feature = "aws")]
pub use s3::S3Store;

/// A boxed error source kept for `Error::source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in an object store call. The port's own error: it names nothing of
/// the domain, so adapters and wrappers depend only on this module.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store call failed.
    #[error("object store {op} `{key}`: {message}")]
    Request {
        /// The store operation (`get`, `put`, `list`, …).
        op: &'static str,
        /// The key (or prefix) involved.
        key: String,
        /// What failed.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// An object that must exist does not.
    #[error("object `{key}` not found")]
    NotFound {
        /// The missing key.
        key: String,
    },

    /// An object read pinned to a version ([`ObjectStore::get_range_if`]) is now another
    /// version: it was replaced since that version was listed.
    #[error(
        "object `{key}` changed since it was planned (version {expected} planned{}): plan a new job",
        found.as_ref().map(|f| format!(", {f} now")).unwrap_or_default()
    )]
    Changed {
        /// The object's key.
        key: String,
        /// The version the read was pinned to.
        expected: String,
        /// The version found, when the store says (S3 answers a failed `If-Match` without it).
        found: Option<String>,
    },

    /// A local file to be stored ([`ObjectStore::put_file`]) could not be read.
    #[error("local staging: {context}: {source}")]
    Staging {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the call may succeed if tried again (throttling, I/O hiccups, a full disk
    /// of this container that another attempt may not share).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Request { retryable, .. } => *retryable,
            StoreError::NotFound { .. } | StoreError::Changed { .. } => false,
            StoreError::Staging { .. } => true,
        }
    }
}

/// The store port's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Version tag: S3 ETag, or size and modification time for local files.
    pub etag: String,
}

/// Result of a create-if-absent write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// The object already existed; nothing was written.
    AlreadyExists,
}

/// Result of a compare-and-swap write ([`ObjectStore::put_if_match`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapOutcome {
    /// The object was the expected version and is now the new bytes, tagged `etag`.
    Replaced {
        /// The version tag of the object just written.
        etag: String,
    },
    /// The object is absent or another version: nothing was written.
    Changed,
}

/// An object store rooted at a location.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// The root as a URL-like string, for messages.
    fn describe(&self) -> String;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// The object's metadata, or `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;
    /// The whole object.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Bytes `range` of the object; the end is clamped to the object's size.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// Bytes `range` of the object as [`get_range`](Self::get_range), but only of the
    /// version tagged `etag` (an [`ObjectMeta::etag`]): any other version fails with
    /// [`StoreError::Changed`], so the bytes of one planned read never mix two versions.
    /// The default compares a HEAD first, which leaves a window between the two calls;
    /// adapters close it (S3 `If-Match`, a check of the opened file).
    async fn get_range_if(&self, key: &str, range: Range<u64>, etag: &str) -> Result<Bytes> {
        match self.head(key).await? {
            Some(m) if m.etag == etag => self.get_range(key, range).await,
            Some(m) => Err(StoreError::Changed {
                key: key.to_string(),
                expected: etag.to_string(),
                found: Some(m.etag),
            }),
            None => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
        }
    }
    /// Writes the object, replacing any previous one, atomically.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Stores the contents of a local file at `key`, replacing it (large outputs are
    /// staged on disk so a worker's memory stays bounded). The file may be moved: the
    /// caller is done with it. The default reads it whole.
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| StoreError::Staging {
                context: format!("reading {}", path.display()),
                source: e,
            })?;
        self.put(key, Bytes::from(data)).await
    }
    /// Writes the object only if no object has the key (S3 `If-None-Match: *`).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome>;
    /// Replaces the object only if it is still the version tagged `etag` (S3 `If-Match` on
    /// PutObject): a compare-and-swap, atomic against every other `put_if_match` and
    /// `put_if_absent` of the key. Every version written this way gets a tag no earlier
    /// version of the key had, so a swap from a stale tag cannot succeed (no ABA).
    /// The default refuses: a wrapper must forward it, or leases over it cannot work.
    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<SwapOutcome> {
        let _ = (data, etag);
        Err(StoreError::Request {
            op: "put_if_match",
            key: key.to_string(),
            message: format!("{} cannot replace an object conditionally", self.describe()),
            retryable: false,
            source: None,
        })
    }
    /// Objects whose key starts with `prefix` and sorts after `start_after`, sorted by key
    /// (S3 `StartAfter`: the request reads only what is past it). The default lists the
    /// prefix and filters.
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        let mut all = self.list(prefix).await?;
        all.retain(|o| o.key.as_str() > start_after);
        Ok(all)
    }
    /// Deletes the object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Copies the object at `source` (one object's full location) to `key`, replacing it,
    /// without passing its bytes through this process where the store can: S3 copies
    /// server-side from S3 (objects up to 5 GiB), a local folder copies a local file. A
    /// store that cannot copy from `source` says so.
    async fn copy_from(&self, source: &Location, key: &str) -> Result<()> {
        Err(StoreError::Request {
            op: "copy",
            key: key.to_string(),
            message: format!("{} cannot copy from `{source}`", self.describe()),
            retryable: false,
            source: None,
        })
    }
}

/// A shared store.
pub type DynStore = Arc<dyn ObjectStore>;

/// Requests made to an object store, in the classes S3 bills: `get` (GET and HEAD),
/// `put` (PUT, POST, COPY; a multipart upload counts as one), `list`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    /// GET and HEAD requests.
    pub get: u64,
    /// PUT requests.
    pub put: u64,
    /// LIST requests (one per listing; S3 pages 1,000 keys per request).
    pub list: u64,
}

impl std::ops::AddAssign for RequestCounts {
    fn add_assign(&mut self, o: Self) {
        self.get += o.get;
        self.put += o.put;
        self.list += o.list;
    }
}

/// Counts the requests made through the stores it wraps.
#[derive(Debug, Default)]
pub struct RequestCounter {
    get: std::sync::atomic::AtomicU64,
    put: std::sync::atomic::AtomicU64,
    list: std::sync::atomic::AtomicU64,
}

impl RequestCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        use std::sync::atomic::Ordering::Relaxed;
        RequestCounts {
            get: self.get.load(Relaxed),
            put: self.put.load(Relaxed),
            list: self.list.load(Relaxed),
        }
    }

    /// `store`, counted by this counter.
    pub fn wrap(self: &Arc<Self>, store: DynStore) -> DynStore {
        Arc::new(Counted {
            inner: store,
            counter: self.clone(),
        })
    }

    fn add(&self, which: &std::sync::atomic::AtomicU64, n: u64) {
        which.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Counted {
    inner: DynStore,
    counter: Arc<RequestCounter>,
}

#[async_trait]
impl ObjectStore for Counted {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let out = self.inner.list(prefix).await?;
        self.counter
            .add(&self.counter.list, (out.len() as u64).div_ceil(1000).max(1));
        Ok(out)
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.counter.add(&self.counter.get, 1);
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.counter.add(&self.counter.get, 1);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.counter.add(&self.counter.get, 1);
        self.inner.get_range(key, range).await
    }
    async fn get_range_if(&self, key: &str, range: Range<u64>, etag: &str) -> Result<Bytes> {
        self.counter.add(&self.counter.get, 1);
        self.inner.get_range_if(key, range, etag).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.counter.add(&self.counter.put, 1);
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        self.counter.add(&self.counter.put, 1);
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        self.counter.add(&self.counter.put, 1);
        self.inner.put_if_absent(key, data).await
    }
    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<SwapOutcome> {
        self.counter.add(&self.counter.put, 1);
        self.inner.put_if_match(key, data, etag).await
    }
    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<ObjectMeta>> {
        let out = self.inner.list_after(prefix, start_after).await?;
        self.counter
            .add(&self.counter.list, (out.len() as u64).div_ceil(1000).max(1));
        Ok(out)
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn copy_from(&self, source: &Location, key: &str) -> Result<()> {
        self.counter.add(&self.counter.put, 1);
        self.inner.copy_from(source, key).await
    }
}
