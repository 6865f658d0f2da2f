//! RecordBatch → RecordBatch: typed conversion, validation rules, rejects, and the SQL step.
//!
//! [`conform`] casts text (or a Parquet file's own types) to the spec's schema value by
//! value: a value that does not convert, and a row that breaks a rule, is rejected with
//! the rule and a message, never dropped and never failing its neighbours. The kept rows
//! then go through the SQL transform ([`Transformer`], DataFusion, feature `sql`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch, StringArray,
};
use arrow::compute::kernels::cmp;
use arrow::compute::{CastOptions, cast_with_options, filter};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::Result;
use crate::read::typed::{short, unconverted};
use crate::read::{Decoded, LinesBefore, PendingReject};
use crate::spec::{Check, Rule, canonical_text};

/// A quarantined record, as written to the rejects location (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    /// Rule broken: `format`, `encoding`, `header`, `schema`, `type`, `not_null`, `min: 0`, …
    pub rule: String,
    /// Column at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What was wrong.
    pub message: String,
    /// Source object key.
    pub object: String,
    /// Byte offset of the record in the object (plain objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
    /// Byte offset in the decompressed stream (compressed objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decompressed_offset: Option<u64>,
    /// 1-based line where the record starts (text formats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 0-based row in the file (Parquet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The record's raw text (or its row as JSON for Parquet).
    pub raw: String,
}

/// Converted rows and the rows refused.
#[derive(Debug)]
pub struct Conformed {
    /// Rows that converted and passed every rule, in the spec's schema.
    pub batch: RecordBatch,
    /// Refused rows: (row in the decoded batch, why).
    pub rejects: Vec<(usize, PendingReject)>,
}

fn describe(col: &ArrayRef, row: usize) -> String {
    if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
        return s.value(row).to_string();
    }
    ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Casts the decoded columns to `schema` and applies `rules`.
pub fn conform(decoded: &Decoded, schema: &SchemaRef, rules: &[Rule]) -> Result<Conformed> {
    let n = decoded.batch.num_rows();
    if n == 0 {
        return Ok(Conformed {
            batch: RecordBatch::new_empty(schema.clone()),
            rejects: Vec::new(),
        });
    }
    // A row keeps the first reason it was refused for: columns in schema order, then
    // rules in spec order.
    let mut rejected: Vec<Option<PendingReject>> = vec![None; n];
    let cast_opts = CastOptions {
        safe: true,
        ..Default::default()
    };
    let mut typed: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let src = decoded.batch.column(i);
        let (out, whole_column) = convert(src, f.data_type(), n, &cast_opts)?;
        if out.null_count() > src.null_count() {
            reject_unconverted(
                decoded,
                src,
                &out,
                f,
                whole_column.as_deref(),
                &mut rejected,
            );
        }
        typed.push(out);
    }
    for rule in rules {
        let col = &typed[rule.index];
        let violates = violations(&rule.check, col, n)?;
        if violates.true_count() == 0 {
            continue;
        }
        reject_violations(decoded, rule, col, &violates, &mut rejected);
    }
    keep_conforming(schema, typed, rejected, n)
}

/// One decoded column in the type `to`, with the message for every value when the
/// column as a whole has no conversion to it (its values are then all null).
fn convert(
    src: &ArrayRef,
    to: &DataType,
    n: usize,
    cast_opts: &CastOptions<'_>,
) -> Result<(ArrayRef, Option<String>)> {
    if src.data_type() == to {
        return Ok((src.clone(), None));
    }
    let source = if src.data_type() == &DataType::Utf8 && is_trimmable(to) {
        trim(src)?
    } else {
        src.clone()
    };
    Ok(match cast_with_options(&source, to, cast_opts) {
        Ok(out) if src.data_type().is_floating() && to.is_integer() => {
            (exact_integers(src, out)?, None)
        }
        Ok(out) => (out, None),
        // No conversion exists (a Parquet column of another type): every value of
        // the column is refused, record by record; the chunk itself goes on.
        Err(e) => (
            arrow::array::new_null_array(to, n),
            Some(format!(
                "a {} column cannot be read as {} ({e})",
                src.data_type(),
                to
            )),
        ),
    })
}

