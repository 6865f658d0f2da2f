//! `fanout report`: one self-contained HTML page about a job, from its records.
//!
//! The data — chunk timeline, counts, reject reasons with examples, partitions and
//! files, cost, aggregate — is read from the work location (plan, chunk records, reject
//! files, manifest) and embedded as JSON in `template.html`, which draws it with inline
//! SVG. Nothing is fetched when the page is opened: no CDN, no network.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::cost::JobCost;
use crate::env::Env;
use crate::ids::JobId;
use crate::job::{AggregateResult, ChunkRecord, Counts, FileSizes, Manifest, PlanSummary};
use crate::location::Location;
use crate::transform::Reject;
use crate::{Error, Result};

const TEMPLATE: &str = include_str!("template.html");
const PLACEHOLDER: &str =
    r#"<script type="application/json" id="report-data">/*FANOUT_REPORT_DATA*/</script>"#;

/// Examples kept per reject reason.
const EXAMPLES_PER_RULE: usize = 3;
/// Reject files read for examples at most (counts come from the chunk records).
const MAX_REJECT_FILES: usize = 50;

/// The report page for `data`.
///
/// Every `<` in the JSON is written `\u003c`: inside a `<script>` element the HTML parser
/// would otherwise end it at `</script` or be derailed by `<!--<script>` in a raw record.
///
/// ```
/// let html = fanout::report::render(&serde_json::json!({"raw": "</script><!--<script>"}));
/// assert!(html.contains(r#"{"raw":"\u003c/script>\u003c!--\u003cscript>"}"#));
/// ```
pub fn render(data: &Value) -> String {
    let json = data.to_string().replace('<', "\\u003c");
    TEMPLATE.replacen(
        PLACEHOLDER,
        &format!(r#"<script type="application/json" id="report-data">{json}</script>"#),
        1,
    )
}

/// Reads a job's records and returns the report's data.
pub async fn collect(env: &Env, work: &Location, job_id: &JobId) -> Result<Value> {
    let store = env.store(work)?;
    let (summary, spec, plan) = crate::job::load_job(store.as_ref(), work, job_id).await?;
    let records: Vec<ChunkRecord> = crate::job::chunk_records(&store, job_id).await?;
    let manifest: Option<Manifest> = crate::job::read_manifest_opt(store.as_ref(), job_id).await?;

    let span = Span::of(&records, summary.planned_ms);
    let outcome = match &manifest {
        Some(m) => m.outcome.clone(),
        None => "running".to_string(),
    };
    let tally = Tally::of(&records);
    let examples =
        reject_examples(env, &spec.rejects.location, &records, &tally.rule_counts).await?;
    let by_rule = rejects_by_rule(tally.rule_counts, examples);
    let cost = cost(env, &summary, manifest.as_ref(), &records)?;
    let file_sizes = file_sizes(manifest.as_ref(), &records)?;
    let aggregate = match manifest.as_ref().and_then(|m| m.aggregate.as_ref()) {
        Some(a) => {
            let rows =
                crate::job::read_aggregate_rows(store.as_ref(), a, REPORT_AGGREGATE_ROWS).await?;
            Some(aggregate_table(a, &rows))
        }
        None => None,
    };

    Ok(json!({
        "generated_at_ms": crate::clock::now_ms(),
        "job": {
            "id": job_id, "name": spec.name, "spec_name": spec.name, "outcome": outcome,
            "started_ms": span.started, "finished_ms": span.finished, "workers": span.workers,
            "planned_chunks": plan.len(),
        },
        "totals": {
            "chunks": records.len(), "rows_read": tally.totals.read,
            "rows_valid": tally.totals.valid, "rows_rejected": tally.totals.rejects(),
            "rows_written": tally.totals.written, "bytes_read": tally.bytes_read,
            "bytes_written": tally.bytes_written, "files": tally.files.len(),
            "partitions": tally.partitions.len(),
        },
        "chunks": tally.chunks,
        // Rows set aside for their partition value included, as in `by_rule`.
        "rejects": {"total": tally.totals.rejects(), "by_rule": by_rule},
        "partitions": tally.partitions.into_iter().map(|(path, (files, rows, bytes))| json!({
            "path": path, "files": files, "rows": rows, "bytes": bytes,
        })).collect::<Vec<_>>(),
        "files": tally.files,
        "file_sizes": file_sizes,
        "cost": cost,
        "aggregate": aggregate,
    }))
}

/// When the job's chunks ran, and on how many workers (the timeline's extent and lanes).
struct Span {
    started: u64,
    finished: u64,
    workers: usize,
}

impl Span {
    /// A job with no chunk record yet starts and ends when it was planned.
    fn of(records: &[ChunkRecord], planned_ms: u64) -> Self {
        let started = records
            .iter()
            .map(|r| r.started_ms)
            .min()
            .unwrap_or(planned_ms);
        let finished = records
            .iter()
            .map(|r| r.started_ms + r.elapsed_ms)
            .max()
            .unwrap_or(started);
        let workers: BTreeSet<&str> = records.iter().map(|r| r.worker.as_str()).collect();
        Span {
            started,
            finished,
            workers: workers.len(),
        }
    }
}

/// What the chunk records add up to: totals, one row per chunk, files and partitions, and
/// rejects per rule.
struct Tally {
    totals: Counts,
    bytes_read: u64,
    bytes_written: u64,
    /// One row per output file, in record order.
    files: Vec<Value>,
    /// Files, rows and bytes per partition path.
    partitions: BTreeMap<String, (u64, u64, u64)>,
    rule_counts: BTreeMap<String, u64>,
    /// One row per chunk, by start time.
    chunks: Vec<Value>,
}

impl Tally {
    fn of(records: &[ChunkRecord]) -> Self {
        let mut t = Tally {
            totals: Counts::default(),
            bytes_read: 0,
            bytes_written: 0,
            files: Vec::new(),
            partitions: BTreeMap::new(),
            rule_counts: BTreeMap::new(),
            chunks: Vec::with_capacity(records.len()),
        };
        for r in records {
            t.add(r);
        }
        t.chunks.sort_by_key(|c| c["started_ms"].as_u64());
        t
    }

    fn add(&mut self, r: &ChunkRecord) {
        self.totals.add(&r.counts);
        self.bytes_read += r.bytes_read;
        let written: u64 = r.outputs.iter().map(|f| f.bytes).sum();
        self.bytes_written += written;
        for (rule, n) in &r.reject_rules {
            *self.rule_counts.entry(rule.clone()).or_insert(0) += n;
        }
        for f in &r.outputs {
            let partition = f.key.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            let p = self
                .partitions
                .entry(partition.clone())
                .or_insert((0, 0, 0));
            p.0 += 1;
            p.1 += f.rows;
            p.2 += f.bytes;
            self.files.push(
                json!({"key": f.key, "partition": partition, "rows": f.rows, "bytes": f.bytes}),
            );
        }
        self.chunks.push(json!({
            "id": r.chunk_id, "index": r.index, "worker": r.worker, "attempt": r.attempt,
            "started_ms": r.started_ms, "elapsed_ms": r.elapsed_ms,
            "rows_read": r.counts.read, "rows_written": r.counts.written,
            "rows_rejected": r.counts.rejected, "bytes_read": r.bytes_read, "range_bytes": r.range_bytes,
            "bytes_written": written, "stage_ms": r.stage_ms,
        }));
    }
}

/// Files per partition and file sizes, one entry per stage of the output: the chunk
/// files before compaction (when the job had the stage) and the manifest's files once the
/// job is finalized, the chunk records' files before.
fn file_sizes(manifest: Option<&Manifest>, records: &[ChunkRecord]) -> Result<Value> {
    let chunk_files = || {
        FileSizes::of(records.iter().flat_map(|r| {
            r.outputs
                .iter()
                .map(|f| (crate::job::partition_path(&f.key), f.bytes))
        }))
    };
    let stages = match manifest {
        Some(m) => {
            let mut stages = Vec::new();
            if let Some(c) = &m.compaction {
                stages.push(("chunk files, before compaction", c.chunk_files.clone()));
            }
            stages.push(("output files (manifest)", m.file_sizes()));
            stages
        }
        None => vec![("chunk files so far (chunk records)", chunk_files())],
    };
    let mut out = Vec::new();
    for (stage, sizes) in stages {
        let mut v = serde_json::to_value(&sizes).map_err(|source| Error::Serialize {
            what: "file sizes",
            source,
        })?;
        if let Value::Object(o) = &mut v {
            o.insert("stage".into(), Value::from(stage));
        }
        out.push(v);
    }
    Ok(Value::Array(out))
}

/// Up to [`EXAMPLES_PER_RULE`] rejects per rule, from the first reject files; stops reading
/// once every rule in `rule_counts` has its examples.
async fn reject_examples(
    env: &Env,
    rejects: &Location,
    records: &[ChunkRecord],
    rule_counts: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, Vec<Reject>>> {
    let mut examples: BTreeMap<String, Vec<Reject>> = BTreeMap::new();
    let rejects_store = env.store(rejects)?;
    for rf in records
        .iter()
        .filter_map(|r| r.rejects.as_ref())
        .take(MAX_REJECT_FILES)
    {
        if examples.len() == rule_counts.len()
            && examples.values().all(|v| v.len() >= EXAMPLES_PER_RULE)
        {
            break;
        }
        let body = rejects_store.get(&rf.key).await?;
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            // Examples are illustrations: a line that does not parse is skipped, not fatal.
            if let Ok(r) = serde_json::from_slice::<Reject>(line) {
                let e = examples.entry(r.rule.clone()).or_default();
                if e.len() < EXAMPLES_PER_RULE {
                    e.push(r);
                }
            }
        }
    }
    Ok(examples)
}

/// One row per reject rule, most frequent first, with its examples.
fn rejects_by_rule(
    rule_counts: BTreeMap<String, u64>,
    mut examples: BTreeMap<String, Vec<Reject>>,
) -> Vec<Value> {
    let mut by_rule: Vec<(String, u64)> = rule_counts.into_iter().collect();
    by_rule.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_rule
        .into_iter()
        .map(|(rule, count)| {
            let ex = examples.remove(&rule).unwrap_or_default();
            json!({
                "rule": rule,
                "column": ex.first().and_then(|e| e.column.clone()),
                "count": count,
                "examples": ex.iter().map(|e| json!({
                    "object": e.object,
                    "line": e.line,
                    "offset": e.byte_offset.or(e.decompressed_offset),
                    "message": e.message,
                    "raw": e.raw,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// The manifest's cost once the job is finalized; before that, the cost measured so far.
fn cost(
    env: &Env,
    summary: &PlanSummary,
    manifest: Option<&Manifest>,
    records: &[ChunkRecord],
) -> Result<Value> {
    let value = match manifest.and_then(|m| m.cost.as_ref()) {
        Some(c) => serde_json::to_value(c),
        None => {
            let usage: Vec<_> = records.iter().map(ChunkRecord::usage).collect();
            serde_json::to_value(JobCost::measure(
                &usage,
                env.worker_memory_mb,
                None,
                summary.estimate,
            ))
        }
    };
    value.map_err(|source| Error::Serialize {
        what: "job cost",
        source,
    })
}

/// Rows of the aggregate the report holds (the page shows as many): the rest are in the
/// job's aggregate table, which the page names.
pub const REPORT_AGGREGATE_ROWS: usize = 1000;

/// The aggregate as a table of strings: its columns (those of the first row, or the spec's
/// group-by and measures when there is no row), one cell per column and row, the number of
/// rows in all and the files holding them.
fn aggregate_table(a: &AggregateResult, rows: &[serde_json::Map<String, Value>]) -> Value {
    let columns: Vec<String> = rows
        .first()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_else(|| {
            a.spec
                .group_by
                .iter()
                .cloned()
                .chain(a.spec.measures.iter().map(|m| m.name.clone()))
                .collect()
        });
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match r.get(c) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect()
        })
        .collect();
    let files: Vec<&str> = a
        .json
        .iter()
        .map(String::as_str)
        .chain([a.parquet.key.as_str()])
        .collect();
    json!({
        "group_by": a.spec.group_by, "columns": columns, "rows": cells,
        "total_rows": a.parquet.rows, "files": files,
    })
}
