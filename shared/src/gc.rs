//! `collect_garbage`: delete a job's files that its manifest does not list.
//!
//! Output names derive from chunk ids, so a retried chunk overwrites its own earlier
//! attempt and leaves nothing behind; garbage comes from jobs that never finished (their
//! chunks' files count for nothing without a manifest) and from changed settings. Only
//! files this job's chunks could have written are considered: other jobs sharing the
//! output location are never touched.
//!
//! An abandoned job (no manifest) loses its chunk records with its files: a commit record
//! says "this chunk's files exist", and one left behind would make the same spec, run
//! again, skip its chunk as done and finalize a manifest listing deleted files. The commit
//! records go first, then the files, then the failure and attempt records: a collection
//! stopped half-way leaves files no record claims (found again by the next collection, or
//! rewritten by the next run), never a record whose files are gone. The spec and the plan
//! stay, so the next run of the spec reuses the plan and runs every chunk again. A job the
//! ingestion ledger records is never collected as abandoned ([`crate::ledger`]), and `gc`
//! never touches the ledger.

use std::collections::HashSet;

use serde::Serialize;

use crate::env::Env;
use crate::ids::{ChunkId, JobId};
use crate::job::{Manifest, get_json_opt, layout};
use crate::location::Location;
use crate::store::ObjectStore;
use crate::{Error, Result};

/// What a collection found (and deleted unless it was a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Garbage {
    /// Output files not in the manifest, keys below the output location.
    pub outputs: Vec<String>,
    /// Rejects files not in the manifest, keys below the rejects location.
    pub rejects: Vec<String>,
    /// Staged chunk files (`output.catalog` jobs), keys below the work location: after
    /// finalize they were published (the manifest lists the output copies), before it
    /// they count for nothing.
    #[serde(default)]
    pub staged: Vec<String>,
    /// Chunk records of an abandoned job (commit, then failure and attempt records), keys
    /// below the work location.
    pub records: Vec<String>,
    /// Whether they were deleted.
    pub deleted: bool,
}

fn chunk_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let rest = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    rest.rsplit_once('-').map(|(chunk, _)| chunk)
}

/// The bin of a compacted file's key (`part-<bin_id>.parquet`: no `-n` after the id).
fn bin_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let id = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    (!id.contains('-')).then_some(id)
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
    if manifest.is_none() {
        refuse_if_ingested(&store, &spec.name, job_id).await?;
    }
    let chunks: HashSet<ChunkId> = plan.into_iter().map(|c| c.id).collect();
    // The compaction stage's bins, planned from the chunks: their files are the job's too.
    let bins: HashSet<ChunkId> =
        crate::job::ids_under(store.as_ref(), &layout::bin_plans(job_id)).await?;
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
            let ours = chunk_of(k).is_some_and(|c| chunks.contains(c))
                || bin_of(k).is_some_and(|b| bins.contains(b));
            ours && !keep_outputs.contains(k.as_str())
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
    let staged: Vec<String> = store
        .list(&layout::staged(job_id))
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    // With a manifest the records are the job's truth and stay; without one, nothing of
    // the job counts, its records least of all.
    let (commits, others) = if manifest.is_none() {
        chunk_records(store.as_ref(), job_id).await?
    } else {
        (Vec::new(), Vec::new())
    };
    if !dry_run {
        delete_all(store.as_ref(), &commits).await?;
        delete_all(output.as_ref(), &outputs).await?;
        delete_all(store.as_ref(), &staged).await?;
        delete_all(rejects_store.as_ref(), &rejects).await?;
        delete_all(store.as_ref(), &others).await?;
    }
    Ok(Garbage {
        outputs,
        rejects,
        staged,
        records: commits.into_iter().chain(others).collect(),
        deleted: !dry_run,
    })
}

/// Refuses to collect a job the ingestion ledger records: its finalize died between the
/// ledger entry and the manifest, its objects count as ingested, and its files are the
/// only copy of their rows. Finalizing it again writes the manifest.
async fn refuse_if_ingested(
    store: &crate::store::DynStore,
    name: &str,
    job_id: &JobId,
) -> Result<()> {
    let ledger = crate::ledger::Ledger::new(store.clone(), name);
    let seq = match ledger.entry_of(job_id).await? {
        Some(seq) => Some(seq),
        None => ledger.read().await?.job_seq(job_id),
    };
    match seq {
        None => Ok(()),
        Some(seq) => Err(Error::Job {
            job_id: job_id.clone(),
            message: format!(
                "is recorded in the ingestion ledger of `{name}` (entry {seq}) but has no manifest: \
                 its objects count as ingested and its files hold their rows; finalize it \
                 (`fanout run SPEC --job-id {job_id}`) instead of collecting it"
            ),
        }),
    }
}

/// A job's commit records (and its compaction stage's summary and bin records: a run of
/// the spec again plans the stage anew), and its failure, attempt and bin plan records.
async fn chunk_records(
    store: &dyn ObjectStore,
    job_id: &JobId,
) -> Result<(Vec<String>, Vec<String>)> {
    let keys = |objects: Vec<crate::store::ObjectMeta>| objects.into_iter().map(|o| o.key);
    let mut commits: Vec<String> = keys(store.list(&layout::chunks(job_id)).await?).collect();
    commits.extend(keys(store.list(&layout::compaction_summary(job_id)).await?));
    commits.extend(keys(store.list(&layout::bins(job_id)).await?));
    let mut others: Vec<String> = keys(store.list(&layout::failures(job_id)).await?).collect();
    others.extend(keys(store.list(&layout::attempts(job_id)).await?));
    for prefix in [
        layout::bin_failures(job_id),
        layout::bin_attempts(job_id),
        layout::bin_plans(job_id),
    ] {
        others.extend(keys(store.list(&prefix).await?));
    }
    Ok((commits, others))
}

async fn delete_all(store: &dyn ObjectStore, keys: &[String]) -> Result<()> {
    for k in keys {
        store.delete(k).await?;
    }
    Ok(())
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
        assert_eq!(super::bin_of("y=1/part-0a1b2c.parquet"), Some("0a1b2c"));
        assert_eq!(super::bin_of("y=1/part-0a1b2c-00000.parquet"), None);
        assert_eq!(super::chunk_of("notes/readme.txt"), None);
    }
}