/// Refuses, by the `type` rule, each row not yet refused whose value in `src` became
/// null in `out`.
fn reject_unconverted(
    decoded: &Decoded,
    src: &ArrayRef,
    out: &ArrayRef,
    f: &Field,
    whole_column: Option<&str>,
    rejected: &mut [Option<PendingReject>],
) {
    for (r, slot) in rejected.iter_mut().enumerate() {
        if src.is_valid(r) && out.is_null(r) && slot.is_none() {
            let message = match whole_column {
                Some(m) => format!("`{}`: {m}", short(&describe(src, r))),
                None => unconverted(&describe(src, r), f.data_type()),
            };
            *slot = Some(PendingReject {
                origin: decoded.origins[r],
                rule: "type".into(),
                column: Some(f.name().clone()),
                message,
            });
        }
    }
}

/// The rows of `col` that break `check` (true), out of `n`.
fn violations(check: &Check, col: &ArrayRef, n: usize) -> Result<BooleanArray> {
    Ok(match check {
        Check::NotNull => BooleanArray::from((0..n).map(|r| col.is_null(r)).collect::<Vec<_>>()),
        Check::Min(bound) if col.data_type().is_floating() => {
            float_violations(col, bound, |v, b| v < b)?
        }
        Check::Max(bound) if col.data_type().is_floating() => {
            float_violations(col, bound, |v, b| v > b)?
        }
        Check::Min(bound) => cmp::lt(col, &arrow::array::Scalar::new(bound.clone()))?,
        Check::Max(bound) => cmp::gt(col, &arrow::array::Scalar::new(bound.clone()))?,
        Check::OneOf(set) => {
            let text = canonical_text(col)?;
            BooleanArray::from(
                (0..n)
                    .map(|r| text.is_valid(r) && !set.contains(text.value(r)))
                    .collect::<Vec<_>>(),
            )
        }
        Check::Matches(re) => {
            let text = canonical_text(col)?;
            BooleanArray::from(
                (0..n)
                    .map(|r| text.is_valid(r) && !re.is_match(text.value(r)))
                    .collect::<Vec<_>>(),
            )
        }
        Check::Finite => match col.data_type() {
            DataType::Float64 => {
                let a = col
                    .as_any()
                    .downcast_ref::<arrow::array::PrimitiveArray<Float64Type>>();
                BooleanArray::from(
                    (0..n)
                        .map(|r| a.is_some_and(|a| a.is_valid(r) && !a.value(r).is_finite()))
                        .collect::<Vec<_>>(),
                )
            }
            _ => {
                let a = col
                    .as_any()
                    .downcast_ref::<arrow::array::PrimitiveArray<Float32Type>>();
                BooleanArray::from(
                    (0..n)
                        .map(|r| a.is_some_and(|a| a.is_valid(r) && !a.value(r).is_finite()))
                        .collect::<Vec<_>>(),
                )
            }
        },
    })
}

/// Refuses, by `rule`, each row not yet refused that `violates` marks.
fn reject_violations(
    decoded: &Decoded,
    rule: &Rule,
    col: &ArrayRef,
    violates: &BooleanArray,
    rejected: &mut [Option<PendingReject>],
) {
    for (r, slot) in rejected.iter_mut().enumerate() {
        if violates.is_valid(r) && violates.value(r) && slot.is_none() {
            let message = match &rule.check {
                Check::NotNull => format!("`{}` is null", rule.column),
                _ => format!(
                    "`{}` = `{}` breaks {}",
                    rule.column,
                    short(&describe(col, r)),
                    rule.label
                ),
            };
            let rule_name = match &rule.check {
                Check::NotNull => "not_null".to_string(),
                _ => rule.label.split(':').next().unwrap_or("rule").to_string(),
            };
            *slot = Some(PendingReject {
                origin: decoded.origins[r],
                rule: rule_name,
                column: Some(rule.column.clone()),
                message,
            });
        }
    }
}

/// The rows no step refused, in `schema`, and the refused ones by row.
fn keep_conforming(
    schema: &SchemaRef,
    typed: Vec<ArrayRef>,
    rejected: Vec<Option<PendingReject>>,
    n: usize,
) -> Result<Conformed> {
    let mut keep = BooleanBufferBuilder::new(n);
    let mut rejects = Vec::new();
    for (r, rej) in rejected.into_iter().enumerate() {
        keep.append(rej.is_none());
        if let Some(rej) = rej {
            rejects.push((r, rej));
        }
    }
    let keep = BooleanArray::new(keep.finish(), None);
    let columns = if rejects.is_empty() {
        typed
    } else {
        typed
            .iter()
            .map(|c| filter(c, &keep))
            .collect::<Result<Vec<_>, _>>()?
    };
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(n - rejects.len())),
    )?;
    Ok(Conformed { batch, rejects })
}

