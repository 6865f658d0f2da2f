//! The human-readable output of the commands (their `--json` forms print the records as
//! they are).

use fanout::job::{FileSizes, Manifest};
use fanout::planner::PlannedJob;
use fanout::reducer::JobStatus;

/// Bytes in decimal units (1 kB = 1,000 B).
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

/// The cost and duration estimate under the plan.
pub fn print_estimate(plan: &PlannedJob, e: &fanout::cost::Estimate) {
    let u = &e.priced.usage;
    let usd = &e.priced.usd;
    println!(
        "\nestimate ({} MB workers at {:.0} MB/s, {:.1} s per chunk overhead; us-east-1 prices unless overridden)",
        e.model.memory_mb,
        e.model.bytes_per_s / 1e6,
        e.model.overhead_s
    );
    println!(
        "  input            {}",
        human_bytes(plan.summary.input_bytes)
    );
    println!("  chunks           {}", plan.summary.chunks);
    println!(
        "  Lambda           {:>12.1} GB-s  {:>8} invocations   ${:.4}",
        u.lambda_gb_s, u.lambda_requests, usd.lambda
    );
    println!(
        "  S3 requests      {:>8} GET  {:>6} PUT  {:>4} LIST     ${:.4}",
        u.s3_get, u.s3_put, u.s3_list, usd.s3
    );
    println!(
        "  SQS requests     {:>8}                               ${:.4}",
        u.sqs_requests, usd.sqs
    );
    println!(
        "  total                                                ${:.4}",
        usd.total
    );
    println!(
        "  duration         {:.1} s at up to {} concurrent workers (SQS scaling: 5 at first, +300/min, at most {})",
        e.duration_s,
        e.concurrency,
        e.model
            .max_concurrency
            .min(fanout::cost::SQS_MAX_CONCURRENCY)
    );
}

/// The plan's summary and its first 20 chunks (`all`: every chunk).
pub fn print_plan(plan: &PlannedJob, all: bool) {
    let s = &plan.summary;
    println!("job {}", s.job_id);
    println!(
        "  objects  {:>10}   {}",
        s.objects,
        human_bytes(s.input_bytes)
    );
    println!(
        "  chunks   {:>10}   target {} each",
        s.chunks,
        human_bytes(s.target_bytes)
    );
    if let (Some(min), Some(max)) = (
        plan.chunks.iter().map(|c| c.bytes).min(),
        plan.chunks.iter().map(|c| c.bytes).max(),
    ) {
        println!(
            "  sizes    min {}  max {}",
            human_bytes(min),
            human_bytes(max)
        );
    }
    let shown = if all {
        plan.chunks.len()
    } else {
        plan.chunks.len().min(20)
    };
    for c in plan.chunks.iter().take(shown) {
        let what: Vec<String> = c
            .pieces
            .iter()
            .take(3)
            .map(|p| match p {
                fanout::plan::Piece::Object { key, .. } => key.clone(),
                fanout::plan::Piece::Range {
                    key, start, end, ..
                } => format!("{key} [{start}..{end})"),
                fanout::plan::Piece::RowGroups {
                    key, row_groups, ..
                } => format!("{key} row groups {row_groups:?}"),
            })
            .collect();
        let more = if c.pieces.len() > 3 {
            format!(" +{} more", c.pieces.len() - 3)
        } else {
            String::new()
        };
        println!(
            "  {:>5} {} {:>10}  {}{more}",
            c.index,
            c.id,
            human_bytes(c.bytes),
            what.join(", ")
        );
    }
    if shown < plan.chunks.len() {
        println!(
            "  … {} more (--chunks lists all)",
            plan.chunks.len() - shown
        );
    }
}

/// Chunk counts of a job and every failure on record.
pub fn print_status(s: &JobStatus) {
    println!("job {}", s.job_id);
    println!("  planned        {:>8}", s.planned);
    println!("  committed      {:>8}", s.committed);
    println!("  pending        {:>8}", s.pending);
    println!("  failed         {:>8}   (will be retried)", s.failed.len());
    println!(
        "  dead-lettered  {:>8}   (no retry left)",
        s.dead_lettered.len()
    );
    // Only when there are any: a status without lost chunks prints as it always did.
    if !s.lost.is_empty() {
        println!(
            "  lost           {:>8}   ({} dead-lettered, no retry left; see RUNBOOK.md, \"Lost chunks\")",
            s.lost.len(),
            s.lost_dead_lettered().count()
        );
    }
    if !s.stranded.is_empty() {
        println!(
            "  stranded       {:>8}   (no message left to deliver them; see RUNBOOK.md, \"Lost chunks\")",
            s.stranded.len()
        );
    }
    if let Some(n) = s.dead_letter_messages {
        println!("  dead-letter queue {n:>5}   messages (every job's)");
    }
    if let Some(c) = &s.compaction {
        if c.started {
            println!(
                "  compaction     {:>8}   of {} bins committed, {} pending, {} failed, {} dead-lettered",
                c.committed,
                c.bins,
                c.pending,
                c.failed.len(),
                c.dead_lettered.len()
            );
        } else if s.compaction_due() {
            println!(
                "  compaction            due   (every chunk committed; a run or the Compact step starts it)"
            );
        } else {
            println!("  compaction        waiting   (starts once every chunk is committed)");
        }
    }
    for line in s.failed_bins() {
        println!("  {line}");
    }
    if let Some(o) = &s.outcome {
        println!("  outcome        {o}");
    }
    for a in &s.lost {
        println!("  chunk {}", fanout::reducer::describe_lost(a));
    }
    for id in &s.stranded {
        println!("  chunk {}", fanout::reducer::describe_stranded(id));
    }
    for f in s.failed.iter().chain(&s.dead_lettered) {
        println!(
            "  chunk {} after {} attempt(s){}: {}",
            f.chunk_id,
            f.attempts,
            if f.permanent { " [permanent]" } else { "" },
            f.message
        );
    }
}

