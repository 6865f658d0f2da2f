//! `plan_job`: list the input, cut chunks, write the plan; `enqueue`: one message per chunk.

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::env::Env;
use crate::ids::JobId;
use crate::job::{
    ChunkTask, PlanShard, PlanSummary, SHARD_CHUNKS, committed_ids, get_json_opt, layout,
    load_plan, to_compact_json_bytes, to_json_bytes,
};
use crate::location::Location;
use crate::plan::{Chunk, PlanObject, Sizing, Split, chunk_id, pieces_json_bytes, plan_chunks};
use crate::queue::Queue;
use crate::spec::{Format, JobSpec};
use crate::store::{ObjectMeta, ObjectStore};
use crate::{Error, Result};

/// A planned job.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// Summary.
    pub summary: PlanSummary,
    /// Every chunk, in plan order.
    pub chunks: Vec<Chunk>,
    /// Whether an existing plan was reused.
    pub reused: bool,
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // `*.csv` should match in sub-folders too, as users of S3 prefixes expect.
        for variant in [p.clone(), format!("**/{p}")] {
            b.add(Glob::new(&variant).map_err(|e| Error::Config(format!("bad glob `{p}`: {e}")))?);
        }
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("bad glob set {patterns:?}: {e}")))
}

/// The spec's selection of input keys: its include and exclude globs, and no file name
/// starting with `_` or `.` (`_SUCCESS`, `_READY`, editor files), as Spark and Hive do.
#[derive(Debug, Clone)]
pub struct InputFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl InputFilter {
    /// The filter of a spec's `input.include` and `input.exclude`.
    pub fn new(spec: &JobSpec) -> Result<InputFilter> {
        Ok(InputFilter {
            include: globs(&spec.input.include)?,
            exclude: globs(&spec.input.exclude)?,
        })
    }

    /// Whether the spec reads the object at `key` (relative to the input location).
    pub fn selects(&self, key: &str) -> bool {
        let name = key.rsplit('/').next().unwrap_or(key);
        !name.starts_with('_')
            && !name.starts_with('.')
            && self.include.as_ref().is_none_or(|g| g.is_match(key))
            && self.exclude.as_ref().is_none_or(|g| !g.is_match(key))
    }
}

/// Lists the input objects a spec selects ([`InputFilter`]), sorted by key: the objects
/// of [`JobSpec::input_objects`] when set (no listing), else a listing of the input.
pub async fn list_input(store: &dyn ObjectStore, spec: &JobSpec) -> Result<Vec<ObjectMeta>> {
    list_input_under(store, spec, "").await
}

/// [`list_input`] of the keys below `prefix` only (one folder of the input: what a
/// `_READY` marker names).
pub async fn list_input_under(
    store: &dyn ObjectStore,
    spec: &JobSpec,
    prefix: &str,
) -> Result<Vec<ObjectMeta>> {
    let filter = InputFilter::new(spec)?;
    let mut all = match &spec.input_objects {
        Some(objects) => objects
            .iter()
            .filter(|o| o.key.starts_with(prefix))
            .cloned()
            .collect(),
        None => store.list(prefix).await?,
    };
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all.dedup_by(|a, b| a.key == b.key);
    Ok(all
        .into_iter()
        .filter(|o| filter.selects(&o.key))
        .filter(|o| {
            spec.only_keys
                .as_ref()
                .is_none_or(|keys| keys.contains(&o.key))
        })
        .filter(|o| {
            spec.skip_objects
                .as_ref()
                .is_none_or(|done| !done.contains(&(o.key.clone(), o.etag.clone())))
        })
        .collect())
}

