//! Incremental jobs over the ingestion ledger ([`crate::ledger`]): a job of what is new.
//!
//! - [`without_ingested`]: the spec without the input objects the ledger holds (an
//!   incremental job: its finalize refuses objects another job ingested meanwhile). A name
//!   whose ledger is empty is first brought over from the manifests of its finalized jobs
//!   ([`import_manifests`], a one-time migration from the releases before the ledger).
//! - [`uploaded`]: the spec of an upload event: exactly the objects named, and for a
//!   `_READY` marker (any name starting with `_`), every object of the marker's folder;
//!   minus what the ledger holds.
//! - `run::run_since_last` (with the `sql` feature): `fanout run --since-last` under the
//!   name's lease.

#[cfg(feature = "sql")]
mod run;

use std::collections::BTreeSet;

use crate::env::Env;
use crate::job::{Manifest, PlanSummary, get_json, layout, load_plan};
use crate::ledger::{EntryKind, IngestedObject, Ledger, LedgerView};
use crate::planner::list_input_under;
use crate::spec::JobSpec;
use crate::{Error, Result};

#[cfg(feature = "sql")]
pub use run::{SinceLast, run_since_last};

/// The ledger of a spec's name, in its work location.
pub fn ledger_of(env: &Env, spec: &JobSpec) -> Result<Ledger> {
    Ok(Ledger::new(
        env.store_with(&spec.work, &spec.sse)?,
        &spec.name,
    ))
}

/// What [`without_ingested`] left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Object versions below the input location the ledger holds.
    pub ingested: usize,
    /// Jobs imported from manifests into an empty ledger first.
    pub imported_jobs: u64,
}

/// The spec without the input objects (key and version) the ledger of its name holds: an
/// incremental job.
pub async fn without_ingested(env: &Env, spec: JobSpec) -> Result<(JobSpec, Skipped)> {
    let ledger = ledger_of(env, &spec)?;
    let mut view = ledger.read().await?;
    let mut imported_jobs = 0;
    if view.is_empty() {
        imported_jobs = import_manifests(env, &spec, &ledger).await?;
        if imported_jobs > 0 {
            ledger.refresh(&mut view).await?;
        }
    }
    let skip = skip_set(env, &spec, &view)?;
    let skipped = Skipped {
        ingested: skip.len(),
        imported_jobs,
    };
    Ok((spec.with_skipped(skip), skipped))
}

fn skip_set(
    env: &Env,
    spec: &JobSpec,
    view: &LedgerView,
) -> Result<std::collections::HashSet<(String, String)>> {
    let root = env.store(&spec.input.location)?.describe();
    Ok(view.committed_below(&root))
}

/// Brings the succeeded jobs of the spec's name that finalized before the ledger existed
/// into it, from their manifests under `jobs/` (one entry each, marked `imported`): run
/// once, while the ledger of the name is empty. Reads every manifest of the work location,
/// which the ledger exists to avoid; afterwards the ledger alone is read. Manifests already
/// expired by the lifecycle rule cannot be imported: their objects count as new.
pub async fn import_manifests(env: &Env, spec: &JobSpec, ledger: &Ledger) -> Result<u64> {
    let work = env.store(&spec.work)?;
    let root = env.store(&spec.input.location)?.describe();
    let mut imported = 0;
    for o in work.list("jobs/").await? {
        if !o.key.ends_with("/_manifest.json") {
            continue;
        }
        let m: Manifest = match get_json(work.as_ref(), &o.key).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(manifest = %o.key, error = %e, "unreadable manifest skipped");
                continue;
            }
        };
        if m.name != spec.name || !m.succeeded() {
            continue;
        }
        let objects = manifest_inputs(work.as_ref(), &m, &root).await?;
        ledger
            .record(
                &m.job_id,
                &spec.work.to_string(),
                EntryKind::Imported,
                objects,
            )
            .await?;
        imported += 1;
    }
    if imported > 0 {
        tracing::info!(name = %spec.name, jobs = imported, "ledger imported from manifests");
    }
    Ok(imported)
}

/// A manifest's inputs as ledger objects; a manifest from before manifests listed their
/// inputs has them in its plan.
async fn manifest_inputs(
    work: &dyn crate::store::ObjectStore,
    m: &Manifest,
    root: &str,
) -> Result<Vec<IngestedObject>> {
    let object = |key: &str, etag: &str, size: u64| IngestedObject {
        uri: format!("{root}{key}"),
        etag: etag.to_string(),
        size,
    };
    if !m.inputs.is_empty() || m.chunks == 0 {
        return Ok(m
            .inputs
            .iter()
            .map(|i| object(&i.key, &i.etag, i.size))
            .collect());
    }
    let summary: PlanSummary = get_json(work, &layout::plan_summary(&m.job_id)).await?;
    Ok(load_plan(work, &summary)
        .await?
        .iter()
        .flat_map(|c| &c.pieces)
        .map(|p| object(p.key(), p.etag(), p.object_size()))
        .collect())
}

/// Whether a key names a marker rather than data: its file name starts with `_`
/// (`_READY`, `_SUCCESS`), which input listings never read.
pub fn is_marker(key: &str) -> bool {
    key.rsplit('/').next().is_some_and(|n| n.starts_with('_'))
}

/// The spec of a job over uploaded objects (`keys`, relative to the input location):
/// each data key as named, each marker key (`_READY`) replaced by every input object of
/// its folder (its prefix up to the last `/`, listed with the spec's include and exclude);
/// then without what the ledger holds (an incremental job, so a replayed event or a
/// second marker plans nothing twice). [`Error::NoInput`] when nothing is left.
pub async fn uploaded(env: &Env, spec: JobSpec, keys: &[String]) -> Result<JobSpec> {
    let input = env.store(&spec.input.location)?;
    let mut planned = BTreeSet::new();
    for key in keys {
        if !is_marker(key) {
            planned.insert(key.clone());
            continue;
        }
        let folder = key.rsplit_once('/').map_or("", |(dir, _)| dir);
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let listed = list_input_under(input.as_ref(), &spec, &prefix).await?;
        tracing::info!(marker = %key, objects = listed.len(), "marker: its folder is planned");
        planned.extend(listed.into_iter().map(|o| o.key));
    }
    let named = planned.len();
    let (spec, skipped) =
        without_ingested(env, spec.with_only_keys(planned.into_iter().collect())).await?;
    if named == 0 {
        return Err(Error::NoInput {
            name: spec.name.clone(),
            location: spec.input.location.to_string(),
            detail: format!(" in the folder(s) of the marker(s) {keys:?}"),
        });
    }
    tracing::debug!(named, ingested = skipped.ingested, "uploaded objects");
    Ok(spec)
}
