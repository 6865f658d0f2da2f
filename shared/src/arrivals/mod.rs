//! Micro-batches from S3 events: drain the arrivals queue into one job.
//!
//! S3 sends an "Object Created" event per upload to EventBridge; a rule puts the events
//! of the input bucket on the **arrivals queue**. On a schedule, [`drain_arrivals`]
//! receives them (10 at a time, up to [`DrainLimits`]), keeps the objects under the
//! spec's input that its globs select, HEADs each one (no listing of the prefix; an
//! object deleted since its event is skipped with a log line; size and ETag come from
//! the HEAD), drops the objects already ingested or held by a drained job not yet
//! finalized, plans exactly the rest as one job and queues its chunks. Auto Loader's
//! file notification mode and Glue's job bookmarks give the same: each new object once,
//! in batches, without listing what was there before.
//!
//! # Why a crash anywhere is harmless
//!
//! A drain runs these steps:
//!
//! 1. an earlier attempt of the same drain (same `drain_id`) left a drain record → answer
//!    its job again and stop (a Step Functions retry of a planner that did finish);
//! 2. take the job name's lease ([`crate::ledger::Lease`]: one drain or `--since-last` run
//!    of a name at a time; held by another → no job, the messages wait); read the ledger
//!    and the drain records of jobs not finalized yet; receive the messages; HEAD the
//!    objects; drop the ingested and the pending ones;
//! 3. plan the job (`spec.json`, plan shards, plan summary last) with an id derived from
//!    the spec and the objects (key, ETag, size);
//! 4. send its chunk messages (only the chunks not committed yet);
//! 5. write the drain record (job id and objects), outside `jobs/`;
//! 6. delete the arrivals messages; release the lease.
//!
//! - A crash before 3 leaves nothing: the messages come back after the arrivals queue's
//!   visibility timeout and the next drain takes them.
//! - A crash between 3 and 5 leaves a planned job (perhaps with some of its chunks
//!   queued) that no workflow will finalize, and the messages come back. The next drain
//!   receives the same objects or a superset: the same set derives the same job id, so
//!   the plan is reused and only uncommitted chunks are sent again; a superset is another
//!   job, and the first one is never finalized — its files are in no manifest (what
//!   DESIGN.md calls garbage; `fanout gc --abandoned` removes them). Each object ends in
//!   exactly one finalized manifest either way; and should someone finalize the orphan
//!   by hand after all, the ledger refuses it (a drained job is incremental: planned with
//!   the ledger's objects as its skip set, so its finalize refuses objects another job
//!   recorded first).
//! - A crash between 5 and 6 (or after 6, before the answer reached Step Functions):
//!   a retry of the drain finds the record (step 1) and answers the same job; a later
//!   drain that receives the returned messages finds their objects pending (step 2) and
//!   only deletes the messages.
//!
//! Duplicated events (S3 delivers at least once; EventBridge retries) and replayed ones
//! (an operator moving the arrivals DLQ back) are the same case: an object named twice in
//! one drain is planned once (keys are deduplicated), an object whose job is running is
//! pending, an object whose job finalized is in the ingestion ledger. A new version of an
//! object (same key, other ETag) is a new object and is ingested again.
//!
//! A message whose body is not an S3 event is left alone: it comes back until the
//! queue's redrive moves it to the arrivals DLQ, where an operator can read it.
//!
//! # Layout
//!
//! - [`event`]: "Object Created" events (EventBridge and S3 notification shapes).
//! - [`pending`]: the drain records, `<work>/arrivals/<name>/drains/`.

mod event;
pub mod pending;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use event::{ObjectCreated, object_created, relative_key, url_decode};

use crate::env::Env;
use crate::ids::JobId;
use crate::ledger::{Lease, LeaseOptions, Ledger};
use crate::planner::{InputFilter, PlannedJob, enqueue, plan_job};
use crate::queue::{MAX_BATCH, Message, Queue};
use crate::spec::JobSpec;
use crate::store::{ObjectMeta, ObjectStore};
use crate::{Error, Result};

/// Objects per drained job when not configured.
pub const DEFAULT_MAX_OBJECTS: usize = 1000;
/// Input bytes per drained job when not configured: 100 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024 * 1024;

/// How long a drain waits for the lease held by another run of its name.
pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(30);

