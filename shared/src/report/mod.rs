//! `fanout report`: one self-contained HTML page about a job, from its records.
//!
//! The data — chunk timeline, counts, reject reasons with examples, partitions and
//! files, cost, aggregate — is read from the work location (plan, chunk records, reject
//! files, manifest) and embedded as JSON in `template.html`, which draws it with inline
//! SVG. Nothing is fetched when the page is opened: no CDN, no network.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::Result;
use crate::env::Env;
use crate::job::{ChunkRecord, Manifest};
use crate::location::Location;
use crate::transform::Reject;

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
pub async fn collect(env: &Env, work: &Location, job_id: &str) -> Result<Value> {
    let store = env.store(work)?;
    let (summary, spec, plan) = crate::job::load_job(store.as_ref(), work, job_id).await?;
    let records: Vec<ChunkRecord> = crate::job::chunk_records(&store, job_id).await?;
    let manifest: Option<Manifest> = crate::job::read_manifest_opt(store.as_ref(), job_id).await?;

    let started = records
        .iter()
        .map(|r| r.started_ms)
        .min()
        .unwrap_or(summary.planned_ms);
    let finished = records
        .iter()
        .map(|r| r.started_ms + r.elapsed_ms)
        .max()
        .unwrap_or(started);
    let workers: BTreeSet<&str> = records.iter().map(|r| r.worker.as_str()).collect();
    let outcome = match &manifest {
        Some(m) => m.outcome.clone(),
        None => "running".to_string(),
    };

    let mut totals = crate::job::Counts::default();
    let (mut bytes_read, mut bytes_written, mut files) = (0u64, 0u64, Vec::new());
    let mut partitions: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut rule_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut chunks = Vec::with_capacity(records.len());
    for r in &records {
        totals.add(&r.counts);
        bytes_read += r.bytes_read;
        let written: u64 = r.outputs.iter().map(|f| f.bytes).sum();
        bytes_written += written;
        for (rule, n) in &r.reject_rules {
            *rule_counts.entry(rule.clone()).or_insert(0) += n;
        }
        for f in &r.outputs {
            let partition = f.key.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            let p = partitions.entry(partition.clone()).or_insert((0, 0, 0));
            p.0 += 1;
            p.1 += f.rows;
            p.2 += f.bytes;
            files.push(
                json!({"key": f.key, "partition": partition, "rows": f.rows, "bytes": f.bytes}),
            );
        }
        chunks.push(json!({
            "id": r.chunk_id, "index": r.index, "worker": r.worker, "attempt": r.attempt,
            "started_ms": r.started_ms, "elapsed_ms": r.elapsed_ms,
            "rows_read": r.counts.read, "rows_written": r.counts.written,
            "rows_rejected": r.counts.rejected, "bytes_read": r.bytes_read,
            "bytes_written": written, "stage_ms": r.stage_ms,
        }));
    }
    chunks.sort_by_key(|c| c["started_ms"].as_u64());

    // Examples per rule, from the first reject files.
    let mut examples: BTreeMap<String, Vec<Reject>> = BTreeMap::new();
    let rejects_store = env.store(&spec.rejects.location)?;
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
            if let Ok(r) = serde_json::from_slice::<Reject>(line) {
                let e = examples.entry(r.rule.clone()).or_default();
                if e.len() < EXAMPLES_PER_RULE {
                    e.push(r);
                }
            }
        }
    }
    let mut by_rule: Vec<(String, u64)> = rule_counts.into_iter().collect();
    by_rule.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let by_rule: Vec<Value> = by_rule
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
        .collect();

    let cost = match manifest.as_ref().and_then(|m| m.cost.clone()) {
        Some(c) => serde_json::to_value(c).unwrap_or(Value::Null),
        None => {
            // Not finalized yet: measured so far.
            let usage: Vec<_> = records.iter().map(ChunkRecord::usage).collect();
            serde_json::to_value(crate::cost::JobCost::measure(
                &usage,
                env.worker_memory_mb,
                None,
                summary.estimate,
            ))
            .unwrap_or(Value::Null)
        }
    };

    let aggregate = manifest
        .as_ref()
        .and_then(|m| m.aggregate.as_ref())
        .map(|a| {
            let columns: Vec<String> = a
                .rows
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
            let rows: Vec<Vec<String>> = a
                .rows
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
            json!({"group_by": a.spec.group_by, "columns": columns, "rows": rows})
        });

    Ok(json!({
        "generated_at_ms": crate::clock::now_ms(),
        "job": {
            "id": job_id, "name": spec.name, "spec_name": spec.name, "outcome": outcome,
            "started_ms": started, "finished_ms": finished, "workers": workers.len(),
            "planned_chunks": plan.len(),
        },
        "totals": {
            "chunks": records.len(), "rows_read": totals.read, "rows_valid": totals.valid,
            "rows_rejected": totals.rejected, "rows_written": totals.written,
            "bytes_read": bytes_read, "bytes_written": bytes_written,
            "files": files.len(), "partitions": partitions.len(),
        },
        "chunks": chunks,
        "rejects": {"total": totals.rejected, "by_rule": by_rule},
        "partitions": partitions.into_iter().map(|(path, (files, rows, bytes))| json!({
            "path": path, "files": files, "rows": rows, "bytes": bytes,
        })).collect::<Vec<_>>(),
        "files": files,
        "cost": cost,
        "aggregate": aggregate,
    }))
}
