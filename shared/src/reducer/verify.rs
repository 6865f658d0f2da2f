//! Before a manifest is written: every file the commit records list exists, with the size
//! recorded.
//!
//! A commit record is written after its chunk's files, so on its own it never names a file
//! that was not stored. But files can go afterwards while the record stays (a `gc`, a
//! lifecycle rule, a hand, a worker still committing while its job was collected), and a
//! manifest is the one way to read a job's output: one listing a file that is gone would
//! make every reader fail, or silently miss rows. One HEAD per file, at most
//! [`crate::job::READ_CONCURRENCY`] at a time and tried again on a retryable error, as the
//! records themselves are read.

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::env::Env;
use crate::error::ChangedFile;
use crate::ids::{ChunkId, JobId};
use crate::job::{ChunkRecord, ManifestFile, READ_CONCURRENCY, head_retried};
use crate::location::Location;
use crate::spec::JobSpec;
use crate::store::DynStore;
use crate::{Error, Result};

/// One file to check: where, which chunk listed it, and its recorded size when known.
/// Owned (the store an `Arc`), so the checks' stream holds no borrow across its awaits and
/// the finalize's future stays `Send` for any caller.
struct Listed {
    store: DynStore,
    location: Location,
    key: String,
    chunk_id: ChunkId,
    recorded_bytes: Option<u64>,
}

impl Listed {
    async fn check(self) -> Result<Option<ChangedFile>> {
        let found = head_retried(self.store.as_ref(), &self.key)
            .await?
            .map(|m| m.size);
        let as_recorded = match (found, self.recorded_bytes) {
            (None, _) => false,
            (Some(found), Some(recorded)) => found == recorded,
            (Some(_), None) => true,
        };
        Ok((!as_recorded).then(|| ChangedFile {
            location: self.location.join(&self.key).to_string(),
            chunk_id: self.chunk_id,
            recorded_bytes: self.recorded_bytes,
            found_bytes: found,
        }))
    }
}

/// Refuses ([`Error::FilesChanged`]) when a file of `files` is missing at `files_at`
/// (the output location, or the job's staging folder) or not the size recorded, or a
/// rejects file of `records` is missing.
pub(super) async fn ensure_files_as_recorded(
    env: &Env,
    spec: &JobSpec,
    job_id: &JobId,
    records: &[ChunkRecord],
    files: &[ManifestFile],
    files_at: &Location,
) -> Result<()> {
    let output = env.store(files_at)?;
    let rejects = env.store(&spec.rejects.location)?;
    let mut listed: Vec<Listed> = files
        .iter()
        .map(|f| Listed {
            store: output.clone(),
            location: files_at.clone(),
            key: f.file.key.clone(),
            chunk_id: f.chunk_id.clone(),
            recorded_bytes: Some(f.file.bytes),
        })
        .collect();
    for r in records {
        listed.extend(r.rejects.iter().map(|f| Listed {
            store: rejects.clone(),
            location: spec.rejects.location.clone(),
            key: f.key.clone(),
            chunk_id: r.chunk_id.clone(),
            recorded_bytes: None,
        }));
    }
    let checked: Vec<Option<ChangedFile>> = stream::iter(listed)
        .map(Listed::check)
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut files: Vec<ChangedFile> = checked.into_iter().flatten().collect();
    if files.is_empty() {
        return Ok(());
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    Err(Error::FilesChanged {
        job_id: job_id.clone(),
        files,
    })
}