/// How much one drain takes into its job. The first object is always taken, whatever
/// its size; messages received past a limit are made visible again for the next drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainLimits {
    /// Most objects in one job.
    pub max_objects: usize,
    /// Most input bytes in one job (sizes from the HEADs).
    pub max_bytes: u64,
    /// How long a receive waits for a first message (zero: only what is there now).
    pub wait: Duration,
    /// How long to wait for the job name's lease when another run holds it.
    pub lease_wait: Duration,
}

impl Default for DrainLimits {
    fn default() -> Self {
        DrainLimits {
            max_objects: DEFAULT_MAX_OBJECTS,
            max_bytes: DEFAULT_MAX_BYTES,
            wait: Duration::ZERO,
            lease_wait: DEFAULT_LEASE_WAIT,
        }
    }
}

/// What a drain found, for the answer and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainCounts {
    /// Arrivals messages received (and deleted, but for `unreadable` ones).
    pub messages: u64,
    /// Messages that are not S3 events, left for the arrivals DLQ.
    pub unreadable: u64,
    /// Objects outside the input location or not selected by its globs.
    pub not_selected: u64,
    /// Objects gone since their event (HEAD found none).
    pub missing: u64,
    /// Objects named again in this drain, already ingested, or in a pending job.
    pub duplicates: u64,
    /// Messages left for the next drain (over the limits).
    pub left_for_next: u64,
}

/// A drain's outcome.
#[derive(Debug, Clone)]
pub enum Drained {
    /// A job was planned (or an earlier attempt's job answered again).
    Planned {
        /// The job.
        job: Box<PlannedJob>,
        /// Chunk messages sent now.
        sent: u64,
        /// What the drain saw.
        counts: DrainCounts,
    },
    /// No new object: no job.
    Nothing {
        /// Why, in words.
        reason: String,
        /// What the drain saw.
        counts: DrainCounts,
    },
}

/// Drains the arrivals queue into one job of `spec` (see the module docs): plans exactly
/// the new objects the events name, sends their chunks to `chunks`, then deletes the
/// arrivals messages. `drain_id` names this drain (the schedule's time): a retry with the
/// same id answers the same job. Another run of the name holding its lease (a drain, a
/// `--since-last` run) → [`Drained::Nothing`], saying so: the messages wait for the next drain.
pub async fn drain_arrivals(
    env: &Env,
    arrivals: &dyn Queue,
    chunks: &dyn Queue,
    spec: &JobSpec,
    limits: DrainLimits,
    drain_id: Option<&str>,
) -> Result<Drained> {
    let work = env.store_with(&spec.work, &spec.sse)?;
    if let Some(id) = drain_id
        && let Some(record) = pending::find(work.as_ref(), &spec.name, id).await?
    {
        return answer_again(env, chunks, spec, work.as_ref(), id, record).await;
    }
    let opts = LeaseOptions {
        wait: Some(limits.lease_wait),
        ..LeaseOptions::default()
    };
    let lease = match Lease::acquire(work.clone(), &spec.name, &opts).await {
        Ok(lease) => lease,
        Err(Error::LeaseHeld {
            holder, expires_ms, ..
        }) => {
            let reason = format!(
                "another run of `{}` holds its lease ({holder}, until {expires_ms} ms): no job \
                 planned; the arrivals wait for the next drain",
                spec.name
            );
            info!("{reason}");
            return Ok(Drained::Nothing {
                reason,
                counts: DrainCounts::default(),
            });
        }
        Err(e) => return Err(e),
    };
    if let Some(dead) = lease.took_over() {
        warn!(holder = %dead.holder, job_id = ?dead.job_id, "took over the lease of a run that did not release it");
    }
    // Released on an error too: a drain that failed cleanly should not make the next one
    // wait for the lease to expire (a crashed one does, for the lease's TTL).
    let drained = drain_leased(env, arrivals, chunks, spec, &limits, drain_id, &lease).await;
    let released = lease.release().await;
    let drained = drained?;
    released?;
    Ok(drained)
}

/// A retried drain whose first attempt recorded its job: the same job, its uncommitted
/// chunks sent again (a worker acknowledges a chunk already committed).
async fn answer_again(
    env: &Env,
    chunks: &dyn Queue,
    spec: &JobSpec,
    work: &dyn ObjectStore,
    drain_id: &str,
    record: pending::DrainRecord,
) -> Result<Drained> {
    info!(drain_id, job_id = %record.job_id, "drain already planned its job; answering it again");
    // The recorded objects, should the plan be gone: never a listing of the input.
    let mut again = spec.clone().with_input_objects(record.objects);
    again.job_id = Some(record.job_id.clone());
    let job = plan_job(env, &again).await?;
    let sent = enqueue(chunks, &spec.work, work, &record.job_id, &job.chunks).await?;
    Ok(Drained::Planned {
        job: Box::new(job),
        sent,
        counts: DrainCounts::default(),
    })
}