/// Float → integer casts truncate (2.5 → 2): a value that does not survive the round
/// trip becomes null, so it is rejected like unparsable text would be.
fn exact_integers(src: &ArrayRef, out: ArrayRef) -> Result<ArrayRef> {
    let back = arrow::compute::cast(&out, &DataType::Float64)?;
    let orig = arrow::compute::cast(src, &DataType::Float64)?;
    let (back, orig) = (
        back.as_primitive::<Float64Type>(),
        orig.as_primitive::<Float64Type>(),
    );
    let lossy: BooleanArray = (0..out.len())
        .map(|r| Some(out.is_valid(r) && back.value(r) != orig.value(r)))
        .collect();
    Ok(arrow::compute::nullif(&out, &lossy)?)
}

/// IEEE comparison for floats (arrow's kernels order -0.0 below 0.0 and NaN above all).
fn float_violations(
    col: &ArrayRef,
    bound: &ArrayRef,
    breaks: impl Fn(f64, f64) -> bool,
) -> Result<BooleanArray> {
    let v = arrow::compute::cast(col, &DataType::Float64)?;
    let b = arrow::compute::cast(bound, &DataType::Float64)?;
    let (v, b) = (
        v.as_primitive::<Float64Type>(),
        b.as_primitive::<Float64Type>().value(0),
    );
    Ok((0..v.len())
        .map(|r| v.is_valid(r).then(|| breaks(v.value(r), b)))
        .collect())
}

fn is_trimmable(t: &DataType) -> bool {
    !matches!(t, DataType::Utf8 | DataType::LargeUtf8)
}

/// Numbers and dates in text often carry padding (`" 12"`); Spark trims it, so do we.
fn trim(a: &ArrayRef) -> Result<ArrayRef> {
    let s = a
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .unwrap_or_else(|| StringArray::from(Vec::<Option<&str>>::new()));
    if !s
        .iter()
        .flatten()
        .any(|v| v.starts_with(char::is_whitespace) || v.ends_with(char::is_whitespace))
    {
        return Ok(a.clone());
    }
    Ok(Arc::new(
        s.iter().map(|v| v.map(str::trim)).collect::<StringArray>(),
    ))
}

/// Resolves reader and conversion rejects of one piece into [`Reject`]s.
pub fn resolve_rejects(
    decoded: &Decoded,
    pending: impl IntoIterator<Item = (Option<usize>, PendingReject)>,
) -> Vec<Reject> {
    let text_source = decoded.lines_before != LinesBefore::NotApplicable;
    let offset = |p: &PendingReject| decoded.text_offset.map(|o| o + p.origin.start);
    pending
        .into_iter()
        .map(|(row, p)| Reject {
            raw: decoded.raw_text(&p.origin, row),
            byte_offset: if text_source && !decoded.decompressed {
                offset(&p)
            } else {
                None
            },
            decompressed_offset: if text_source && decoded.decompressed {
                offset(&p)
            } else {
                None
            },
            line: match decoded.lines_before {
                LinesBefore::Known(n) => Some(n + p.origin.line + 1),
                LinesBefore::Unknown | LinesBefore::NotApplicable => None,
            },
            row: if text_source {
                None
            } else {
                Some(p.origin.row)
            },
            rule: p.rule,
            column: p.column,
            message: p.message,
            object: decoded.object.clone(),
        })
        .collect()
}

#[cfg(feature = "sql")]
pub(crate) use sql::channel_table;
#[cfg(feature = "sql")]
mod determinism;
#[cfg(feature = "sql")]
pub use determinism::{Nondeterministic, first_nondeterministic};
#[cfg(feature = "sql")]
pub use sql::{PIPELINE_DEPTH, Pipeline, Transformer};

