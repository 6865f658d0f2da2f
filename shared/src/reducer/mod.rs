//! `job_status` (in `reducer::status`) and `finalize_job`: merge the commit records into
//! the manifest.
//!
//! Both are idempotent: status only reads; finalize rebuilds the same manifest from the
//! same commit records (they never change once written) and refuses a job that is not
//! complete or does not reconcile.
//!
//! `aggregate`: the job's aggregate merged in bounded memory, its table written;
//! `verify`: every file the records list is there, as recorded, before the manifest lists it;
//! `catalog`: the output registered as the spec's catalog table, before the manifest.

mod aggregate;
mod catalog;
mod compaction;
mod publish;
mod verify;

pub use aggregate::{DEFAULT_AGGREGATE_JSON_MAX_ROWS, PARTIAL_READ_CONCURRENCY};

mod status;

use std::collections::{BTreeMap, HashSet};

use tracing::info;

use crate::env::Env;
use crate::ids::JobId;
use crate::job::{
    ChunkRecord, Counts, InputObject, Manifest, ManifestFile, PartitionSummary, PlanSummary,
    RejectFile, layout, load_job, to_json_bytes,
};
use crate::location::Location;
use crate::metrics::{Unit, names};
use crate::plan::Chunk;
use crate::spec::JobSpec;
use crate::store::ObjectStore;
use crate::{Error, Result};
pub use status::{
    CompactionStatus, JobStatus, LOST_MARGIN_MS, SQS_SETTLE_MS, StatusQueues, describe_lost,
    describe_stranded, job_status, job_status_at, job_status_with,
};

/// The transformed rows' schema for a job no chunk reported one for (no input object
/// matched): the SQL planned against the input schema, as the pre-flight does, so the
/// empty aggregate has the columns and types a run with rows would give. A build without
/// the `sql` feature has only the input schema.
async fn schema_without_rows(
    env: &Env,
    spec: &crate::spec::JobSpec,
) -> Result<arrow::datatypes::Schema> {
    #[cfg(feature = "sql")]
    if spec.transform.sql.is_some() {
        let transformer = crate::lookup::load_transformer(env, spec).await?;
        let out = transformer.output_schema(spec.input.schema.clone()).await?;
        return Ok(out.as_ref().clone());
    }
    let _ = env;
    Ok(spec.input.schema.as_ref().clone())
}

/// Merges a finished job into its manifest, aggregates and `_SUCCESS`.
///
/// Fails (and writes no `_SUCCESS`) when chunks are missing, or when a file their commit
/// records list is missing or not the size recorded ([`Error::FilesChanged`], naming each
/// file and its chunk: no manifest is written then); writes a `failed` manifest and fails
/// when the job does not reconcile or its reject ratio is too high.
pub async fn finalize_job(env: &Env, work: &Location, job_id: &JobId) -> Result<Manifest> {
    finalize_job_at(env, work, job_id, crate::clock::now_ms()).await
}