/// The job id for a spec and its input listing: `<name>-<hash>`.
pub fn derive_job_id(spec: &JobSpec, listing: &[ObjectMeta]) -> JobId {
    let mut h = Sha256::new();
    // A Value displays as compact JSON, the bytes serde_json::to_vec gives, infallibly.
    h.update(spec.resolved.to_string().as_bytes());
    for o in listing {
        // The bytes of "\n{key}\t{etag}\t{size}", without formatting a string per object.
        h.update(b"\n");
        h.update(o.key.as_bytes());
        h.update(b"\t");
        h.update(o.etag.as_bytes());
        h.update(b"\t");
        h.update(o.size.to_string().as_bytes());
    }
    let d = h.finalize();
    let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
    // A validated name (letters, digits, `-`, `_`) and hex digits: a valid job id.
    JobId::from_trusted(format!("{}-{hex}", spec.name))
}

/// How an object is split; a Parquet object's footer is read when the object is large
/// enough to be split by row group or to hold a row group over `input.max_row_group_size`
/// (a row group's column chunks are no larger than the object), and such a row group is
/// refused here, before anything is enqueued.
async fn split_of(store: &dyn ObjectStore, spec: &JobSpec, o: &ObjectMeta) -> Result<Split> {
    let input = &spec.input;
    let split_by_row_group = o.size > spec.chunking.target_bytes;
    Ok(match input.format {
        Format::Parquet if split_by_row_group || o.size > input.max_row_group_bytes => {
            use crate::read::parquet;
            let (meta, _) = parquet::read_metadata(store, &o.key, &o.etag, o.size).await?;
            parquet::check_row_group_limit(
                &o.key,
                &meta,
                &input.schema,
                input.max_row_group_bytes,
            )?;
            if split_by_row_group {
                Split::RowGroups(parquet::row_group_sizes(&meta))
            } else {
                Split::Whole
            }
        }
        Format::Parquet => Split::Whole,
        _ if crate::read::splits_by_lines(&spec.input, &o.key) => Split::Lines,
        _ => Split::Whole,
    })
}

/// The spec with every lookup pinned to the version (ETag) it has now, recorded in the
/// resolved spec too: that is what `spec.json` stores and the job id hashes, so every
/// worker of the job joins the same rows ([`crate::spec::LookupSpec::etag`]) and a spec
/// planned again after a lookup changed is another job. A lookup already pinned (by hand,
/// or a stored spec) must still be that version.
pub async fn pin_lookups(env: &Env, spec: &JobSpec) -> Result<JobSpec> {
    let mut pinned = spec.clone();
    for (i, l) in pinned.transform.lookups.iter_mut().enumerate() {
        let (dir, key) = l.location.split_object();
        let meta = env.store(&dir)?.head(&key).await?;
        let etag = match (meta, &l.etag) {
            (None, _) => {
                return Err(Error::Input {
                    object: l.location.to_string(),
                    message: format!("lookup `{}` not found", l.name),
                    source: None,
                });
            }
            (Some(m), Some(want)) if m.etag != *want => {
                return Err(Error::Input {
                    object: l.location.to_string(),
                    message: format!(
                        "lookup `{}` is version {}, not the version {want} the spec pins",
                        l.name, m.etag
                    ),
                    source: None,
                });
            }
            (Some(m), _) => m.etag,
        };
        let field = format!("/transform/lookups/{i}");
        let Some(raw) = pinned
            .resolved
            .pointer_mut(&field)
            .and_then(serde_json::Value::as_object_mut)
        else {
            return Err(Error::Config(format!(
                "the resolved spec has no `{field}` for lookup `{}`",
                l.name
            )));
        };
        raw.insert("etag".into(), serde_json::Value::String(etag.clone()));
        l.etag = Some(etag);
    }
    Ok(pinned)
}

/// Computes a job's plan from the input listing without writing anything; the lookups
/// are pinned first ([`pin_lookups`]), as planning does.
pub async fn compute_plan(env: &Env, spec: &JobSpec) -> Result<PlannedJob> {
    compute_pinned_plan(env, &pin_lookups(env, spec).await?).await
}