/// The drain proper, under the name's lease.
async fn drain_leased(
    env: &Env,
    arrivals: &dyn Queue,
    chunks: &dyn Queue,
    spec: &JobSpec,
    limits: &DrainLimits,
    drain_id: Option<&str>,
    lease: &Lease,
) -> Result<Drained> {
    let work = env.store_with(&spec.work, &spec.sse)?;
    let pending = pending::pending_objects(work.as_ref(), &spec.name).await?;
    let input = env.store(&spec.input.location)?;
    let view = Ledger::new(work.clone(), &spec.name).read().await?;
    let ingested = view.committed_below(&input.describe());
    let known: HashSet<(String, String)> = ingested.union(&pending.objects).cloned().collect();
    let mut batch = receive_batch(input.as_ref(), arrivals, spec, limits, &known).await?;
    if batch.objects.is_empty() {
        delete_all(arrivals, &batch.done).await?;
        let reason = nothing_reason(spec, &batch.counts, &pending.jobs);
        info!(counts = ?batch.counts, "{reason}");
        return Ok(Drained::Nothing {
            reason,
            counts: batch.counts,
        });
    }
    let objects: Vec<ObjectMeta> = std::mem::take(&mut batch.objects).into_values().collect();
    // Planned with the skip set: an incremental job, whose finalize refuses any object the
    // ledger holds by then (a second line of defence behind `known`).
    let mut drained = spec
        .clone()
        .with_input_objects(objects.clone())
        .with_skipped(known);
    drained.job_id = None;
    let job = plan_job(env, &drained).await?;
    let job_id = job.summary.job_id.clone();
    lease.set_job(&job_id).await?;
    let sent = enqueue(chunks, &spec.work, work.as_ref(), &job_id, &job.chunks).await?;
    let record = pending::DrainRecord {
        drain_id: drain_id.map(str::to_string),
        job_id: job_id.clone(),
        objects: objects.clone(),
        drained_ms: crate::clock::now_ms(),
    };
    pending::write(work.as_ref(), &spec.name, &record).await?;
    lease.check()?;
    delete_all(arrivals, &batch.done).await?;
    info!(job_id = %job_id, objects = objects.len(), chunks = job.summary.chunks, sent, counts = ?batch.counts, "arrivals drained into a job");
    Ok(Drained::Planned {
        job: Box::new(job),
        sent,
        counts: batch.counts,
    })
}

fn nothing_reason(spec: &JobSpec, counts: &DrainCounts, pending: &[JobId]) -> String {
    let mut reason = if counts.messages == 0 {
        format!(
            "no object arrived under {} since the last drain: no job planned",
            spec.input.location
        )
    } else {
        format!(
            "{} arrivals message(s), no new object under {} ({} duplicate or already ingested, \
             {} gone since their event, {} not selected by the spec, {} unreadable): no job planned",
            counts.messages,
            spec.input.location,
            counts.duplicates,
            counts.missing,
            counts.not_selected,
            counts.unreadable
        )
    };
    if !pending.is_empty() {
        let ids: Vec<String> = pending.iter().map(ToString::to_string).collect();
        reason.push_str(&format!(
            "; drained jobs not finalized yet: {}",
            ids.join(", ")
        ));
    }
    reason
}

/// The messages of one drain and the objects they name.
#[derive(Debug, Default)]
struct Batch {
    /// New objects by key (relative to the input).
    objects: BTreeMap<String, ObjectMeta>,
    /// Receipts to delete once the job is durable.
    done: Vec<String>,
    counts: DrainCounts,
    /// A message was handed back for going past a limit: receive no more.
    closed: bool,
}

impl Batch {
    fn bytes(&self) -> u64 {
        self.objects.values().map(|o| o.size).sum()
    }

    fn full(&self, limits: &DrainLimits) -> bool {
        self.closed
            || self.objects.len() >= limits.max_objects.max(1)
            || (!self.objects.is_empty() && self.bytes() >= limits.max_bytes)
    }

    /// Whether `more` objects would take the batch past a limit (never when it is empty:
    /// the first message is always taken).
    fn would_overflow(&self, more: &[ObjectMeta], limits: &DrainLimits) -> bool {
        let bytes: u64 = more.iter().map(|o| o.size).sum();
        !self.objects.is_empty()
            && (self.objects.len() + more.len() > limits.max_objects.max(1)
                || self.bytes() + bytes > limits.max_bytes)
    }
}