/// [`finalize_job`], naming the chunks lost as of `now_ms` when it refuses the job.
pub async fn finalize_job_at(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    now_ms: u64,
) -> Result<Manifest> {
    let store = env.store(work)?;
    let (summary, spec, plan) = load_job(store.as_ref(), work, job_id).await?;
    if plan.is_empty() {
        // A plan written before empty ones were refused: still nothing to finalize.
        return Err(Error::NoInput {
            name: spec.name.clone(),
            location: spec.input.location.to_string(),
            detail: format!(" (job {job_id} planned no chunk)"),
        });
    }
    // Partials move to local runs as the records are read: the records held here are
    // without them, whatever the number of groups.
    let run_dir = aggregate::run_dir()?;
    let (records, runs) =
        aggregate::records_and_runs(&store, job_id, spec.aggregate.as_ref(), run_dir.path())
            .await?;
    ensure_all_committed(env, work, job_id, &plan, &records, now_ms).await?;
    let mut merged = merge_records(&plan, &records);
    let reject_ratio = check_reject_ratio(&spec, job_id, &merged.counts, &mut merged.problems);
    let (chunk_files, compaction, bin_usage) =
        apply_compaction(&store, &spec, job_id, &records, &mut merged).await?;
    let schema = match merged.schema.take() {
        Some(s) => s,
        None => schema_without_rows(env, &spec).await?,
    };
    let partitions: Vec<PartitionSummary> = std::mem::take(&mut merged.partitions)
        .into_values()
        .collect();
    let files = JobFiles {
        spec: &spec,
        job_id,
        records: &records,
        chunk_files: &chunk_files,
        final_files: &merged.files,
        schema: &schema,
        partitions: &partitions,
    };
    // An incremental job whose objects another job recorded first fails here, before
    // anything of it is published or registered (the ledger write below checks again).
    let inputs = input_objects(&plan);
    if let Some(problem) = ledger_precheck(env, &store, &spec, &summary, job_id, &inputs).await? {
        merged.problems.push(problem);
    }
    publish_and_verify(env, &files, merged.problems.is_empty()).await?;
    let aggregate = match &spec.aggregate {
        Some(a) => Some(
            aggregate::write_aggregate(store.as_ref(), job_id, a, &schema, runs, run_dir.path())
                .await?,
        ),
        None => None,
    };
    let cost = measured_cost(env, &records, &bin_usage, &summary);
    let problems = merged.problems.clone();
    // Before the manifest: a job whose table could not be registered is not finalized,
    // and finalize run again registers it (every step of it is idempotent).
    let catalog = if problems.is_empty() {
        catalog::register(env.catalog.as_deref(), &spec, &schema, &partitions).await?
    } else {
        None
    };
    let mut manifest = Manifest {
        job_id: job_id.clone(),
        name: spec.name.clone(),
        outcome: if merged.problems.is_empty() {
            "succeeded"
        } else {
            "failed"
        }
        .into(),
        problems: merged.problems,
        output: spec.output.location.to_string(),
        rejects_location: spec.rejects.location.to_string(),
        chunks: records.len() as u64,
        objects: summary.objects,
        input_bytes: summary.input_bytes,
        counts: merged.counts,
        reject_ratio,
        output_bytes: merged.files.iter().map(|f| f.file.bytes).sum(),
        schema,
        partitions,
        files: merged.files,
        rejects: merged.rejects,
        reject_rules: merged.reject_rules,
        aggregate,
        catalog,
        compaction,
        inputs,
        cost: Some(cost),
    };
    record_ingested(env, &store, work, &spec, &summary, &mut manifest).await?;
    let problems = manifest.problems.clone();
    store
        .put(
            &layout::manifest(job_id),
            to_json_bytes("manifest", &manifest)?,
        )
        .await?;
    if !problems.is_empty() {
        store.delete(&layout::success(job_id)).await?;
        return Err(Error::Job {
            job_id: job_id.clone(),
            message: problems.join("; "),
        });
    }
    mark_succeeded(env, store.as_ref(), &summary, &manifest).await?;
    if let Err(e) = publish::remove_staged(env, &spec, job_id).await {
        tracing::warn!(job_id = %job_id, error = %e, "staged copies not removed (gc removes them)");
    }
    Ok(manifest)
}

/// What the compaction stage changes in a finalize: the chunk files (what a failed job's
/// checks look at, still staged), what the stage did, and what its bins used.
type Compaction = (
    Vec<ManifestFile>,
    Option<crate::job::CompactionResult>,
    Vec<crate::cost::ChunkUsage>,
);

/// With a compaction stage, the output is the bins' files and the files kept: `merged`
/// takes them (and their partitions).
async fn apply_compaction(
    store: &crate::store::DynStore,
    spec: &JobSpec,
    job_id: &JobId,
    records: &[ChunkRecord],
    merged: &mut Merged,
) -> Result<Compaction> {
    let chunk_files = merged.files.clone();
    let compacted =
        compaction::compacted_files(store, spec, job_id, records, &mut merged.problems).await?;
    Ok(match compacted {
        Some(c) => {
            merged.partitions = compaction::partitions_of(&c.files);
            merged.files = c.files;
            (chunk_files, Some(c.result), c.usage)
        }
        None => (chunk_files, None, Vec::new()),
    })
}