async fn compute_pinned_plan(env: &Env, spec: &JobSpec) -> Result<PlannedJob> {
    let input = env.store(&spec.input.location)?;
    let listing = list_input(input.as_ref(), spec).await?;
    let job_id = match &spec.job_id {
        Some(id) => id.clone(),
        None => derive_job_id(spec, &listing),
    };
    let mut objects = Vec::with_capacity(listing.len());
    for o in &listing {
        objects.push(PlanObject {
            key: o.key.clone(),
            etag: o.etag.clone(),
            size: o.size,
            split: split_of(input.as_ref(), spec, o).await?,
        });
    }
    let sizing = sizing(spec, &job_id)?;
    let chunks = plan_chunks(&job_id, objects, sizing);
    check_messages_fit(spec, &chunks, &sizing)?;
    let estimate = estimate_chunks(
        spec,
        &chunks,
        listing.len() as u64,
        1,
        &crate::cost::Model::default(),
        &crate::cost::Prices::default(),
    );
    let summary = PlanSummary {
        job_id,
        name: spec.name.clone(),
        chunks: chunks.len() as u64,
        shards: (chunks.len() as u64).div_ceil(SHARD_CHUNKS),
        objects: listing.len() as u64,
        input_bytes: listing.iter().map(|o| o.size).sum(),
        target_bytes: spec.chunking.target_bytes,
        planned_ms: crate::clock::now_ms(),
        estimate: Some(estimate),
        incremental: spec.skip_objects.is_some(),
    };
    Ok(PlannedJob {
        summary,
        chunks,
        reused: false,
    })
}

/// The chunk sizing of a spec: its target and object cap, and the room its queue
/// message limit leaves for a chunk's pieces once the rest of the message (job id, work
/// location, chunk id, index and size at their widest) is counted.
pub fn sizing(spec: &JobSpec, job_id: &JobId) -> Result<Sizing> {
    let empty = ChunkTask {
        job_id: job_id.clone(),
        work: spec.work.to_string(),
        chunk: Chunk {
            id: chunk_id(job_id, &[]),
            index: u64::MAX,
            pieces: Vec::new(),
            bytes: u64::MAX,
        },
    };
    let envelope = serde_json::to_string(&empty)
        .map_err(|source| Error::Serialize {
            what: "chunk task",
            source,
        })?
        .len()
        - "[]".len();
    let limit = spec.queue.max_message_bytes;
    if envelope + pieces_json_bytes(&[]) > limit {
        return Err(Error::Config(format!(
            "a chunk message of job {job_id} with work location `{}` takes {envelope} bytes before \
             its first piece, over queue.max_message_size ({limit} bytes)",
            spec.work
        )));
    }
    Ok(Sizing {
        target_bytes: spec.chunking.target_bytes,
        max_objects_per_chunk: spec.chunking.max_objects_per_chunk,
        max_pieces_json_bytes: limit - envelope,
    })
}

/// Refuses a plan with a chunk whose message would not fit the queue: only a chunk of one
/// piece can ([`plan_chunks`] closes packed ones in time), and only with a limit far below
/// the default or a key far longer than S3 allows. Caught here, before anything is written
/// or sent.
pub fn check_messages_fit(spec: &JobSpec, chunks: &[Chunk], sizing: &Sizing) -> Result<()> {
    match chunks
        .iter()
        .find(|c| pieces_json_bytes(&c.pieces) > sizing.max_pieces_json_bytes)
    {
        None => Ok(()),
        Some(c) => Err(Error::Config(format!(
            "the chunk reading `{}` needs a queue message of more than {} bytes, over \
             queue.max_message_size ({} bytes): raise the limit (SQS accepts up to 1 MiB)",
            c.pieces.first().map_or("", |p| p.key()),
            spec.queue.max_message_bytes - sizing.max_pieces_json_bytes
                + pieces_json_bytes(&c.pieces),
            spec.queue.max_message_bytes
        ))),
    }
}

/// The cost estimate of planned chunks writing `files_per_chunk` files each (how many
/// partitions a chunk's rows fall into is unknown before running; planning assumes 1).
pub fn estimate_chunks(
    spec: &JobSpec,
    chunks: &[Chunk],
    objects: u64,
    files_per_chunk: u64,
    model: &crate::cost::Model,
    prices: &crate::cost::Prices,
) -> crate::cost::Estimate {
    let shapes: Vec<crate::cost::ChunkShape> = chunks
        .iter()
        .map(|c| crate::cost::ChunkShape {
            bytes: c.bytes,
            reads: c
                .pieces
                .iter()
                .map(|p| crate::cost::reads_of(p, &spec.input))
                .sum(),
        })
        .collect();
    crate::cost::estimate(&shapes, objects, files_per_chunk.max(1), model, prices)
}