#[cfg(feature = "sql")]
mod sql {
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::SchemaRef;
    use datafusion::datasource::MemTable;
    use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};

    use datafusion::catalog::streaming::StreamingTable;
    use datafusion::execution::{SendableRecordBatchStream, TaskContext};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::streaming::PartitionStream;
    use datafusion::physical_plan::{ExecutionPlan, execute_stream};
    use futures::StreamExt;
    use tokio::sync::mpsc;

    use crate::Result;

    /// Batches in flight between the stages of a chunk's pipeline.
    pub const PIPELINE_DEPTH: usize = 1;

    /// A chunk's rows on their way through the SQL.
    #[derive(Debug)]
    pub struct Pipeline {
        /// The transformed rows' schema.
        pub schema: SchemaRef,
        /// Where the chunk's valid rows go; drop it after the last batch.
        pub input: mpsc::Sender<RecordBatch>,
        /// The transformed rows.
        pub output: mpsc::Receiver<RecordBatch>,
        task: Option<tokio::task::JoinHandle<Result<()>>>,
    }

    impl Pipeline {
        /// Its parts: the input sender, the output receiver, and the query's outcome.
        pub fn split(
            self,
        ) -> (
            mpsc::Sender<RecordBatch>,
            mpsc::Receiver<RecordBatch>,
            PipelineOutcome,
        ) {
            (self.input, self.output, PipelineOutcome(self.task))
        }
    }

    /// The outcome of a pipeline's query.
    #[derive(Debug)]
    pub struct PipelineOutcome(Option<tokio::task::JoinHandle<Result<()>>>);

    impl PipelineOutcome {
        /// Waits for the query to end (after its output ended or was dropped).
        pub async fn wait(self) -> Result<()> {
            match self.0 {
                None => Ok(()),
                Some(t) => t.await.map_err(|source| crate::Error::Task {
                    what: "the transform task",
                    source,
                })?,
            }
        }
    }

    /// The SQL planned in `ctx`, refused when it calls a function that is not
    /// deterministic (`super::determinism`): every chunk and the pre-flight plan it here.
    async fn planned(ctx: &SessionContext, sql: &str) -> Result<datafusion::dataframe::DataFrame> {
        let df = ctx.sql_with_options(sql, sql_options()).await?;
        match super::first_nondeterministic(df.logical_plan()) {
            None => Ok(df),
            Some(n) => Err(crate::Error::NotDeterministic {
                function: n.function,
                volatility: n.volatility,
            }),
        }
    }

    fn sql_options() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// One partition whose batches come from a channel, read once.
    pub(crate) struct ChannelPartition {
        schema: SchemaRef,
        rx: std::sync::Mutex<Option<mpsc::Receiver<RecordBatch>>>,
    }

    impl std::fmt::Debug for ChannelPartition {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ChannelPartition").finish_non_exhaustive()
        }
    }

    impl ChannelPartition {
        fn take(&self) -> Option<mpsc::Receiver<RecordBatch>> {
            self.rx.lock().ok().and_then(|mut r| r.take())
        }
    }

    impl PartitionStream for ChannelPartition {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let Some(rx) = self.take() else {
                // Executed again (a recursive query): the rows are gone, say so.
                let err = datafusion::error::DataFusionError::Execution(
                    "the chunk's rows can be read once; this query reads `input` again".into(),
                );
                return Box::pin(RecordBatchStreamAdapter::new(
                    self.schema.clone(),
                    futures::stream::once(async move { Err(err) }),
                ));
            };
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                let b = rx.recv().await?;
                Some((Ok(b), rx))
            });
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
        }
    }

    /// A table of one channel-fed partition.
    pub(crate) fn channel_table(
        schema: SchemaRef,
        rx: mpsc::Receiver<RecordBatch>,
    ) -> Result<(Arc<ChannelPartition>, Arc<StreamingTable>)> {
        let partition = Arc::new(ChannelPartition {
            schema: schema.clone(),
            rx: std::sync::Mutex::new(Some(rx)),
        });
        let table = StreamingTable::try_new(schema, vec![partition.clone()])?;
        Ok((partition, Arc::new(table)))
    }

    /// How many times a plan scans a channel-fed table.
    fn streaming_scans(plan: &dyn ExecutionPlan) -> usize {
        usize::from(plan.name() == "StreamingTableExec")
            + plan
                .children()
                .into_iter()
                .map(|c| streaming_scans(c.as_ref()))
                .sum::<usize>()
    }

    pub(crate) async fn collect_channel(mut rx: mpsc::Receiver<RecordBatch>) -> Vec<RecordBatch> {
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push(b);
        }
        out
    }

    /// Sends a query's output on; stops early when the receiver is gone.
    async fn forward(
        mut stream: SendableRecordBatchStream,
        tx: mpsc::Sender<RecordBatch>,
    ) -> Result<()> {
        while let Some(b) = stream.next().await {
            if tx.send(b?).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The SQL step with its lookup tables, built once per process and job.
    #[derive(Debug, Clone)]
    pub struct Transformer {
        sql: Option<String>,
        lookups: Vec<(String, Arc<MemTable>)>,
    }

    impl Transformer {
        /// A transformer over loaded lookup tables.
        pub fn new(
            sql: Option<String>,
            lookups: Vec<(String, SchemaRef, Vec<RecordBatch>)>,
        ) -> Result<Self> {
            let lookups = lookups
                .into_iter()
                .map(|(name, schema, batches)| {
                    Ok((name, Arc::new(MemTable::try_new(schema, vec![batches])?)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Transformer { sql, lookups })
        }

        /// A session holding the lookups.
        fn context(&self) -> Result<SessionContext> {
            // One partition: a chunk is already the unit of parallelism, and a single
            // partition keeps row order, so the same chunk always writes the same bytes.
            let config = SessionConfig::new()
                .with_target_partitions(1)
                // 16k rows: larger batches made the SQL stage the largest part of a
                // worker's memory, for no measurable speed.
                .with_batch_size(16 * 1024);
            let ctx = SessionContext::new_with_config(config);
            for (name, table) in &self.lookups {
                ctx.register_table(name.as_str(), table.clone())?;
            }
            Ok(ctx)
        }

        /// A session holding the lookups and `input`.
        pub fn session(
            &self,
            input_schema: SchemaRef,
            input: Vec<RecordBatch>,
        ) -> Result<SessionContext> {
            let ctx = self.context()?;
            ctx.register_table(
                "input",
                Arc::new(MemTable::try_new(input_schema, vec![input])?),
            )?;
            Ok(ctx)
        }

        /// Starts the SQL over a chunk's rows as they arrive: send batches of
        /// `input_schema` into [`Pipeline::input`], read the transformed rows from
        /// [`Pipeline::output`]. A query that reads `input` exactly once streams (filters,
        /// projections and joins against lookups hold a few batches at a time); any other
        /// query (a self-join, a subquery over `input`) sees the whole chunk collected first.
        pub async fn start(&self, input_schema: SchemaRef) -> Result<Pipeline> {
            let (in_tx, in_rx) = mpsc::channel::<RecordBatch>(PIPELINE_DEPTH);
            let Some(sql) = self.sql.clone() else {
                return Ok(Pipeline {
                    schema: input_schema,
                    input: in_tx,
                    output: in_rx,
                    task: None,
                });
            };
            let (out_tx, out_rx) = mpsc::channel::<RecordBatch>(PIPELINE_DEPTH);
            let (partition, table) = channel_table(input_schema.clone(), in_rx)?;
            let ctx = self.context()?;
            ctx.register_table("input", table)?;
            let df = planned(&ctx, &sql).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let task_ctx = Arc::new(df.task_ctx());
            let plan = df.create_physical_plan().await?;
            tracing::debug!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true), "the chunk's SQL");
            let task = if streaming_scans(plan.as_ref()) == 1 {
                tokio::spawn(forward(execute_stream(plan, task_ctx)?, out_tx))
            } else {
                let rx = partition.take().ok_or_else(|| crate::Error::Transform {
                    message: "the input stream was taken twice".into(),
                })?;
                let this = self.clone();
                tokio::spawn(async move {
                    let batches = collect_channel(rx).await;
                    let ctx = this.session(input_schema, batches)?;
                    let df = planned(&ctx, &sql).await?;
                    forward(df.execute_stream().await?, out_tx).await
                })
            };
            Ok(Pipeline {
                schema,
                input: in_tx,
                output: out_rx,
                task: Some(task),
            })
        }

        /// Runs the SQL over `input`; rows pass through when there is none.
        pub async fn apply(
            &self,
            input_schema: SchemaRef,
            input: Vec<RecordBatch>,
        ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
            let Some(sql) = &self.sql else {
                return Ok((input_schema, input));
            };
            let ctx = self.session(input_schema, input)?;
            let df = planned(&ctx, sql).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let batches = df.collect().await?;
            Ok((schema, batches))
        }

        /// The output schema for an input schema, without data: plans the SQL (pre-flight).
        pub async fn output_schema(&self, input_schema: SchemaRef) -> Result<SchemaRef> {
            Ok(self.apply(input_schema, Vec::new()).await?.0)
        }
    }
}