/// What the job cost: measured from its chunks' records, beside the planning estimate.
fn measured_cost(
    env: &Env,
    records: &[ChunkRecord],
    bins: &[crate::cost::ChunkUsage],
    summary: &PlanSummary,
) -> crate::cost::JobCost {
    // The compaction bins run on the same workers: their time and requests are billed alike.
    let usage: Vec<_> = records
        .iter()
        .map(ChunkRecord::usage)
        .chain(bins.iter().cloned())
        .collect();
    crate::cost::JobCost::measure(
        &usage,
        env.worker_memory_mb,
        Some((
            // The planner's and reducer's own time, as modelled (not timed: a reducer re-run
            // rewrites the same manifest).
            2.0 * crate::cost::Model::default().overhead_s,
            crate::cost::coordinator_requests(summary.objects, records.len() as u64),
        )),
        summary.estimate,
    )
}

/// What finalize checks and publishes of a job.
struct JobFiles<'a> {
    spec: &'a JobSpec,
    job_id: &'a JobId,
    records: &'a [ChunkRecord],
    /// The files the chunks wrote.
    chunk_files: &'a [ManifestFile],
    /// The files the manifest lists: the chunk files, or after compaction its files.
    final_files: &'a [ManifestFile],
    schema: &'a arrow::datatypes::Schema,
    partitions: &'a [PartitionSummary],
}

/// Publishes the staged files of a job that `succeeds` (after checking that its catalog
/// table takes the output: nothing is published for a job the table refuses), then checks
/// every file the records list where it is now: the output location, or the staging
/// folder of a job that failed.
async fn publish_and_verify(env: &Env, f: &JobFiles<'_>, succeeds: bool) -> Result<()> {
    let (files, files_at) = if succeeds {
        let cat = env.catalog.as_deref();
        catalog::check(cat, f.spec, f.schema, f.partitions).await?;
        let copied = publish::publish(env, f.spec, f.job_id, f.final_files).await?;
        if copied > 0 {
            info!(job_id = %f.job_id, files = copied, "staged files published");
        }
        (f.final_files, f.spec.output.location.clone())
    } else {
        (
            f.chunk_files,
            crate::job::chunk_output_location(f.spec, f.job_id),
        )
    };
    verify::ensure_files_as_recorded(env, f.spec, f.job_id, f.records, files, &files_at).await
}

/// Refuses to finalize a job with chunks not committed, naming the first failures.
async fn ensure_all_committed(
    env: &Env,
    work: &Location,
    job_id: &JobId,
    plan: &[Chunk],
    records: &[ChunkRecord],
    now_ms: u64,
) -> Result<()> {
    let committed: HashSet<&str> = records.iter().map(|r| r.chunk_id.as_str()).collect();
    let missing = plan
        .iter()
        .filter(|c| !committed.contains(c.id.as_str()))
        .count();
    if missing == 0 {
        return Ok(());
    }
    let status = job_status_at(env, work, job_id, now_ms).await?;
    let detail: Vec<String> = status
        .lost_dead_lettered()
        .map(describe_lost)
        .chain(status.stranded.iter().map(describe_stranded))
        .chain(status.dead_lettered.iter().chain(&status.failed).map(|f| {
            format!(
                "{} after {} attempt(s): {}",
                f.chunk_id, f.attempts, f.message
            )
        }))
        .take(5)
        .collect();
    Err(Error::Job {
        job_id: job_id.clone(),
        message: format!(
            "{missing} of {} chunks are not committed ({} failed for good){}{}",
            plan.len(),
            status.dead_lettered.len()
                + status.lost_dead_lettered().count()
                + status.stranded.len(),
            if detail.is_empty() { "" } else { ": " },
            detail.join("; ")
        ),
    })
}

/// What the commit records add up to, and what is wrong with them.
#[derive(Debug, Default)]
struct Merged {
    counts: Counts,
    files: Vec<ManifestFile>,
    rejects: Vec<RejectFile>,
    partitions: BTreeMap<String, PartitionSummary>,
    schema: Option<arrow::datatypes::Schema>,
    reject_rules: BTreeMap<String, u64>,
    problems: Vec<String>,
}

