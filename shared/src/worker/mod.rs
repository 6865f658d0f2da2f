//! `process_chunk`: read → conform → transform → write → rejects → partial aggregate → commit.
//!
//! The commit record is written last, with create-if-absent: outputs written before it
//! by a crashed attempt are overwritten byte for byte by the next one (same keys, same
//! bytes), and a second worker that finds the record present treats the chunk as done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use tracing::{Instrument, info, info_span, warn};

use crate::clock::now_ms;
use crate::env::Env;
mod attempt;
mod bin;
mod output;

pub use bin::BinOutcome;

pub use crate::error::FaultPoint;
use crate::ids::{ChunkId, JobId};
use crate::job::{
    AttemptRecord, ChunkRecord, ChunkTask, Counts, FailureRecord, layout, load_spec, to_json_bytes,
};
use crate::location::Location;
use crate::metrics::{Unit, names};
use crate::queue::Message;
use crate::read::{HeaderCache, PieceReader};
use crate::spec::JobSpec;
use crate::store::{DynStore, ObjectStore, PutOutcome, RequestCounter, StoreError};
use crate::transform::{Reject, Transformer, conform, resolve_rejects};
use crate::write::PartitionedWriter;
use crate::{Error, Result};
use attempt::{AttemptTrace, Lease};
use output::{consume, partition_reject, rule_counts, store_rejects};

/// What became of a chunk.
#[derive(Debug, Clone)]
pub enum ChunkOutcome {
    /// This call committed it.
    Committed(Box<ChunkRecord>),
    /// It was committed before (duplicate delivery, or another worker won).
    AlreadyCommitted,
}

/// What to do with a queue message after handling it.
#[derive(Debug)]
pub enum Disposition {
    /// Delete it: done, duplicate, or failed for good (recorded).
    Ack(Option<Box<ChunkRecord>>),
    /// Leave it: it comes back after the visibility timeout, and goes to the dead-letter
    /// queue after the queue's maximum receive count.
    Retry(Error),
    /// Delete it: the body is not a chunk task, no attempt can ever process it.
    Reject(Error),
}

/// Decides whether a simulated crash happens (test-only; a worker has none by default).
pub trait Faults: Send + Sync {
    /// Whether to crash at `point` in chunk `chunk_id`.
    fn fire(&self, point: FaultPoint, chunk_id: &ChunkId) -> bool;
}

/// Everything a worker keeps per job: spec, stores, lookups.
struct JobContext {
    spec: JobSpec,
    input: DynStore,
    output: DynStore,
    rejects: DynStore,
    work: DynStore,
    transformer: Transformer,
    headers: HeaderCache,
}

/// Loaded jobs by (work location, job id).
type JobCache = tokio::sync::Mutex<HashMap<(String, JobId), Arc<JobContext>>>;

/// What reading a chunk found.
#[derive(Debug, Default)]
struct ReadState {
    counts: Counts,
    bytes_read: u64,
    rejects: Vec<Reject>,
    read: Duration,
    validate: Duration,
}

/// What the chunk's pipeline produced.
struct PipelineRun {
    /// The transformed rows' schema.
    schema: arrow::datatypes::SchemaRef,
    /// The staged output files, not stored yet.
    writer: PartitionedWriter,
    /// The partial aggregate.
    aggregate: Option<crate::aggregate::Partial>,
    /// Time spent encoding Parquet.
    encode: Duration,
    /// What reading found.
    read: ReadState,
}

