//! Reading and writing a job's records: JSON with a retried read, and the loaders every
//! use case shares (spec, plan, commit records, manifest).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::layout;
use super::records::{AggregateResult, ChunkRecord, Manifest, PlanShard, PlanSummary};
use crate::ids::{ChunkId, JobId};
use crate::location::Location;
use crate::plan::Chunk;
use crate::spec::JobSpec;
use crate::store::{ObjectStore, StoreError};
use crate::{Error, Result};

/// Concurrent record reads (S3 GETs) when a use case reads every commit record.
pub const READ_CONCURRENCY: usize = 32;

/// Tries of a record read ([`get_json`], [`get_json_opt`]) that fails with a retryable
/// error, and the wait before the second (doubled before each next).
pub const RECORD_READ_TRIES: u32 = 3;
const RECORD_READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// Reads and parses a JSON record.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<T> {
    let bytes = get_record(store, key).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::unreadable_record(format!("{}{key}", store.describe()), e))
}

/// Reads a small record (plan, chunk and failure records, specs, manifests), trying again
/// on a retryable error (a throttled or unavailable store): a reducer reads one record per
/// chunk, and one transient error among thousands of reads should not fail the job.
async fn get_record(store: &dyn ObjectStore, key: &str) -> Result<Bytes, StoreError> {
    retried(key, || store.get(key)).await
}

