//! Synthetic benchmarks of the planner and the reducer (`fanout bench-plan`,
//! `fanout bench-reduce`; `bench/run --synthetic` prints them beside their targets).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use crate::aggregate::{Group, Partial, Scalar, State};
use crate::ids::JobId;
use crate::job::{
    ChunkRecord, ChunkTask, Counts, PlanShard, PlanSummary, SHARD_CHUNKS, layout,
    to_compact_json_bytes, to_json_bytes,
};
use crate::plan::{Chunk, PlanObject, Sizing, Split, plan_chunks};
use crate::spec::JobSpec;
use crate::store::{ObjectMeta, ObjectStore, PutOutcome, RequestCounts, StoreError};
use crate::write::FileEntry;
use crate::{Error, Result};

/// A listing held in memory (the planner's only input).
#[derive(Debug)]
struct Listing(Vec<ObjectMeta>);

#[async_trait]
impl ObjectStore for Listing {
    fn describe(&self) -> String {
        "synthetic listing".into()
    }
    async fn list(&self, _prefix: &str) -> crate::store::Result<Vec<ObjectMeta>> {
        Ok(self.0.clone())
    }
    async fn head(&self, _key: &str) -> crate::store::Result<Option<ObjectMeta>> {
        Ok(None)
    }
    async fn get(&self, key: &str) -> crate::store::Result<Bytes> {
        Err(StoreError::NotFound { key: key.into() })
    }
    async fn get_range(
        &self,
        key: &str,
        _range: std::ops::Range<u64>,
    ) -> crate::store::Result<Bytes> {
        Err(StoreError::NotFound { key: key.into() })
    }
    async fn put(&self, _key: &str, _data: Bytes) -> crate::store::Result<()> {
        Ok(())
    }
    async fn put_if_absent(&self, _key: &str, _data: Bytes) -> crate::store::Result<PutOutcome> {
        Ok(PutOutcome::Created)
    }
    async fn delete(&self, _key: &str) -> crate::store::Result<()> {
        Ok(())
    }
}

fn spec(root: &Path) -> Result<JobSpec> {
    let r = root.display();
    let yaml = format!(
        "name: bench\nwork: {r}/work/\n\
         input: {{ location: {r}/in/, format: csv, include: [\"*.csv\"], schema: [{{name: k, type: utf8}}, {{name: v, type: int64}}] }}\n\
         chunking: {{ target_size: 64MiB }}\n\
         output: {{ location: {r}/out/, partition_by: [k] }}\n\
         rejects: {{ location: {r}/rejects/ }}\n\
         aggregate: {{ group_by: [k], measures: [{{name: n, fn: count}}, {{name: s, fn: sum, column: v}}] }}\n"
    );
    Ok(JobSpec::parse("bench.yaml", &yaml)?)
}

/// Sizes from 1 KB to about 118 MB, deterministic.
fn size(i: u64) -> u64 {
    1_000 + (i.wrapping_mul(2_654_435_761) % 1_000) * (i % 7 + 1).pow(6)
}

/// Plans `n` listed objects: filter the listing, derive the job id, split, chunk, estimate
/// the cost and serialize the plan shards and the chunk messages — everything
/// `compute_plan` and `plan_job` do but the store's I/O.
pub async fn plan(n: u64) -> Result<(&'static str, f64)> {
    let dir = temp_dir()?;
    let spec = spec(dir.path())?;
    let listing = Listing(
        (0..n)
            .map(|i| ObjectMeta {
                key: format!("dt=2026-11-{:02}/part-{i:08}.csv", i % 28 + 1),
                size: size(i),
                etag: format!("\"{i:032x}\""),
            })
            .collect(),
    );
    let started = Instant::now();
    let listed = crate::planner::list_input(&listing, &spec).await?;
    let job_id = crate::planner::derive_job_id(&spec, &listed);
    let objects: Vec<PlanObject> = listed
        .into_iter()
        .map(|o| PlanObject {
            split: if crate::read::splits_by_lines(&spec.input, &o.key) {
                Split::Lines
            } else {
                Split::Whole
            },
            key: o.key,
            etag: o.etag,
            size: o.size,
        })
        .collect();
    let chunks = plan_chunks(&job_id, objects, crate::planner::sizing(&spec, &job_id)?);
    crate::planner::check_messages_fit(&spec, &chunks, &crate::planner::sizing(&spec, &job_id)?)?;
    // The cost estimate kept in the plan summary, as the planner makes it.
    let estimate = crate::planner::estimate_chunks(
        &spec,
        &chunks,
        n,
        1,
        &crate::cost::Model::default(),
        &crate::cost::Prices::default(),
    );
    let mut bytes = to_json_bytes("cost estimate", &estimate)?.len();
    for (i, part) in chunks.chunks(SHARD_CHUNKS as usize).enumerate() {
        let shard = PlanShard {
            shard: i as u64,
            chunks: part.to_vec(),
        };
        bytes += to_compact_json_bytes("plan shard", &shard)?.len();
    }
    for c in &chunks {
        let task = ChunkTask {
            job_id: job_id.clone(),
            work: spec.work.to_string(),
            chunk: c.clone(),
        };
        // The planner fails on a task it cannot serialize; so does its benchmark.
        bytes += serde_json::to_vec(&task)
            .map_err(|source| Error::Serialize {
                what: "chunk task",
                source,
            })?
            .len();
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(chunks = chunks.len(), bytes, "planned");
    Ok(("plan", secs))
}

/// Writes a job of `n` committed chunks to a temporary work folder (not timed), then
/// times the reducer finalizing it: read every commit record, merge counts, files,
/// partitions and partial aggregates, write the manifest and aggregates.
pub async fn reduce(n: u64) -> Result<(&'static str, f64)> {
    let dir = temp_dir()?;
    let spec = spec(dir.path())?;
    let job_id = JobId::parse("bench-reduce")?;
    let job_id = &job_id;
    write_committed_job(&dir.path().join("work"), &spec, job_id, n)?;
    let env = crate::env::Env::embedded(Arc::new(crate::metrics::MemoryMetrics::default()));
    let started = Instant::now();
    let manifest = crate::reducer::finalize_job(&env, &spec.work, job_id).await?;
    let secs = started.elapsed().as_secs_f64();
    if manifest.counts.read != 10 * n {
        return Err(Error::Config(format!(
            "the reducer merged {} rows, expected {}",
            manifest.counts.read,
            10 * n
        )));
    }
    Ok(("reduce", secs))
}

/// Writes under `work` what a job of `n` one-object chunks leaves before its reducer runs:
/// its spec, plan shards, plan summary and one commit record per chunk.
fn write_committed_job(work: &Path, spec: &JobSpec, job_id: &JobId, n: u64) -> Result<()> {
    let objects: Vec<PlanObject> = (0..n)
        .map(|i| PlanObject {
            key: format!("part-{i:08}.csv"),
            etag: format!("\"{i:x}\""),
            size: 1_000,
            split: Split::Whole,
        })
        .collect();
    let chunks = plan_chunks(
        job_id,
        objects,
        Sizing {
            target_bytes: 1_000,
            max_objects_per_chunk: 1,
            ..crate::planner::sizing(spec, job_id)?
        },
    );
    write_plan(work, spec, job_id, &chunks, n)?;
    let schema = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("k", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, true),
    ]);
    for (i, c) in chunks.iter().enumerate() {
        let record = commit_record(job_id, i, c, &schema);
        write_file(
            work,
            layout::chunk(job_id, &c.id),
            to_json_bytes("commit record", &record)?,
        )?;
    }
    Ok(())
}