/// A worker: processes chunk tasks, caching per-job context (spec, lookups) across chunks.
pub struct Worker {
    env: Env,
    name: String,
    lease: Lease,
    faults: Option<Arc<dyn Faults>>,
    jobs: Arc<JobCache>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker named `name` (recorded in commit records).
    pub fn new(env: Env, name: impl Into<String>) -> Self {
        Worker {
            env,
            name: name.into(),
            lease: Lease::default(),
            faults: None,
            jobs: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Another worker named `name` sharing this one's per-job cache (spec, lookups): local
    /// workers load a job's lookups once, yet each shows as its own lane in the report.
    pub fn named(&self, name: impl Into<String>) -> Self {
        Worker {
            env: self.env.clone(),
            name: name.into(),
            lease: self.lease,
            faults: self.faults.clone(),
            jobs: self.jobs.clone(),
        }
    }

    /// The queue's visibility timeout, for a worker that cannot outlive it (a Lambda
    /// worker: its timeout is at most the visibility timeout). Recorded in each attempt
    /// record: past it, a chunk with neither a commit nor a failure record is lost. A
    /// worker that renews its messages (the fleet) says so with
    /// [`Worker::with_renewed_visibility`]; one in-process has none.
    pub fn with_visibility_timeout(mut self, visibility: Duration) -> Self {
        self.lease.visibility = Some(visibility);
        self
    }

    /// The queue's visibility timeout, renewed every third of it while a chunk runs (the
    /// fleet worker): each attempt record is refreshed as often (`alive_ms`), so an
    /// attempt not heard of for a whole visibility timeout is lost.
    pub fn with_renewed_visibility(mut self, visibility: Duration) -> Self {
        self.lease = Lease {
            visibility: Some(visibility),
            renewed: true,
            ..self.lease
        };
        self
    }

    /// This worker for one invocation that ends at `deadline_ms` (ms since the epoch; a
    /// Lambda invocation's deadline), sharing its per-job cache: each attempt record
    /// carries the deadline, and past it an attempt without a record is lost.
    pub fn until(&self, deadline_ms: u64) -> Self {
        let mut w = self.named(self.name.clone());
        w.lease.deadline_ms = Some(deadline_ms);
        w
    }

    /// Simulated crashes (tests only).
    pub fn with_faults(mut self, faults: Arc<dyn Faults>) -> Self {
        self.faults = Some(faults);
        self
    }

    fn crash_at(&self, point: FaultPoint, chunk_id: &ChunkId) -> Result<()> {
        match &self.faults {
            Some(f) if f.fire(point, chunk_id) => Err(Error::Injected { point }),
            _ => Ok(()),
        }
    }

    /// The ports.
    pub fn env(&self) -> &Env {
        &self.env
    }

    async fn job(&self, work: &str, job_id: &JobId) -> Result<Arc<JobContext>> {
        let k = (work.to_string(), job_id.clone());
        let mut jobs = self.jobs.lock().await;
        if let Some(j) = jobs.get(&k) {
            return Ok(j.clone());
        }
        let work_loc = Location::parse(work).map_err(|m| Error::Message {
            message: format!("work location: {m}"),
            source: None,
        })?;
        let work_store = self.env.store(&work_loc)?;
        // Commit records are written with the job's encryption once the spec is known.
        let spec = load_spec(work_store.as_ref(), &work_loc, job_id).await?;
        let transformer = crate::lookup::load_transformer(&self.env, &spec).await?;
        let ctx = Arc::new(JobContext {
            input: self.env.store(&spec.input.location)?,
            // Staged under `work` when the job publishes its files at finalize.
            output: self
                .env
                .store_with(&crate::job::chunk_output_location(&spec, job_id), &spec.sse)?,
            rejects: self.env.store_with(&spec.rejects.location, &spec.sse)?,
            work: work_store,
            transformer,
            headers: HeaderCache::default(),
            spec,
        });
        jobs.insert(k, ctx.clone());
        Ok(ctx)
    }

    /// Processes one chunk task; `attempt` is the message's receive count, and no receive
    /// is taken to be the last.
    pub async fn process_chunk(&self, task: &ChunkTask, attempt: u32) -> Result<ChunkOutcome> {
        self.process_attempt(task, attempt, u32::MAX).await
    }

    /// Processes one chunk task; `attempt` is the message's receive count and
    /// `max_receive_count` the queue's redrive setting (recorded in the attempt record, so
    /// a lost last attempt is known to be dead-lettered). Writes no failure record.
    pub async fn process_attempt(
        &self,
        task: &ChunkTask,
        attempt: u32,
        max_receive_count: u32,
    ) -> Result<ChunkOutcome> {
        let span = info_span!("chunk", job_id = %task.job_id, chunk_id = %task.chunk.id, attempt);
        self.process_chunk_inner(task, attempt, max_receive_count)
            .instrument(span)
            .await
    }

    async fn process_chunk_inner(
        &self,
        task: &ChunkTask,
        attempt: u32,
        max_receive_count: u32,
    ) -> Result<ChunkOutcome> {
        let job = self.job(&task.work, &task.job_id).await?;
        let chunk = &task.chunk;
        let record_key = layout::chunk(&task.job_id, &chunk.id);
        if job.work.head(&record_key).await?.is_some() {
            self.env
                .metrics
                .record(&job.spec.name, names::CHUNKS_DUPLICATE, 1.0, Unit::Count);
            info!("chunk already committed");
            return Ok(ChunkOutcome::AlreadyCommitted);
        }
        let started = Instant::now();
        let started_ms = now_ms();
        let requests = Arc::new(RequestCounter::default());
        let record = AttemptRecord {
            job_id: task.job_id.clone(),
            chunk_id: chunk.id.clone(),
            attempt,
            last_attempt: attempt >= max_receive_count,
            worker: self.name.clone(),
            started_ms,
            stage: "read".into(),
            memory_mb: Some(self.env.worker_memory_mb),
            visibility_timeout_s: None,
            alive_ms: None,
            deadline_ms: None,
        };
        let work = requests.wrap(job.work.clone());
        // A killed worker leaves this record and nothing else.
        let trace = AttemptTrace::start(work.clone(), record, self.lease).await?;
        let result: Result<ChunkOutcome> = async {
            let input = requests.wrap(job.input.clone());
            let mut run = self.run_pipeline(&job, input.as_ref(), chunk).await?;
            let mut counts = run.read.counts;
            counts.rejected = run.read.rejects.len() as u64;
            if !counts.reconciles() {
                return Err(Error::Job {
                    job_id: task.job_id.clone(),
                    message: format!(
                        "chunk {} does not reconcile: read {} ≠ valid {} + rejected {}",
                        chunk.id, counts.read, counts.valid, counts.rejected
                    ),
                });
            }
            let set_aside = run.writer.take_rejects();
            counts.partition_rejected = set_aside.len() as u64;
            run.read
                .rejects
                .extend(set_aside.into_iter().map(|r| partition_reject(chunk, r)));
            trace.stage("store").await?;
            let store_started = Instant::now();
            let output = requests.wrap(job.output.clone());
            let outputs = self
                .store_outputs(task, run.writer, output.as_ref())
                .await?;
            counts.written = outputs.iter().map(|f| f.rows).sum();
            let rejects_store = requests.wrap(job.rejects.clone());
            let reject_file =
                store_rejects(rejects_store.as_ref(), task, &run.read.rejects).await?;
            let stage_ms = [
                ("read", run.read.read),
                ("validate", run.read.validate),
                ("encode", run.encode),
                ("store", store_started.elapsed()),
            ]
            .into_iter()
            .map(|(k, d)| (k.to_string(), d.as_millis() as u64))
            .collect();
            let record = ChunkRecord {
                job_id: task.job_id.clone(),
                chunk_id: chunk.id.clone(),
                index: chunk.index,
                pieces: chunk.pieces.clone(),
                counts,
                bytes_read: run.read.bytes_read,
                range_bytes: chunk.bytes,
                outputs,
                rejects: reject_file,
                reject_rules: rule_counts(&run.read.rejects),
                schema: run.schema.as_ref().clone(),
                aggregate: run.aggregate,
                attempt,
                worker: self.name.clone(),
                started_ms,
                elapsed_ms: started.elapsed().as_millis() as u64,
                stage_ms,
                // Not counted yet: the HEAD of the commit record before starting, and its PUT.
                requests: {
                    let mut r = requests.snapshot();
                    r.get += 1;
                    r.put += 1;
                    r
                },
            };
            self.commit(&job.spec, work.as_ref(), &record_key, record)
                .await
        }
        .await;
        // No heartbeat lands after the attempt ended: its record is final.
        trace.stop().await;
        result
    }

    /// The chunk's three overlapping stages: this task reads and validates, the SQL runs on
    /// the rows as they come, and a writer task encodes the transformed rows into staged
    /// Parquet and feeds the partial aggregate. A few batches are in flight at a time.
    async fn run_pipeline(
        &self,
        job: &JobContext,
        input: &dyn ObjectStore,
        chunk: &crate::plan::Chunk,
    ) -> Result<PipelineRun> {
        let spec = &job.spec;
        let pipeline = job.transformer.start(spec.input.schema.clone()).await?;
        let schema = pipeline.schema.clone();
        let (in_tx, out_rx, transform) = pipeline.split();
        let writer = PartitionedWriter::new(&spec.output, &chunk.id, &schema)?;
        let aggregate = match &spec.aggregate {
            Some(a) => Some(crate::aggregate::start(a, schema.clone())?),
            None => None,
        };
        let consumer = tokio::spawn(consume(out_rx, writer, aggregate));
        let mut read = ReadState::default();
        let produced = self.produce(job, input, chunk, &in_tx, &mut read).await;
        drop(in_tx);
        let consumed = consumer.await.map_err(|source| Error::Task {
            what: "the writer task",
            source,
        });
        let transformed = transform.wait().await;
        produced?;
        transformed?;
        let (writer, aggregate, encode) = consumed??;
        Ok(PipelineRun {
            schema,
            writer,
            aggregate,
            encode,
            read,
        })
    }

    /// Stores the staged output files, with the crash points a test may fire between them,
    /// and checks every transformed row was written.
    async fn store_outputs(
        &self,
        task: &ChunkTask,
        writer: PartitionedWriter,
        output: &dyn ObjectStore,
    ) -> Result<Vec<crate::write::FileEntry>> {
        let chunk_id = &task.chunk.id;
        let out_rows = writer.rows();
        self.crash_at(FaultPoint::BeforeFirstOutput, chunk_id)?;
        let between = |n: usize| {
            if n > 0 {
                self.crash_at(FaultPoint::BetweenOutputs, chunk_id)
            } else {
                Ok(())
            }
        };
        let outputs = writer.finish(output, &between).await?;
        let written: u64 = outputs.iter().map(|f| f.rows).sum();
        if written != out_rows {
            return Err(Error::Job {
                job_id: task.job_id.clone(),
                message: format!(
                    "chunk {chunk_id}: the transform produced {out_rows} rows but {written} were written"
                ),
            });
        }
        Ok(outputs)
    }

    /// Writes the commit record, create-if-absent: the chunk's outcome is whoever created it.
    async fn commit(
        &self,
        spec: &JobSpec,
        work: &dyn ObjectStore,
        record_key: &str,
        record: ChunkRecord,
    ) -> Result<ChunkOutcome> {
        self.crash_at(FaultPoint::BeforeCommit, &record.chunk_id)?;
        let outcome = work
            .put_if_absent(record_key, to_json_bytes("commit record", &record)?)
            .await?;
        match outcome {
            PutOutcome::AlreadyExists => {
                self.env
                    .metrics
                    .record(&spec.name, names::CHUNKS_DUPLICATE, 1.0, Unit::Count);
                info!("another attempt committed first");
                Ok(ChunkOutcome::AlreadyCommitted)
            }
            PutOutcome::Created => {
                // Committed, but the message is not acknowledged: it will be delivered again.
                self.crash_at(FaultPoint::AfterCommit, &record.chunk_id)?;
                self.record_committed(&spec.name, &record);
                Ok(ChunkOutcome::Committed(Box::new(record)))
            }
        }
    }

    /// The metrics and the log line of a committed chunk.
    fn record_committed(&self, job_name: &str, record: &ChunkRecord) {
        let m = &self.env.metrics;
        let counts = &record.counts;
        let bytes_written: u64 = record.outputs.iter().map(|f| f.bytes).sum();
        for (name, value, unit) in [
            (names::CHUNKS_COMMITTED, 1.0, Unit::Count),
            (names::ROWS_READ, counts.read as f64, Unit::Count),
            (names::ROWS_REJECTED, counts.rejected as f64, Unit::Count),
            (names::ROWS_WRITTEN, counts.written as f64, Unit::Count),
            (names::BYTES_READ, record.bytes_read as f64, Unit::Bytes),
            (names::BYTES_WRITTEN, bytes_written as f64, Unit::Bytes),
            (
                names::FILES_WRITTEN,
                record.outputs.len() as f64,
                Unit::Count,
            ),
            (
                names::CHUNK_DURATION,
                record.elapsed_ms as f64,
                Unit::Milliseconds,
            ),
        ] {
            m.record(job_name, name, value, unit);
        }
        info!(
            rows_read = counts.read,
            rows_rejected = counts.rejected,
            rows_written = counts.written,
            bytes_read = record.bytes_read,
            elapsed_ms = record.elapsed_ms,
            "chunk committed"
        );
    }

    /// Reads, validates and sends on a chunk's rows, batch by batch; keeps counts and
    /// rejects in `read`. Reading goes on when the SQL stops taking rows (a `LIMIT`), so
    /// every record is still counted and every reject kept.
    async fn produce(
        &self,
        job: &JobContext,
        input: &dyn ObjectStore,
        chunk: &crate::plan::Chunk,
        rows: &tokio::sync::mpsc::Sender<RecordBatch>,
        read: &mut ReadState,
    ) -> Result<()> {
        let spec = &job.spec;
        let mut sending = true;
        for piece in &chunk.pieces {
            // A cheap early check naming both versions; the reads below are pinned to the
            // planned version themselves, so a change after this check fails them too.
            match input.head(piece.key()).await? {
                Some(m) if m.etag == piece.etag() => {}
                Some(m) => {
                    return Err(Error::Input {
                        object: piece.key().to_string(),
                        message: format!(
                            "changed since planning (version {} now, {} planned): plan a new job",
                            m.etag,
                            piece.etag()
                        ),
                        source: None,
                    });
                }
                None => {
                    return Err(StoreError::NotFound {
                        key: piece.key().to_string(),
                    }
                    .into());
                }
            }
            let t = Instant::now();
            let mut reader = PieceReader::open(input, piece, &spec.input, &job.headers).await?;
            read.read += t.elapsed();
            loop {
                let t = Instant::now();
                let next = reader.next().await?;
                read.read += t.elapsed();
                let Some(decoded) = next else { break };
                sending = Self::take(spec, decoded, rows, read, sending).await?;
            }
            read.bytes_read += reader.bytes_fetched();
        }
        Ok(())
    }

    /// Validates one decoded unit, keeps its counts and rejects, and sends its valid rows on
    /// while `sending`; returns whether to go on sending.
    async fn take(
        spec: &JobSpec,
        decoded: crate::read::Decoded,
        rows: &tokio::sync::mpsc::Sender<RecordBatch>,
        read: &mut ReadState,
        sending: bool,
    ) -> Result<bool> {
        let t = Instant::now();
        let records = decoded.records();
        let conformed = conform(&decoded, &spec.input.schema, &spec.rules)?;
        let mut pending: Vec<(Option<usize>, crate::read::PendingReject)> =
            decoded.rejects.iter().cloned().map(|r| (None, r)).collect();
        pending.extend(conformed.rejects.into_iter().map(|(row, r)| (Some(row), r)));
        if !pending.is_empty() {
            pending.sort_by_key(|(_, r)| (r.origin.start, r.origin.row));
            read.rejects.extend(resolve_rejects(&decoded, pending));
        }
        let valid = conformed.batch.num_rows() as u64;
        read.validate += t.elapsed();
        read.counts.read += records;
        read.counts.valid += valid;
        if valid > 0 && sending {
            return Ok(rows.send(conformed.batch).await.is_ok());
        }
        Ok(sending)
    }

    /// Handles one queue message: the shared logic of the local runner, the Lambda
    /// worker and the fleet worker. `max_receive_count` is the queue's redrive setting.
    pub async fn handle_message(&self, msg: &Message, max_receive_count: u32) -> Disposition {
        if crate::job::compaction::BinTask::is_bin_body(&msg.body) {
            return self.handle_bin_message(msg, max_receive_count).await;
        }
        let task = match ChunkTask::from_body(&msg.body) {
            Ok(t) => t,
            Err(e) => {
                warn!(message_id = %msg.id, error = %e, "malformed chunk message");
                return Disposition::Reject(e);
            }
        };
        match self
            .process_attempt(&task, msg.receive_count, max_receive_count)
            .await
        {
            Ok(ChunkOutcome::Committed(r)) => Disposition::Ack(Some(r)),
            Ok(ChunkOutcome::AlreadyCommitted) => Disposition::Ack(None),
            Err(e) => {
                let job_name = self.job_name(&task.work, &task.job_id).await;
                self.env
                    .metrics
                    .record(&job_name, names::CHUNKS_FAILED, 1.0, Unit::Count);
                let permanent = !e.is_retryable();
                let last_attempt = msg.receive_count >= max_receive_count;
                warn!(job_id = %task.job_id, chunk_id = %task.chunk.id, attempt = msg.receive_count, permanent, error = %e, "chunk failed");
                if let Err(re) = self
                    .record_failure(&task, msg.receive_count, &e, permanent, last_attempt)
                    .await
                {
                    warn!(error = %re, "could not record the failure");
                }
                // Even a permanent error is left to the queue's redrive: the chunk ends in the
                // dead-letter queue, where an operator redrives it once the cause (a missing
                // lookup, a denied permission) is fixed. The record says whether a
                // retry alone can help.
                Disposition::Retry(e)
            }
        }
    }

    /// The job's name for its metrics, or its id when its spec could not be loaded.
    async fn job_name(&self, work: &str, job_id: &JobId) -> String {
        self.jobs
            .lock()
            .await
            .get(&(work.to_string(), job_id.clone()))
            .map_or_else(|| job_id.to_string(), |j| j.spec.name.clone())
    }

    /// Writes the failure record of a chunk attempt.
    pub async fn record_failure(
        &self,
        task: &ChunkTask,
        attempts: u32,
        e: &Error,
        permanent: bool,
        last_attempt: bool,
    ) -> Result<()> {
        let work = self
            .env
            .store(&Location::parse(&task.work).map_err(Error::Config)?)?;
        let rec = FailureRecord {
            job_id: task.job_id.clone(),
            chunk_id: task.chunk.id.clone(),
            attempts,
            error_kind: e.kind().to_string(),
            message: e.to_string(),
            permanent,
            last_attempt,
            at_ms: now_ms(),
        };
        work.put(
            &layout::failure(&task.job_id, &task.chunk.id),
            to_json_bytes("failure record", &rec)?,
        )
        .await?;
        Ok(())
    }
}

/// Retry delay after a failed attempt in the local runner (SQS itself waits out the visibility timeout).
pub fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}