/// Plans a job (or loads its existing plan): writes `spec.json`, the plan shards and,
/// last, the plan summary. Running it again gives the same job id and chunk ids.
pub async fn plan_job(env: &Env, spec: &JobSpec) -> Result<PlannedJob> {
    let work = env.store_with(&spec.work, &spec.sse)?;
    if let Some(id) = &spec.job_id
        && let Some(summary) =
            get_json_opt::<PlanSummary>(work.as_ref(), &layout::plan_summary(id)).await?
    {
        let chunks = load_plan(work.as_ref(), &summary).await?;
        return Ok(PlannedJob {
            summary,
            chunks,
            reused: true,
        });
    }
    let spec = &pin_lookups(env, spec).await?;
    let planned = compute_pinned_plan(env, spec).await?;
    if planned.chunks.is_empty() {
        return Err(nothing_to_plan(spec));
    }
    let job_id = planned.summary.job_id.clone();
    if let Some(summary) =
        get_json_opt::<PlanSummary>(work.as_ref(), &layout::plan_summary(&job_id)).await?
    {
        let chunks = load_plan(work.as_ref(), &summary).await?;
        return Ok(PlannedJob {
            summary,
            chunks,
            reused: true,
        });
    }
    work.put(
        &layout::spec(&job_id),
        to_json_bytes("spec", &spec.resolved)?,
    )
    .await?;
    for (i, part) in planned.chunks.chunks(SHARD_CHUNKS as usize).enumerate() {
        let shard = PlanShard {
            shard: i as u64,
            chunks: part.to_vec(),
        };
        work.put(
            &layout::plan_shard(&job_id, i as u64),
            to_compact_json_bytes("plan shard", &shard)?,
        )
        .await?;
    }
    let summary = &planned.summary;
    work.put(
        &layout::plan_summary(&job_id),
        to_json_bytes("plan summary", summary)?,
    )
    .await?;
    info!(job_id = %job_id, chunks = summary.chunks, objects = summary.objects, input_bytes = summary.input_bytes, "job planned");
    Ok(planned)
}

/// [`Error::NoInput`] for a spec whose selection is empty, saying what selected nothing.
fn nothing_to_plan(spec: &JobSpec) -> Error {
    let mut detail = String::new();
    if !spec.input.include.is_empty() {
        detail.push_str(&format!(" matching {:?}", spec.input.include));
    }
    if let Some(keys) = &spec.only_keys {
        detail.push_str(&format!(" among the {} object(s) named", keys.len()));
    }
    if let Some(skip) = &spec.skip_objects {
        detail.push_str(&format!(
            " that is not already ingested ({} object version(s) in the ledger)",
            skip.len()
        ));
    }
    Error::NoInput {
        name: spec.name.clone(),
        location: spec.input.location.to_string(),
        detail,
    }
}

/// Sends one message per chunk not yet committed; returns how many were sent.
pub async fn enqueue(
    queue: &dyn Queue,
    work: &Location,
    work_store: &dyn ObjectStore,
    job_id: &JobId,
    chunks: &[Chunk],
) -> Result<u64> {
    let done = committed_ids(work_store, job_id).await?;
    let bodies: Vec<String> = chunks
        .iter()
        .filter(|c| !done.contains(&c.id))
        .map(|c| {
            serde_json::to_string(&ChunkTask {
                job_id: job_id.clone(),
                work: work.to_string(),
                chunk: c.clone(),
            })
            .map_err(|source| Error::Serialize {
                what: "chunk task",
                source,
            })
        })
        .collect::<Result<_>>()?;
    queue.send(&bodies).await?;
    Ok(bodies.len() as u64)
}
