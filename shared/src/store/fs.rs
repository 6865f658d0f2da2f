//! [`FsStore`]: a local directory with the S3 key layout.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectMeta, ObjectStore, PutOutcome, SwapOutcome};
use super::{Result, StoreError};
use crate::location::Location;

/// Temporary files start with this; listings skip them.
const TMP_PREFIX: &str = ".fanout-tmp-";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A local directory as an object store.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    fn path(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|s| s == ".." || s == "." || s.starts_with(TMP_PREFIX))
            || key.contains('\0');
        if bad {
            return Err(StoreError::Request {
                op,
                key: key.to_string(),
                message: "this key cannot be stored in a local directory (empty, absolute, `.`/`..` segment or NUL)".into(),
                retryable: false,
                source: None,
            });
        }
        Ok(self.root.join(key))
    }

    fn io_error(op: &'static str, key: &str, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound && matches!(op, "get" | "get_range") {
            return StoreError::NotFound {
                key: key.to_string(),
            };
        }
        let retryable = matches!(
            e.kind(),
            std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::WouldBlock
        );
        StoreError::Request {
            op,
            key: key.to_string(),
            message: e.to_string(),
            retryable,
            source: Some(Box::new(e)),
        }
    }

    fn meta(key: String, m: &std::fs::Metadata) -> ObjectMeta {
        let nanos = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        ObjectMeta {
            key,
            size: m.len(),
            etag: format!("{:x}-{:x}", m.len(), nanos),
        }
    }

    /// Copies the local file `from` to `target`: into a temporary file beside it, synced,
    /// then renamed in place (durable before it is visible, as every write of this store).
    fn copy_in(&self, from: &Path, target: &Path) -> std::io::Result<()> {
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let copied = std::fs::copy(from, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_data())
            .and_then(|()| std::fs::rename(&tmp, target));
        copied.inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    fn write_tmp(&self, target: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
        Ok(tmp)
    }
}

impl FsStore {
    /// Bytes `range` of the file; with `etag`, only if the opened file is that version.
    /// The check is made on the open handle: a file replaced afterwards (an atomic rename,
    /// as every writer of this store does) leaves the handle on the checked version.
    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<String>,
    ) -> Result<Bytes> {
        let path = self.path("get_range", key)?;
        let k = key.to_string();
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<Pinned> {
            let mut f = std::fs::File::open(&path)?;
            let m = f.metadata()?;
            if let Some(expected) = etag {
                let found = Self::meta(String::new(), &m).etag;
                if found != expected {
                    return Ok(Pinned::Changed { expected, found });
                }
            }
            let end = range.end.min(m.len());
            if range.start >= end {
                return Ok(Pinned::Bytes(Bytes::new()));
            }
            f.seek(SeekFrom::Start(range.start))?;
            let mut buf = vec![0u8; (end - range.start) as usize];
            f.read_exact(&mut buf)?;
            Ok(Pinned::Bytes(Bytes::from(buf)))
        })
        .await
        .map_err(|e| blocking_task_failed("get_range", key, e))?
        .map_err(|e| Self::io_error("get_range", &k, e))?;
        match read {
            Pinned::Bytes(b) => Ok(b),
            Pinned::Changed { expected, found } => Err(StoreError::Changed {
                key: k,
                expected,
                found: Some(found),
            }),
        }
    }
}

/// The lock file of a directory's compare-and-swap writes (named so listings skip it).
const SWAP_LOCK: &str = ".fanout-tmp-swap-lock";

/// The least step between the modification times of two versions a swap writes: a file
/// system's timestamps may be coarser than nanoseconds (a clock tick of a few ms).
const SWAP_MTIME_STEP: std::time::Duration = std::time::Duration::from_millis(2);