/// Adds up every commit record: counts, files (sorted by key), partitions, rejects; a
/// record outside the plan, one that does not reconcile or a differing schema is a problem.
fn merge_records(plan: &[Chunk], records: &[ChunkRecord]) -> Merged {
    let planned: HashSet<&str> = plan.iter().map(|c| c.id.as_str()).collect();
    let mut m = Merged::default();
    if let Some(stray) = records
        .iter()
        .find(|r| !planned.contains(r.chunk_id.as_str()))
    {
        m.problems.push(format!(
            "commit record {} is not in the plan",
            stray.chunk_id
        ));
    }
    for r in records {
        check_record(r, &mut m);
        m.counts.add(&r.counts);
        for f in &r.outputs {
            let path = f
                .key
                .rsplit_once('/')
                .map_or(String::new(), |(p, _)| p.to_string());
            let p = m
                .partitions
                .entry(path.clone())
                .or_insert(PartitionSummary {
                    path,
                    files: 0,
                    rows: 0,
                    bytes: 0,
                });
            p.files += 1;
            p.rows += f.rows;
            p.bytes += f.bytes;
            m.files.push(ManifestFile {
                file: f.clone(),
                chunk_id: r.chunk_id.clone(),
            });
        }
        m.rejects.extend(r.rejects.clone());
        for (rule, n) in &r.reject_rules {
            *m.reject_rules.entry(rule.clone()).or_insert(0) += n;
        }
    }
    m.files.sort_by(|a, b| a.file.key.cmp(&b.file.key));
    m
}

/// One commit record's own consistency, and its schema against the earlier records'.
fn check_record(r: &ChunkRecord, m: &mut Merged) {
    if !r.counts.reconciles() {
        m.problems.push(format!(
            "chunk {} does not reconcile: {:?}",
            r.chunk_id, r.counts
        ));
    }
    let written: u64 = r.outputs.iter().map(|f| f.rows).sum();
    if written != r.counts.written {
        m.problems.push(format!(
            "chunk {} lists {written} rows in files but counts {}",
            r.chunk_id, r.counts.written
        ));
    }
    // Chunks without rows may report a narrower schema (no columns to infer from).
    match &m.schema {
        None => m.schema = Some(r.schema.clone()),
        Some(s) if s != &r.schema && r.counts.written > 0 => {
            m.problems.push(format!(
                "chunk {} wrote a different schema than earlier chunks",
                r.chunk_id
            ));
        }
        Some(_) => {}
    }
}

/// The job's reject ratio; above `rejects.max_ratio` it is a problem.
fn check_reject_ratio(
    spec: &JobSpec,
    job_id: &JobId,
    counts: &Counts,
    problems: &mut Vec<String>,
) -> f64 {
    let reject_ratio = if counts.read == 0 {
        0.0
    } else {
        // Rows set aside for their partition value count as rejects: with the usual
        // row-by-row SQL each is one record.
        counts.rejects() as f64 / counts.read as f64
    };
    if reject_ratio > spec.rejects.max_ratio {
        problems.push(format!(
            "{} of {} records rejected ({:.4}%), above rejects.max_ratio {} — see {}{}/",
            counts.rejects(),
            counts.read,
            reject_ratio * 100.0,
            spec.rejects.max_ratio,
            spec.rejects.location,
            job_id
        ));
    }
    reject_ratio
}

/// Records a succeeded job's inputs in the ingestion ledger of its name, BEFORE its
/// manifest says so (crate::ledger, "Writing"): a succeeded manifest never exists without
/// its ledger entry, and a finalize run again finds the entry there. An incremental job
/// whose objects another job ingested meanwhile becomes `failed`, naming them.
/// The ledger entry a job would append, read-only: `Some(problem)` when another job of
/// the name ingested one of the objects of this incremental job first.
async fn ledger_precheck(
    env: &Env,
    store: &crate::store::DynStore,
    spec: &JobSpec,
    summary: &PlanSummary,
    job_id: &JobId,
    inputs: &[InputObject],
) -> Result<Option<String>> {
    use crate::ledger::Ledger;
    if !summary.incremental {
        return Ok(None);
    }
    let ledger = Ledger::new(store.clone(), &spec.name);
    if ledger.entry_of(job_id).await?.is_some() {
        return Ok(None);
    }
    let objects = ingested_objects(env, spec, inputs)?;
    match ledger.read().await?.refuse_ingested(job_id, &objects) {
        Ok(()) => Ok(None),
        Err(e @ Error::AlreadyIngested { .. }) => Ok(Some(e.to_string())),
        Err(e) => Err(e),
    }
}