/// Outcome, row counts, reject rules, files and input of a finalized job.
pub fn print_manifest_summary(m: &Manifest) {
    println!("  outcome        {}", m.outcome);
    for p in &m.problems {
        println!("  problem        {p}");
    }
    println!("  rows read      {:>12}", m.counts.read);
    println!(
        "  rows rejected  {:>12}   ({:.3}%) → {}{}/",
        // With the rows set aside for their partition value: the ratio's numerator and
        // the sum of the rules below.
        m.counts.rejects(),
        m.reject_ratio * 100.0,
        m.rejects_location,
        m.job_id
    );
    for (rule, n) in &m.reject_rules {
        println!("    {rule:<14} {n:>10}");
    }
    println!("  rows valid     {:>12}", m.counts.valid);
    let set_aside = m.counts.partition_rejected;
    println!(
        "  rows written   {:>12}   ({} filtered or added by the transform{})",
        m.counts.written,
        m.counts.valid as i64 - m.counts.written as i64 - set_aside as i64,
        if set_aside > 0 {
            format!(", {set_aside} set aside for their partition value")
        } else {
            String::new()
        }
    );
    println!(
        "  files written  {:>12}   {} in {} partitions → {}",
        m.files.len(),
        human_bytes(m.output_bytes),
        m.partitions.len(),
        m.output
    );
    if let Some(c) = &m.compaction {
        println!(
            "  compacted      {:>12}   chunk files into {} files of up to about {} ({} kept as they were; {} row groups copied, {} encoded again)",
            c.merged_files,
            c.bins,
            // As the spec says it: `128MiB` is 128 MiB, not 134.2 MB.
            if c.target_bytes % (1 << 20) == 0 {
                format!("{} MiB", c.target_bytes >> 20)
            } else {
                human_bytes(c.target_bytes)
            },
            c.kept_files,
            c.copied_row_groups,
            c.encoded_row_groups
        );
    }
    println!(
        "  input          {:>12}   {} objects, {} chunks",
        human_bytes(m.input_bytes),
        m.objects,
        m.chunks
    );
}

/// The file-size figures of a finalized job: before compaction (its chunk files), when
/// it had the stage, and its output as the manifest lists it.
pub fn print_output_files(m: &Manifest) {
    if let Some(c) = &m.compaction {
        print_file_sizes("chunk files, before compaction", &c.chunk_files);
    }
    print_file_sizes("output files, from the manifest", &m.file_sizes());
}

/// Files per partition and the spread of file sizes of one stage of a job's output.
pub fn print_file_sizes(stage: &str, s: &FileSizes) {
    println!("\nfiles ({stage})");
    println!(
        "  files                {} in {} partitions, {}",
        s.files,
        s.partitions,
        human_bytes(s.total_bytes)
    );
    let count = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    if let Some(p) = &s.files_per_partition {
        println!(
            "  files per partition  min {}  median {}  max {}",
            p.min,
            count(p.median),
            p.max
        );
    }
    if let Some(b) = &s.file_bytes {
        let at = |x: f64| human_bytes(x.round() as u64);
        println!(
            "  file size            min {}  p10 {}  median {}  p90 {}  max {}",
            human_bytes(b.min),
            at(b.p10),
            at(b.median),
            at(b.p90),
            human_bytes(b.max)
        );
    }
    println!(
        "  small files          {} of {} under {} MiB",
        s.small_files,
        s.files,
        s.small_file_bytes as f64 / (1u64 << 20) as f64
    );
}

/// Rows of the aggregate printed by `run` and `inspect`.
const PRINTED_AGGREGATE_ROWS: usize = 50;

/// The merged aggregate as a right-aligned table of at most 50 rows, read from the job's
/// aggregate table (`aggregates.json` when written, else `aggregates.parquet`).
pub async fn print_aggregate(
    env: &fanout::env::Env,
    work: &fanout::location::Location,
    m: &Manifest,
) -> anyhow::Result<()> {
    let Some(a) = &m.aggregate else {
        return Ok(());
    };
    let store = env.store(work)?;
    let rows = fanout::job::read_aggregate_rows(store.as_ref(), a, PRINTED_AGGREGATE_ROWS).await?;
    println!(
        "\naggregate by [{}]  ({} rows)",
        a.spec.group_by.join(", "),
        a.parquet.rows
    );
    let cols: Vec<String> = a
        .spec
        .group_by
        .iter()
        .cloned()
        .chain(a.spec.measures.iter().map(|x| x.name.clone()))
        .collect();
    let cell = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "∅".into(),
        Some(v) => v.to_string(),
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(r.get(c))).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("  {}", line(&cols));
    for r in &rows {
        println!("  {}", line(r));
    }
    let more = a.parquet.rows.saturating_sub(rows.len() as u64);
    if more > 0 {
        println!(
            "  … {more} more rows in {}",
            work.join(a.json.as_deref().unwrap_or(&a.parquet.key))
        );
    }
    Ok(())
}
