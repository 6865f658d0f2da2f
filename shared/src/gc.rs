//! `collect_garbage`: delete a job's files that its manifest does not list.
//!
//! Output names derive from chunk ids, so a retried chunk overwrites its own earlier
//! attempt and leaves nothing behind; garbage comes from jobs that never finished (their
//! chunks' files count for nothing without a manifest) and from changed settings. Only
//! files this job's chunks could have written are considered: other jobs sharing the
//! output location are never touched.

use std::collections::HashSet;

use serde::Serialize;

use crate::env::Env;
use crate::ids::{ChunkId, JobId};
use crate::job::{Manifest, get_json_opt, layout};
use crate::location::Location;
use crate::{Error, Result};

/// What a collection found (and deleted unless it was a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Garbage {
    /// Output files not in the manifest, keys below the output location.
    pub outputs: Vec<String>,
    /// Rejects files not in the manifest, keys below the rejects location.
    pub rejects: Vec<String>,
    /// Whether they were deleted.
    pub deleted: bool,
}

fn chunk_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    rest.rsplit_once('-').map(|(chunk, _)| chunk)
}

/// Finds, and unless `dry_run` deletes, the files of job `job_id` outside its manifest.
///
/// A job without a manifest is refused unless `abandoned` is set: then every file its
/// chunks wrote is garbage.
pub async fn collect_garbage(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    abandoned: bool,
    dry_run: bool,
) -> Result<Garbage> {
    let store = env.store(work)?;
    let (_, spec, plan) = crate::job::load_job(store.as_ref(), work, job_id).await?;
    let manifest: Option<Manifest> =
        get_json_opt(store.as_ref(), &layout::manifest(job_id)).await?;
    if manifest.is_none() && !abandoned {
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: "has no manifest: finalize it, or collect it as abandoned (--abandoned) to delete all its files".into(),
        });
    }
    let chunks: HashSet<ChunkId> = plan.into_iter().map(|c| c.id).collect();
    let keep_outputs: HashSet<&str> = manifest
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.file.key.as_str()))
        .collect();
    let keep_rejects: HashSet<&str> = manifest
        .iter()
        .flat_map(|m| m.rejects.iter().map(|r| r.key.as_str()))
        .collect();

    let output = env.store(&spec.output.location)?;
    let outputs: Vec<String> = output
        .list("")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| {
            chunk_of(k).is_some_and(|c| chunks.contains(c)) && !keep_outputs.contains(k.as_str())
        })
        .collect();
    let rejects_store = env.store(&spec.rejects.location)?;
    let rejects: Vec<String> = rejects_store
        .list(&format!("{job_id}/"))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !keep_rejects.contains(k.as_str()))
        .collect();
    if !dry_run {
        for k in &outputs {
            output.delete(k).await?;
        }
        for k in &rejects {
            rejects_store.delete(k).await?;
        }
    }
    Ok(Garbage {
        outputs,
        rejects,
        deleted: !dry_run,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn output_names_give_their_chunk() {
        assert_eq!(
            super::chunk_of("region=EU/part-0a1b2c-00003.parquet"),
            Some("0a1b2c")
        );
        assert_eq!(super::chunk_of("part-0a1b2c-00000.parquet"), Some("0a1b2c"));
        assert_eq!(super::chunk_of("notes/readme.txt"), None);
    }
}