/// The ledger's view of a job's input objects: absolute URIs with version and size.
fn ingested_objects(
    env: &Env,
    spec: &JobSpec,
    inputs: &[InputObject],
) -> Result<Vec<crate::ledger::IngestedObject>> {
    let root = env.store(&spec.input.location)?.describe();
    Ok(inputs
        .iter()
        .map(|i| crate::ledger::IngestedObject {
            uri: format!("{root}{}", i.key),
            etag: i.etag.clone(),
            size: i.size,
        })
        .collect())
}

async fn record_ingested(
    env: &Env,
    store: &crate::store::DynStore,
    work: &Location,
    spec: &JobSpec,
    summary: &PlanSummary,
    manifest: &mut Manifest,
) -> Result<()> {
    use crate::ledger::{EntryKind, Ledger, Recorded};
    if !manifest.succeeded() {
        return Ok(());
    }
    let objects = ingested_objects(env, spec, &manifest.inputs)?;
    let kind = if summary.incremental {
        EntryKind::Incremental
    } else {
        EntryKind::Full
    };
    let ledger = Ledger::new(store.clone(), &spec.name);
    match ledger
        .record(&manifest.job_id, &work.to_string(), kind, objects)
        .await
    {
        Ok(Recorded::Appended { seq } | Recorded::Already { seq }) => {
            info!(job_id = %manifest.job_id, seq, "job recorded in the ingestion ledger");
            Ok(())
        }
        Err(e @ Error::AlreadyIngested { .. }) => {
            manifest.outcome = "failed".into();
            manifest.problems.push(e.to_string());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Every input object the plan read (key and version), sorted, once each.
fn input_objects(plan: &[Chunk]) -> Vec<InputObject> {
    let mut inputs: Vec<InputObject> = plan
        .iter()
        .flat_map(|c| &c.pieces)
        .map(|p| InputObject {
            key: p.key().to_string(),
            etag: p.etag().to_string(),
            size: p.object_size(),
        })
        .collect();
    inputs.sort();
    inputs.dedup();
    inputs
}

/// Writes `_SUCCESS` and, on the first finalize only, the job's cost and duration metrics:
/// a finalize run again (a retried reducer, `fanout finalize`) rewrites the same manifest,
/// and the job was already counted.
async fn mark_succeeded(
    env: &Env,
    store: &dyn ObjectStore,
    summary: &PlanSummary,
    manifest: &Manifest,
) -> Result<()> {
    let job_id = &manifest.job_id;
    let first_success = store.head(&layout::success(job_id)).await?.is_none();
    store
        .put(&layout::success(job_id), bytes::Bytes::new())
        .await?;
    let (m, name) = (&env.metrics, manifest.name.as_str());
    let cost = manifest.cost.as_ref();
    if first_success && let Some(cost) = cost {
        m.record(name, names::JOB_COST, cost.measured.usd.total, Unit::None);
        m.record(
            name,
            names::JOB_LAMBDA_GB_SECONDS,
            cost.measured.usage.lambda_gb_s,
            Unit::None,
        );
    }
    if first_success && summary.planned_ms > 0 {
        m.record(
            name,
            names::JOB_DURATION,
            crate::clock::now_ms().saturating_sub(summary.planned_ms) as f64,
            Unit::Milliseconds,
        );
    }
    info!(
        job_id = %job_id,
        cost_usd = cost.map_or(0.0, |c| c.measured.usd.total),
        rows_read = manifest.counts.read,
        rows_written = manifest.counts.written,
        rows_rejected = manifest.counts.rejected,
        "job finalized"
    );
    Ok(())
}

/// Reads a job's manifest.
pub async fn read_manifest(env: &Env, work: &Location, job_id: &JobId) -> Result<Manifest> {
    let store = env.store(work)?;
    crate::job::read_manifest_opt(store.as_ref(), job_id)
        .await?
        .ok_or_else(|| Error::Job {
            job_id: job_id.clone(),
            message: format!("no manifest under {work}: the job has not been finalized"),
        })
}