impl FsStore {
    /// The compare-and-swap of [`ObjectStore::put_if_match`], under an exclusive lock of
    /// the directory's lock file (`flock`, so other processes are excluded too). The new
    /// version's modification time is set past the old one's: the tag (size and time) of
    /// every version differs from the one it replaced even with the same size within one
    /// clock tick, so a holder of a stale tag can never swap.
    fn swap_blocking(&self, path: &Path, data: &[u8], etag: &str) -> std::io::Result<SwapOutcome> {
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(SWAP_LOCK))?;
        lock.lock()?;
        let current = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(SwapOutcome::Changed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SwapOutcome::Changed),
            Err(e) => return Err(e),
        };
        if Self::meta(String::new(), &current).etag != etag {
            return Ok(SwapOutcome::Changed);
        }
        let tmp = self.write_tmp(path, data)?;
        let stamped = (|| {
            let after = current.modified()? + SWAP_MTIME_STEP;
            let f = std::fs::OpenOptions::new().write(true).open(&tmp)?;
            f.set_modified(after.max(std::time::SystemTime::now()))?;
            let etag = Self::meta(String::new(), &f.metadata()?).etag;
            std::fs::rename(&tmp, path)?;
            Ok(etag)
        })();
        match stamped {
            Ok(etag) => Ok(SwapOutcome::Replaced { etag }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// What a pinned read of a file found.
enum Pinned {
    Bytes(Bytes),
    Changed { expected: String, found: String },
}

/// A blocking file task that panicked or was cancelled (not an I/O error of the file).
fn blocking_task_failed(op: &'static str, key: &str, e: tokio::task::JoinError) -> StoreError {
    StoreError::Request {
        op,
        key: key.to_string(),
        message: e.to_string(),
        retryable: false,
        source: Some(Box::new(e)),
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let key = path
            .strip_prefix(root)
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        // Prune directories that cannot hold a match.
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            let m = std::fs::metadata(&path)?;
            if m.is_file() {
                out.push(FsStore::meta(key, &m));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsStore {
    fn describe(&self) -> String {
        let abs = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!(
            "file://{}/",
            abs.display().to_string().trim_end_matches('/')
        )
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let p2 = prefix.clone();
        let mut out = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &p2, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| blocking_task_failed("list", &prefix, e))?
        .map_err(|e| Self::io_error("list", &prefix, e))?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path("head", key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(Self::meta(key.to_string(), &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io_error("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path("get", key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| Self::io_error("get", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read_range(key, range, None).await
    }

    async fn get_range_if(&self, key: &str, range: Range<u64>, etag: &str) -> Result<Bytes> {
        self.read_range(key, range, Some(etag.to_string())).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path("put", key)?;
        let this = self.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let tmp = this.write_tmp(&path, &data)?;
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        })
        .await
        .map_err(|e| blocking_task_failed("put", key, e))?
        .map_err(|e| Self::io_error("put", &k, e))
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<()> {
        let path = self.path("put", key)?;
        let source = source.to_path_buf();
        let this = self.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // Durable before it is visible, as every put: then moved in place when the
            // staging folder is on the same file system, copied otherwise.
            std::fs::File::open(&source)?.sync_data()?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            if std::fs::rename(&source, &path).is_ok() {
                return Ok(());
            }
            this.copy_in(&source, &path)
        })
        .await
        .map_err(|e| blocking_task_failed("put", key, e))?
        .map_err(|e| Self::io_error("put", &k, e))
    }

    async fn copy_from(&self, source: &Location, key: &str) -> Result<()> {
        let Location::Local(from) = source else {
            return Err(StoreError::Request {
                op: "copy",
                key: key.to_string(),
                message: format!("a local folder cannot copy from `{source}`"),
                retryable: false,
                source: None,
            });
        };
        let path = self.path("copy", key)?;
        let from = from.clone();
        let this = self.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> { this.copy_in(&from, &path) })
            .await
            .map_err(|e| blocking_task_failed("copy", key, e))?
            .map_err(|e| Self::io_error("copy", &k, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        let path = self.path("put_if_absent", key)?;
        let this = self.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<PutOutcome> {
            let tmp = this.write_tmp(&path, &data)?;
            // A hard link fails if the target exists: an atomic create-if-absent of complete bytes.
            let outcome = match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(PutOutcome::Created),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&tmp);
            outcome
        })
        .await
        .map_err(|e| blocking_task_failed("put_if_absent", key, e))?
        .map_err(|e| Self::io_error("put_if_absent", &k, e))
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<SwapOutcome> {
        let path = self.path("put_if_match", key)?;
        let this = self.clone();
        let (k, etag) = (key.to_string(), etag.to_string());
        tokio::task::spawn_blocking(move || this.swap_blocking(&path, &data, &etag))
            .await
            .map_err(|e| blocking_task_failed("put_if_match", key, e))?
            .map_err(|e| Self::io_error("put_if_match", &k, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path("delete", key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io_error("delete", key, e)),
        }
    }
}
