//! The job's aggregate, merged in bounded memory: each commit record's partial goes to a
//! sorted run on local disk as the record is read, the runs are merged k ways
//! ([`crate::aggregate::runs`]), and the merged groups stream to `aggregates.parquet` in
//! batches. `aggregates.json` is written only for a small aggregate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use parquet::arrow::ArrowWriter;

use crate::aggregate::runs::{self, Run, RunWriter};
use crate::aggregate::{self, Group, WideSums};
use crate::ids::JobId;
use crate::job::{
    AggregateResult, AggregateTable, ChunkRecord, chunk_record_keys, get_json, layout,
    to_json_bytes,
};
use crate::spec::AggregateSpec;
use crate::store::ObjectStore;
use crate::{Error, Result};

/// Largest aggregate (in rows, one per group) also written as `aggregates.json`; larger
/// ones are in `aggregates.parquet` only. 10,000 rows of JSON is a few MB at most, easy
/// to open in an editor or a notebook.
pub const DEFAULT_AGGREGATE_JSON_MAX_ROWS: u64 = 10_000;

/// Commit records read at once while their partials are moved to runs: each one's partial
/// is held parsed until written (a chunk's groups, up to its rows), so fewer than
/// [`crate::job::READ_CONCURRENCY`].
pub const PARTIAL_READ_CONCURRENCY: usize = 4;

/// Merged groups per Arrow batch written to `aggregates.parquet`.
const BATCH_GROUPS: usize = 8192;

/// Rows per row group of `aggregates.parquet`: what its writer holds before flushing.
const TABLE_ROW_GROUP_ROWS: usize = 131_072;

fn staging(context: String, source: std::io::Error) -> Error {
    Error::Staging { context, source }
}

/// A folder for the job's runs, removed when dropped.
pub(super) fn run_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("fanout-aggregate-")
        .tempdir()
        .map_err(|e| {
            staging(
                format!("creating a folder in {}", std::env::temp_dir().display()),
                e,
            )
        })
}

/// Reads every commit record of the job, sorted by chunk index, with its partial aggregate
/// moved out into a run in `dir` (runs in chunk order as well).
pub(super) async fn records_and_runs(
    store: &Arc<dyn ObjectStore>,
    job_id: &JobId,
    spec: Option<&AggregateSpec>,
    dir: &Path,
) -> Result<(Vec<ChunkRecord>, Vec<Run>)> {
    let keys = chunk_record_keys(store.as_ref(), job_id).await?;
    let spec = spec.cloned();
    let mut records: Vec<(ChunkRecord, Option<Run>)> = stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            let spec = spec.clone();
            let path = dir.join(format!("chunk-{}.run", k.replace('/', "_")));
            async move {
                let mut r: ChunkRecord = get_json(store.as_ref(), &k).await?;
                let run = match (r.aggregate.take(), spec) {
                    (Some(p), Some(spec)) => Some(
                        tokio::task::spawn_blocking(move || {
                            runs::write_run(&spec, &path, p.groups)
                        })
                        .await
                        .map_err(|source| Error::Task {
                            what: "writing a partial aggregate's run",
                            source,
                        })??,
                    ),
                    _ => None,
                };
                Ok::<_, Error>((r, run))
            }
        })
        .buffered(PARTIAL_READ_CONCURRENCY)
        .try_collect()
        .await?;
    records.sort_by_key(|(r, _)| r.index);
    let (records, runs): (Vec<ChunkRecord>, Vec<Option<Run>>) = records.into_iter().unzip();
    Ok((records, runs.into_iter().flatten().collect()))
}

