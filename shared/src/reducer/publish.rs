//! Staged chunk files moved into the output location when the job finalizes
//! ([`crate::job::publishes_at_finalize`]): a reader listing the output prefix (Athena or
//! Spark over the catalog's table) sees a job's files only once it succeeds, and never
//! those of a job that failed or was abandoned.
//!
//! Idempotent: a file already at its output key with the recorded size is not copied
//! again, so a finalize run again after a crash (or after the staged copies were removed)
//! publishes nothing twice. Files keep their keys (partition path and chunk-derived name),
//! so a published file is byte-identical to what the chunk wrote.

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::Result;
use crate::env::Env;
use crate::ids::JobId;
use crate::job::{
    ManifestFile, READ_CONCURRENCY, chunk_output_location, head_retried, publishes_at_finalize,
};
use crate::location::Location;
use crate::spec::JobSpec;
use crate::store::{DynStore, StoreError};

/// Copies every file of `files` from the job's staging folder to the output location
/// (server-side on S3) unless it is there already (a compacted file written there by its
/// bin); returns how many were copied now.
pub(super) async fn publish(
    env: &Env,
    spec: &JobSpec,
    job_id: &JobId,
    files: &[ManifestFile],
) -> Result<u64> {
    if !publishes_at_finalize(spec) {
        return Ok(0);
    }
    let staged = chunk_output_location(spec, job_id);
    let output = env.store_with(&spec.output.location, &spec.sse)?;
    let files: Vec<(String, u64)> = files
        .iter()
        .map(|f| (f.file.key.clone(), f.file.bytes))
        .collect();
    let copied: Vec<bool> = stream::iter(files)
        .map(|(key, bytes)| publish_one(output.clone(), staged.clone(), key, bytes))
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(copied.into_iter().filter(|c| *c).count() as u64)
}

/// Copies one staged file to its output key unless it is there with `bytes` already;
/// whether it copied. Owned arguments: the stream of copies holds no borrow across awaits.
async fn publish_one(output: DynStore, staged: Location, key: String, bytes: u64) -> Result<bool> {
    let there = head_retried(output.as_ref(), &key).await?;
    if there.is_some_and(|m| m.size == bytes) {
        return Ok(false);
    }
    let source = staged.join(&key);
    match output.copy_from(&source, &key).await {
        Ok(()) => Ok(true),
        // A staged file that is gone is reported by the check that follows, with every
        // other file not as recorded.
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) if e.is_retryable() => {
            output.copy_from(&source, &key).await?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the staged copies once the manifest lists the published files (what is left
/// when this fails, `gc` removes).
pub(super) async fn remove_staged(env: &Env, spec: &JobSpec, job_id: &JobId) -> Result<()> {
    if !publishes_at_finalize(spec) {
        return Ok(());
    }
    let staged = env.store(&chunk_output_location(spec, job_id))?;
    for o in staged.list("").await? {
        staged.delete(&o.key).await?;
    }
    Ok(())
}
