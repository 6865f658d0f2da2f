//! Drain records: which job a drain planned, over which objects, kept until the job is
//! finalized.
//!
//! ```text
//! <work>/arrivals/<name>/drains/<drain>.json   one drain that planned a job
//! ```
//!
//! Outside `jobs/`, so the work bucket's lifecycle rule never removes the record of a job
//! still running. A record is written after its job's plan and chunk messages, before
//! the arrivals messages are deleted, and removed by a later drain once the job has a
//! manifest (the ledger then holds its objects).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::JobId;
use crate::job::{get_json, get_json_opt, layout, to_json_bytes};
use crate::store::{ObjectMeta, ObjectStore};
use crate::{Error, Result};

/// What one drain planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// The caller's id of the drain (the schedule's time), when given.
    pub drain_id: Option<String>,
    /// The job planned.
    pub job_id: JobId,
    /// Its objects (keys relative to the input; size and ETag from the HEAD).
    pub objects: Vec<ObjectMeta>,
    /// When the drain planned it (ms since the epoch).
    pub drained_ms: u64,
}

/// Prefix of a job name's drain records.
pub fn prefix(name: &str) -> String {
    format!("arrivals/{name}/drains/")
}

/// The key of a drain's record: named by the drain id when there is one (so a retried
/// drain finds it), else by the job id.
pub fn key(name: &str, drain_id: Option<&str>, job_id: &JobId) -> String {
    match drain_id {
        Some(id) => format!("{}{}.json", prefix(name), digest(id)),
        None => format!("{}{job_id}.json", prefix(name)),
    }
}

/// A drain id as a key segment: the id is the caller's text (a timestamp with `:`), so
/// its digest names the record.
fn digest(drain_id: &str) -> String {
    let d = Sha256::digest(drain_id.as_bytes());
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The record of an earlier attempt of this drain, if any.
pub async fn find(
    work: &dyn ObjectStore,
    name: &str,
    drain_id: &str,
) -> Result<Option<DrainRecord>> {
    let key = format!("{}{}.json", prefix(name), digest(drain_id));
    get_json_opt(work, &key).await
}

/// Writes a drain's record.
pub async fn write(work: &dyn ObjectStore, name: &str, record: &DrainRecord) -> Result<()> {
    let key = key(name, record.drain_id.as_deref(), &record.job_id);
    work.put(&key, to_json_bytes("drain record", record)?)
        .await?;
    Ok(())
}

/// Objects of drained jobs not finalized yet, as (key, ETag); the records of finalized
/// jobs are removed on the way (their objects are in the ledger now).
pub async fn pending_objects(work: &dyn ObjectStore, name: &str) -> Result<PendingObjects> {
    let mut out = PendingObjects::default();
    for o in work.list(&prefix(name)).await? {
        let record: DrainRecord = get_json(work, &o.key).await?;
        let finalized = work
            .head(&layout::manifest(&record.job_id))
            .await?
            .is_some();
        if finalized {
            work.delete(&o.key).await.map_err(Error::from)?;
            tracing::info!(job_id = %record.job_id, record = %o.key, "drained job finalized; drain record removed");
            continue;
        }
        out.jobs.push(record.job_id.clone());
        out.objects
            .extend(record.objects.into_iter().map(|o| (o.key, o.etag)));
    }
    Ok(out)
}

/// What drained jobs not finalized yet hold.
#[derive(Debug, Clone, Default)]
pub struct PendingObjects {
    /// The jobs, oldest record first.
    pub jobs: Vec<JobId>,
    /// Their objects: (key, ETag).
    pub objects: HashSet<(String, String)>,
}