/// An object's metadata, trying again on a retryable error as record reads do: the
/// reducer HEADs every output file before it lists them.
pub async fn head_retried(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<crate::store::ObjectMeta>, StoreError> {
    retried(key, || store.head(key)).await
}

/// `call`, tried up to [`RECORD_READ_TRIES`] times while it fails with a retryable error.
async fn retried<T, F, Fut>(key: &str, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut wait = RECORD_READ_BACKOFF;
    let mut tries = 1;
    loop {
        match call().await {
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

/// Reads and parses a JSON record, `None` when absent.
pub async fn get_json_opt<T: serde::de::DeserializeOwned>(
    store: &dyn ObjectStore,
    key: &str,
) -> Result<Option<T>> {
    match get_record(store, key).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::unreadable_record(format!("{}{key}", store.describe()), e)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Serializes to compact JSON with a trailing newline (plan shards: large, machine-read).
pub fn to_compact_json_bytes<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bytes> {
    let mut v = serde_json::to_vec(value).map_err(|source| Error::Serialize { what, source })?;
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// Serializes to pretty JSON with a trailing newline (stable bytes for the same value).
pub fn to_json_bytes<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Bytes> {
    let mut v =
        serde_json::to_vec_pretty(value).map_err(|source| Error::Serialize { what, source })?;
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// Reads a planned job's resolved spec (`spec.json`), validated again as any spec is.
pub async fn load_spec(
    work_store: &dyn ObjectStore,
    work: &Location,
    job_id: &JobId,
) -> Result<JobSpec> {
    let key = layout::spec(job_id);
    let mut resolved: serde_json::Value = get_json(work_store, &key).await?;
    // Stored before the compaction stage existed (every spec stored since names its
    // `target_file_size`): the job keeps the layout it was planned with, no stage.
    if let Some(output) = resolved.get_mut("output").and_then(|o| o.as_object_mut()) {
        output
            .entry("target_file_size")
            .or_insert_with(|| serde_json::json!("off"));
    }
    Ok(JobSpec::parse(
        &format!("{work}{key}"),
        &resolved.to_string(),
    )?)
}

/// Reads a planned job: its plan summary, resolved spec and chunks.
pub async fn load_job(
    work_store: &dyn ObjectStore,
    work: &Location,
    job_id: &JobId,
) -> Result<(PlanSummary, JobSpec, Vec<Chunk>)> {
    let summary: PlanSummary = get_json(work_store, &layout::plan_summary(job_id)).await?;
    let spec = load_spec(work_store, work, job_id).await?;
    let chunks = load_plan(work_store, &summary).await?;
    Ok((summary, spec, chunks))
}

/// Reads every shard of a plan.
pub async fn load_plan(work: &dyn ObjectStore, summary: &PlanSummary) -> Result<Vec<Chunk>> {
    let mut chunks = Vec::with_capacity(summary.chunks as usize);
    for s in 0..summary.shards {
        let shard: PlanShard = get_json(work, &layout::plan_shard(&summary.job_id, s)).await?;
        chunks.extend(shard.chunks);
    }
    if chunks.len() as u64 != summary.chunks {
        return Err(Error::record(
            layout::plan_summary(&summary.job_id),
            format!(
                "the plan lists {} chunks but its shards hold {}",
                summary.chunks,
                chunks.len()
            ),
        ));
    }
    Ok(chunks)
}

/// Ids of the chunks already committed.
pub async fn committed_ids(work: &dyn ObjectStore, job_id: &JobId) -> Result<HashSet<ChunkId>> {
    ids_under(work, &layout::chunks(job_id)).await
}

/// The ids of the records `<prefix><id>.json` (commit records of chunks or of compaction
/// bins, bin plans).
pub async fn ids_under(work: &dyn ObjectStore, prefix: &str) -> Result<HashSet<ChunkId>> {
    Ok(work
        .list(prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            let id = o.key.strip_prefix(prefix)?.strip_suffix(".json")?;
            // A key that is no id is no record of this protocol.
            ChunkId::parse(id).ok()
        })
        .collect())
}

/// The keys of a job's commit records, as listed (any order).
pub async fn chunk_record_keys(store: &dyn ObjectStore, job_id: &JobId) -> Result<Vec<String>> {
    Ok(store
        .list(&layout::chunks(job_id))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect())
}

/// Reads every commit record of a job, in plan order.
pub async fn chunk_records(
    store: &Arc<dyn ObjectStore>,
    job_id: &JobId,
) -> Result<Vec<ChunkRecord>> {
    let keys = chunk_record_keys(store.as_ref(), job_id).await?;
    let mut records: Vec<ChunkRecord> = stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            async move { get_json::<ChunkRecord>(store.as_ref(), &k).await }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    records.sort_by_key(|r| r.index);
    Ok(records)
}

/// Reads a job's manifest, `None` before the job is finalized.
pub async fn read_manifest_opt(
    store: &dyn ObjectStore,
    job_id: &JobId,
) -> Result<Option<Manifest>> {
    get_json_opt(store, &layout::manifest(job_id)).await
}

/// The first `limit` rows of a job's aggregate table, as JSON rows (see
/// [`crate::aggregate::to_json_rows`]): from `aggregates.json` when it was written, else
/// from the first row groups of `aggregates.parquet` (the whole file is fetched: a reader
/// showing a large aggregate, not the reducer).
pub async fn read_aggregate_rows(
    store: &dyn ObjectStore,
    aggregate: &AggregateResult,
    limit: usize,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    if let Some(key) = &aggregate.json {
        let mut rows: Vec<serde_json::Map<String, serde_json::Value>> =
            get_json(store, key).await?;
        rows.truncate(limit);
        return Ok(rows);
    }
    let key = &aggregate.parquet.key;
    let bytes = get_record(store, key).await?;
    let unreadable = |e: parquet::errors::ParquetError| Error::Input {
        object: format!("{}{key}", store.describe()),
        message: format!("reading the aggregate table: {e}"),
        source: Some(Box::new(e)),
    };
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(unreadable)?
        .with_batch_size(limit.clamp(1, 8192))
        .with_limit(limit)
        .build()
        .map_err(unreadable)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(e.into()))?;
        rows.extend(crate::aggregate::to_json_rows(&batch));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsStore, ObjectMeta, PutOutcome, StoreError};
    use async_trait::async_trait;
    use std::ops::Range;
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
        async fn list(&self, prefix: &str) -> crate::store::Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn head(&self, key: &str) -> crate::store::Result<Option<ObjectMeta>> {
            self.inner.head(key).await
        }
        async fn get(&self, key: &str) -> crate::store::Result<Bytes> {
            if self.gets.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(StoreError::Request {
                    op: "get",
                    key: key.into(),
                    message: "503 SlowDown".into(),
                    retryable: self.retryable,
                    source: None,
                });
            }
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> crate::store::Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn put(&self, key: &str, data: Bytes) -> crate::store::Result<()> {
            self.inner.put(key, data).await
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> crate::store::Result<PutOutcome> {
            self.inner.put_if_absent(key, data).await
        }
        async fn delete(&self, key: &str) -> crate::store::Result<()> {
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
