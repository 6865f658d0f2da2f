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

pub use fs::FsStore;
#[cfg(feature = "aws")]
pub use s3::S3Store;

use crate::location::Location;
use crate::{Error, Result};

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
    /// Writes the object, replacing any previous one, atomically.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Stores the contents of a local file at `key`, replacing it (large outputs are
    /// staged on disk so a worker's memory stays bounded). The file may be moved: the
    /// caller is done with it. The default reads it whole.
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        let data = tokio::fs::read(path).await.map_err(|e| Error::Staging {
            context: format!("reading {}", path.display()),
            source: e,
        })?;
        self.put(key, Bytes::from(data)).await
    }
    /// Writes the object only if no object has the key (S3 `If-None-Match: *`).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome>;
    /// Deletes the object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
}

/// A shared store.
pub type DynStore = Arc<dyn ObjectStore>;

/// Server-side encryption of objects written to S3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sse {
    /// Whatever the bucket's default encryption says.
    #[default]
    BucketDefault,
    /// SSE-S3 (AES256).
    S3,
    /// SSE-KMS with this key id or ARN.
    Kms(String),
}

/// Opens a local store; other schemes need the AWS adapters ([`crate::env::Env`]).
pub fn open(location: &Location, _sse: &Sse) -> Result<DynStore> {
    match location {
        Location::Local(path) => Ok(Arc::new(FsStore::new(path))),
        Location::S3 { .. } => Err(Error::Config(format!(
            "`{location}`: S3 needs the AWS adapters (`Env::aws`); this process runs the embedded default"
        ))),
    }
}

/// Reads and parses a JSON object.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<T> {
    let bytes = get_record(store, key).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::record(format!("{}{key}", store.describe()), e))
}

/// Tries of a record read ([`get_json`], [`get_json_opt`]) that fails with a retryable
/// error, and the wait before the second (doubled before each next).
pub const RECORD_READ_TRIES: u32 = 3;
const RECORD_READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// Reads a small record (plan, chunk and failure records, specs, manifests), trying again
/// on a retryable error (a throttled or unavailable store): a reducer reads one record per
/// chunk, and one transient error among thousands of reads should not fail the job.
async fn get_record(store: &dyn ObjectStore, key: &str) -> Result<Bytes> {
    let mut wait = RECORD_READ_BACKOFF;
    let mut tries = 1;
    loop {
        match store.get(key).await {
            Err(e) if e.is_retryable() && tries < RECORD_READ_TRIES => {
                tracing::debug!(key, error = %e, "record read failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Reads and parses a JSON object, `None` when absent.
pub async fn get_json_opt<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<T>> {
    match get_record(store, key).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::record(format!("{}{key}", store.describe()), e)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Serialises to compact JSON with a trailing newline (plan shards: large, machine-read).
pub fn to_compact_json_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Serialises to pretty JSON with a trailing newline (stable bytes for the same value).
pub fn to_json_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec_pretty(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

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
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A store whose `get` fails `failures` times (retryable or not) before reading.
    #[derive(Debug)]
    struct Flaky {
        inner: FsStore,
        failures: u32,
        retryable: bool,
        gets: AtomicU32,
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            self.inner.head(key).await
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            if self.gets.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(Error::Store {
                    op: "get",
                    key: key.into(),
                    message: "503 SlowDown".into(),
                    retryable: self.retryable,
                    source: None,
                });
            }
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<()> {
            self.inner.put(key, data).await
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
            self.inner.put_if_absent(key, data).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn record_reads_try_again_on_retryable_errors_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flaky = |failures, retryable| Flaky {
            inner: FsStore::new(dir.path()),
            failures,
            retryable,
            gets: AtomicU32::new(0),
        };
        let s = flaky(0, true);
        s.put("r.json", Bytes::from_static(b"{\"n\": 7}\n"))
            .await
            .expect("put");
        let read = |s: Flaky| async move {
            let r = get_json::<serde_json::Value>(&s, "r.json").await;
            (r.map(|v| v["n"].as_i64()), s.gets.load(Ordering::SeqCst))
        };
        let (r, gets) = read(flaky(RECORD_READ_TRIES - 1, true)).await;
        assert_eq!(
            (r.expect("read after retries"), gets),
            (Some(7), RECORD_READ_TRIES)
        );
        let (r, gets) = read(flaky(RECORD_READ_TRIES, true)).await;
        assert!(r.is_err_and(|e| e.is_retryable()));
        assert_eq!(gets, RECORD_READ_TRIES);
        let (r, gets) = read(flaky(1, false)).await;
        assert!(r.is_err());
        assert_eq!(gets, 1, "a permanent error is not tried again");
        let missing = get_json_opt::<serde_json::Value>(&flaky(0, true), "absent.json").await;
        assert!(missing.expect("absent").is_none());
    }
}