/// Merges the runs exactly and writes `aggregates.parquet` and, for a small aggregate,
/// `aggregates.json`; memory stays bounded whatever the number of groups.
pub(super) async fn write_aggregate(
    store: &dyn ObjectStore,
    job_id: &JobId,
    spec: &AggregateSpec,
    schema: &arrow::datatypes::Schema,
    runs: Vec<Run>,
    dir: &Path,
) -> Result<AggregateResult> {
    let (spec_c, schema_c, dir_c) = (spec.clone(), schema.clone(), dir.to_path_buf());
    let table = tokio::task::spawn_blocking(move || encode_table(&spec_c, &schema_c, runs, &dir_c))
        .await
        .map_err(|source| Error::Task {
            what: "merging the aggregate",
            source,
        })??;
    let json = match table.json_rows {
        Some(rows) => {
            let key = layout::aggregates_json(job_id);
            store
                .put(&key, to_json_bytes("aggregate rows", &rows)?)
                .await?;
            Some(key)
        }
        None => {
            // A re-run of finalize over a grown job must not leave a stale small table.
            store.delete(&layout::aggregates_json(job_id)).await?;
            None
        }
    };
    let key = layout::aggregates_parquet(job_id);
    let bytes = std::fs::metadata(&table.parquet)
        .map_err(|e| staging(format!("reading {}", table.parquet.display()), e))?
        .len();
    store.put_file(&key, &table.parquet).await?;
    Ok(AggregateResult {
        spec: spec.clone(),
        parquet: AggregateTable {
            key,
            rows: table.rows,
            bytes,
        },
        json,
    })
}

/// The encoded table: a local Parquet file, and its JSON rows when small.
struct EncodedTable {
    parquet: PathBuf,
    rows: u64,
    json_rows: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
}

/// The runs merged, streaming, into the table in batches. One pass when the runs' bounds
/// show every integer sum fits `i64` (the usual case); else a first pass merges them into
/// one run, learning the width of the sums, and the second writes that run.
fn encode_table(
    spec: &AggregateSpec,
    schema: &arrow::datatypes::Schema,
    runs: Vec<Run>,
    dir: &Path,
) -> Result<EncodedTable> {
    let bounded = WideSums::from_bounds(spec, runs.iter().map(|r| r.magnitudes.as_slice()));
    let (runs, wide) = match bounded {
        Some(wide) => (runs, wide),
        None => {
            let mut merged = RunWriter::create(&dir.join("merged.run"))?;
            let mut wide = WideSums::new(spec);
            runs::merge_runs(spec, runs, dir, runs::DEFAULT_MERGE_FAN_IN, &mut |g| {
                wide.see(&g);
                merged.push(&g)
            })?;
            (vec![merged.finish()?], wide)
        }
    };
    let path = dir.join("aggregates.parquet");
    let file = std::fs::File::create(&path)
        .map_err(|e| staging(format!("creating {}", path.display()), e))?;
    let props = crate::write::writer_properties(
        crate::spec::OutputCompression::Zstd(3),
        TABLE_ROW_GROUP_ROWS,
    )?;
    // The table's schema, whatever its rows: that of a table without any.
    let empty = aggregate::finish_groups(spec, schema, &[], &wide)?;
    let mut writer = ArrowWriter::try_new(file, empty.schema(), Some(props))?;
    let mut json_rows = Some(Vec::new());
    let mut rows = 0u64;
    let mut batch: Vec<Group> = Vec::with_capacity(BATCH_GROUPS);
    let mut flush = |batch: &mut Vec<Group>, writer: &mut ArrowWriter<std::fs::File>| {
        let table = aggregate::finish_groups(spec, schema, batch, &wide)?;
        rows += batch.len() as u64;
        // JSON rows are kept only while the table is small enough to have them.
        if rows > DEFAULT_AGGREGATE_JSON_MAX_ROWS {
            json_rows = None;
        } else if let Some(json) = json_rows.as_mut() {
            json.extend(aggregate::to_json_rows(&table));
        }
        batch.clear();
        writer.write(&table).map_err(Error::from)
    };
    runs::merge_runs(spec, runs, dir, runs::DEFAULT_MERGE_FAN_IN, &mut |g| {
        batch.push(g);
        if batch.len() == BATCH_GROUPS {
            flush(&mut batch, &mut writer)?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        flush(&mut batch, &mut writer)?;
    }
    writer.close()?;
    Ok(EncodedTable {
        parquet: path,
        rows,
        json_rows,
    })
}