/// Writes the job's spec, plan shards and plan summary, as the planner does.
fn write_plan(work: &Path, spec: &JobSpec, job_id: &JobId, chunks: &[Chunk], n: u64) -> Result<()> {
    write_file(
        work,
        layout::spec(job_id),
        to_json_bytes("spec", &spec.resolved)?,
    )?;
    for (i, part) in chunks.chunks(SHARD_CHUNKS as usize).enumerate() {
        let shard = PlanShard {
            shard: i as u64,
            chunks: part.to_vec(),
        };
        write_file(
            work,
            layout::plan_shard(job_id, i as u64),
            to_compact_json_bytes("plan shard", &shard)?,
        )?;
    }
    let summary = PlanSummary {
        job_id: job_id.clone(),
        name: spec.name.clone(),
        chunks: chunks.len() as u64,
        shards: (chunks.len() as u64).div_ceil(SHARD_CHUNKS),
        objects: n,
        input_bytes: n * 1_000,
        target_bytes: 1_000,
        planned_ms: 0,
        estimate: None,
        incremental: false,
    };
    write_file(
        work,
        layout::plan_summary(job_id),
        to_json_bytes("plan summary", &summary)?,
    )?;
    Ok(())
}

/// The commit record of the `i`th synthetic chunk: ten rows read and written, one output
/// file in partition `k{i % 50}`, and that group's partial aggregate.
fn commit_record(
    job_id: &JobId,
    i: usize,
    c: &Chunk,
    schema: &arrow::datatypes::Schema,
) -> ChunkRecord {
    let k = format!("k{}", i % 50);
    ChunkRecord {
        job_id: job_id.clone(),
        chunk_id: c.id.clone(),
        index: c.index,
        pieces: c.pieces.clone(),
        counts: Counts {
            read: 10,
            rejected: 0,
            valid: 10,
            written: 10,
            partition_rejected: 0,
        },
        bytes_read: 1_000,
        range_bytes: c.bytes,
        outputs: vec![FileEntry {
            key: format!("k={k}/part-{}-00000.parquet", c.id),
            partition: vec![("k".into(), Some(k.clone()))],
            rows: 10,
            bytes: 2_000,
        }],
        rejects: None,
        reject_rules: BTreeMap::new(),
        schema: schema.clone(),
        aggregate: Some(Partial {
            groups: vec![Group {
                key: vec![Scalar::Str(k)],
                states: vec![
                    State::Count(10),
                    State::Value(Scalar::Int(format!("{}", i * 10))),
                ],
            }],
        }),
        attempt: 1,
        worker: "bench".into(),
        started_ms: 0,
        elapsed_ms: 100,
        stage_ms: BTreeMap::new(),
        requests: RequestCounts::default(),
    }
}

/// Writes `body` at `key` under `work`, creating its folders.
fn write_file(work: &Path, key: String, body: Bytes) -> Result<()> {
    let p = work.join(key);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Staging {
            context: format!("creating {}", parent.display()),
            source,
        })?;
    }
    std::fs::write(&p, &body).map_err(|source| Error::Staging {
        context: format!("writing {}", p.display()),
        source,
    })
}

fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|source| Error::Staging {
        context: "creating a temporary directory".into(),
        source,
    })
}