/// Receives until the queue is empty or the batch is full; messages received past the
/// limits are made visible again at once.
async fn receive_batch(
    input: &dyn ObjectStore,
    arrivals: &dyn Queue,
    spec: &JobSpec,
    limits: &DrainLimits,
    known: &HashSet<(String, String)>,
) -> Result<Batch> {
    let filter = InputFilter::new(spec)?;
    let mut batch = Batch::default();
    let mut wait = limits.wait;
    while !batch.full(limits) {
        let room = limits.max_objects.saturating_sub(batch.objects.len());
        let messages = arrivals.receive(room.clamp(1, MAX_BATCH), wait).await?;
        if messages.is_empty() {
            break;
        }
        // Only the first receive waits: later ones take what is there.
        wait = Duration::ZERO;
        for m in messages {
            if batch.full(limits) {
                arrivals
                    .change_visibility(&m.receipt, Duration::ZERO)
                    .await?;
                batch.counts.left_for_next += 1;
                continue;
            }
            batch.counts.messages += 1;
            take_message(arrivals, input, spec, &filter, known, limits, &mut batch, m).await?;
        }
    }
    Ok(batch)
}

/// Adds the new objects of one message to the batch; the message is deleted with the
/// batch unless it is unreadable, or handed back for the next drain when its objects
/// would take the batch past a limit.
#[allow(clippy::too_many_arguments)]
async fn take_message(
    arrivals: &dyn Queue,
    input: &dyn ObjectStore,
    spec: &JobSpec,
    filter: &InputFilter,
    known: &HashSet<(String, String)>,
    limits: &DrainLimits,
    batch: &mut Batch,
    m: Message,
) -> Result<()> {
    let created = serde_json::from_str::<serde_json::Value>(&m.body)
        .ok()
        .as_ref()
        .and_then(object_created);
    let Some(created) = created else {
        warn!(message_id = %m.id, receive_count = m.receive_count, "arrivals message is not an S3 event; left for the arrivals dead-letter queue");
        batch.counts.unreadable += 1;
        return Ok(());
    };
    let mut new: Vec<ObjectMeta> = Vec::new();
    for object in created {
        let Some(meta) = head_object(input, spec, filter, &object).await? else {
            batch.counts.not_selected += 1;
            continue;
        };
        let Some(meta) = meta else {
            info!(bucket = %object.bucket, key = %object.key, "object gone since its event; skipped");
            batch.counts.missing += 1;
            continue;
        };
        let seen = batch
            .objects
            .get(&meta.key)
            .is_some_and(|o| o.etag == meta.etag)
            || new.iter().any(|o| o.key == meta.key && o.etag == meta.etag);
        if seen || known.contains(&(meta.key.clone(), meta.etag.clone())) {
            batch.counts.duplicates += 1;
            continue;
        }
        new.push(meta);
    }
    if batch.would_overflow(&new, limits) {
        arrivals
            .change_visibility(&m.receipt, Duration::ZERO)
            .await?;
        batch.counts.messages -= 1;
        batch.counts.left_for_next += 1;
        batch.closed = true;
        return Ok(());
    }
    batch
        .objects
        .extend(new.into_iter().map(|o| (o.key.clone(), o)));
    batch.done.push(m.receipt);
    Ok(())
}

/// The object's metadata by HEAD: `None` when the spec does not select it, `Some(None)`
/// when it is gone. Each candidate key (as given, then URL-decoded) is tried in turn.
async fn head_object(
    input: &dyn ObjectStore,
    spec: &JobSpec,
    filter: &InputFilter,
    object: &ObjectCreated,
) -> Result<Option<Option<ObjectMeta>>> {
    let mut selected = false;
    for key in object.candidate_keys() {
        let Some(rel) = relative_key(&spec.input.location, &object.bucket, key) else {
            continue;
        };
        if !filter.selects(&rel) {
            continue;
        }
        selected = true;
        if let Some(meta) = crate::job::head_retried(input, &rel).await? {
            return Ok(Some(Some(meta)));
        }
    }
    Ok(selected.then_some(None))
}

async fn delete_all(arrivals: &dyn Queue, receipts: &[String]) -> Result<()> {
    for r in receipts {
        arrivals.delete(r).await.map_err(Error::from)?;
    }
    Ok(())
}
