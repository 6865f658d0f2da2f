//! The ingestion ledger: for each job name, every input object its jobs committed, and
//! the lease that lets one run of the name at a time.
//!
//! # Why
//!
//! Inside one job, commit records make every chunk count once. Across jobs, an incremental
//! run (`fanout run --since-last`, the `_READY` marker, the S3-event micro-batches) must
//! know which objects earlier jobs of its name already ingested. Reading that from the
//! manifests under `jobs/` breaks twice: the lifecycle rule deletes `jobs/` after
//! `WorkRetentionDays` (every old object is then ingested again), and it costs a LIST of
//! every job and a GET of every manifest per run. The ledger is kept apart, under
//! `<work>/ledger/<name>/`, which no lifecycle rule and no `gc` touches.
//!
//! # Layout
//!
//! ```text
//! <work>/ledger/<name>/log/<seq:020>.json          one entry per job: its objects (URI, version, size), create-if-absent
//! <work>/ledger/<name>/by-job/<job_id>.json        which entry recorded the job (makes a finalize run again one GET)
//! <work>/ledger/<name>/checkpoints/<seq:020>.json  every entry up to seq, in one object
//! <work>/ledger/<name>/checkpoint.json             the latest checkpoint's seq (a hint)
//! <work>/ledger/<name>/lease.json                  the run lease (see [`lease`])
//! ```
//!
//! # Reading: proportional to what is new
//!
//! [`Ledger::read`] GETs `checkpoint.json`, then the checkpoint it names, then LISTs
//! `log/` with `StartAfter` that checkpoint's entry (S3 returns only later keys) and GETs
//! those entries: one LIST and at most [`CHECKPOINT_EVERY`] entry GETs past the
//! checkpoint, whatever the number of jobs before it. [`LedgerView::refresh`] brings a view
//! up to date the same way, from its own last seq.
//!
//! # Writing: an append-only log with conditional creates
//!
//! A job's entry is written by its finalize ([`Ledger::record`], called by
//! `reducer::finalize_job` for the local runner and the reducer Lambda alike) BEFORE the
//! manifest and `_SUCCESS`: a job is ingested when its entry exists, and a succeeded
//! manifest never exists without it. The append is an optimistic transaction:
//!
//! 1. `by-job/<job_id>.json` exists → the job is recorded already (a finalize run again).
//! 2. Bring the view up to date; the job already in it (a finalize that stopped before its
//!    marker) → write the marker, done.
//! 3. An incremental job whose objects (URI and version) the view already holds, under
//!    another job → [`Error::AlreadyIngested`]; the finalize then writes a `failed`
//!    manifest: nothing is ingested twice, whatever runs raced to plan the objects.
//! 4. Create `log/<last+1>.json` with `If-None-Match: *`. Someone else created it first →
//!    back to 2 (only the entries past the view's seq are read again).
//! 5. Write the marker; every [`CHECKPOINT_EVERY`] entries, a checkpoint and its pointer.
//!
//! Entries are never rewritten or deleted: the log is gap-free (entry n+1 is only written
//! by a writer that read entry n), and a checkpoint is a pure function of the entries, so
//! two writers of one checkpoint write the same bytes. Losing `jobs/` loses no entry: the
//! ledger does not depend on the job records.
//!
//! # Using it (the S3-event planner, `--since-last`)
//!
//! The one-call forms are in [`crate::incremental`]: `without_ingested(env, spec)` (the
//! spec minus what the ledger holds, an incremental job), `uploaded(env, spec, keys)` (an
//! event's keys, `_READY` markers expanded to their folder, minus the ledger) and
//! `run_since_last` (all of it under the lease). By hand:
//!
//! ```text
//! let ledger = Ledger::new(work_store, &spec.name);
//! let lease = Lease::acquire(work_store, &spec.name, &LeaseOptions::default()).await?; // LeaseHeld if another run has it
//! let view = ledger.read().await?;                  // checkpoint + log tail
//! let input_root = input_store.describe();          // URIs are input_root + key
//! let skip = view.committed_below(&input_root);     // (key, etag) already ingested
//! let spec = spec.with_skipped(skip);               // → an incremental job
//! lease.set_job(&job_id).await?;                    // a run taking over a dead lease learns the job
//! … plan, run; finalize records the entry …
//! lease.release().await?;
//! ```
//!
//! A job is incremental when it was planned with skipped objects
//! (`JobSpec::with_skipped`, recorded in its plan summary): its finalize refuses objects the
//! ledger holds. A full run (no `--since-last`) is a deliberate reprocess: it is recorded
//! too, so later incremental runs skip its objects, but it is not refused.

pub mod lease;
pub mod records;

use std::collections::HashMap;
use std::collections::HashSet;

use crate::ids::JobId;
use crate::job::{get_json_opt, to_compact_json_bytes, to_json_bytes};
use crate::store::{DynStore, PutOutcome};
use crate::{Error, Result};

pub use lease::{Lease, LeaseOptions, LeaseRecord};
pub use records::{Checkpoint, CheckpointPointer, IngestedObject, JobMarker, LedgerEntry};

/// A checkpoint is written every this many entries: a read GETs at most this many entries
/// past the latest checkpoint.
pub const CHECKPOINT_EVERY: u64 = 32;

/// Appends tried before giving up: each failed one means another job's entry was written
/// meanwhile, so this many is a burst of finalizes of one name at once.
const APPEND_TRIES: u32 = 64;

/// One job name's ledger, below a work location.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: DynStore,
    name: String,
}

/// How a job came to be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An incremental job (planned without what the ledger held): refused when another
    /// job ingested any of its objects.
    Incremental,
    /// A full run, a deliberate reprocess: recorded, never refused.
    Full,
    /// A job of the name finalized before the ledger, imported from its manifest.
    Imported,
}

/// What [`Ledger::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This call wrote the job's entry.
    Appended {
        /// Its sequence number.
        seq: u64,
    },
    /// The job was recorded before (a finalize run again).
    Already {
        /// Its entry's sequence number.
        seq: u64,
    },
}

impl Ledger {
    /// The ledger of job name `name` in the work store `work`.
    pub fn new(work: DynStore, name: &str) -> Ledger {
        Ledger {
            store: work,
            name: name.to_string(),
        }
    }

    /// The job name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every entry, from the latest checkpoint and the log past it.
    pub async fn read(&self) -> Result<LedgerView> {
        let mut view = LedgerView::empty(&self.name);
        let pointer: Option<CheckpointPointer> = get_json_opt(
            self.store.as_ref(),
            &records::checkpoint_pointer(&self.name),
        )
        .await?;
        if let Some(p) = pointer {
            let key = records::checkpoint(&self.name, p.seq);
            match get_json_opt::<Checkpoint>(self.store.as_ref(), &key).await? {
                Some(c) if c.seq == p.seq && c.name == self.name => {
                    for e in c.entries {
                        view.apply(e, &key)?;
                    }
                    view.checkpoint_seq = c.seq;
                }
                // A checkpoint is never deleted by fanout: without it, the whole log.
                _ => {
                    tracing::warn!(checkpoint = %key, "ledger checkpoint missing; reading the whole log")
                }
            }
        }
        self.refresh(&mut view).await?;
        Ok(view)
    }

    /// Adds to `view` the entries written since it was read.
    pub async fn refresh(&self, view: &mut LedgerView) -> Result<()> {
        let after = records::entry(&self.name, view.seq);
        let newer = self
            .store
            .list_after(&records::log(&self.name), &after)
            .await?;
        for o in newer {
            let entry: LedgerEntry = get_json_opt(self.store.as_ref(), &o.key)
                .await?
                .ok_or_else(|| Error::record(&o.key, "listed, then not found"))?;
            view.apply(entry, &o.key)?;
        }
        Ok(())
    }

    /// The entry that recorded `job_id`, from its marker (one GET).
    pub async fn entry_of(&self, job_id: &JobId) -> Result<Option<u64>> {
        let marker: Option<JobMarker> =
            get_json_opt(self.store.as_ref(), &records::by_job(&self.name, job_id)).await?;
        Ok(marker.map(|m| m.seq))
    }

    /// Records that `job_id` committed `objects` (idempotent; see the module docs for the
    /// protocol). An [`EntryKind::Incremental`] job is refused with
    /// [`Error::AlreadyIngested`] when another job of the name ingested any of its objects
    /// (same URI and version).
    pub async fn record(
        &self,
        job_id: &JobId,
        work: &str,
        kind: EntryKind,
        mut objects: Vec<IngestedObject>,
    ) -> Result<Recorded> {
        if let Some(seq) = self.entry_of(job_id).await? {
            return Ok(Recorded::Already { seq });
        }
        objects.sort();
        objects.dedup();
        let mut view = self.read().await?;
        for _ in 0..APPEND_TRIES {
            if let Some(seq) = view.job_seq(job_id) {
                self.mark(job_id, seq).await?;
                return Ok(Recorded::Already { seq });
            }
            if kind == EntryKind::Incremental {
                view.refuse_ingested(job_id, &objects)?;
            }
            let entry = LedgerEntry {
                seq: view.seq + 1,
                name: self.name.clone(),
                job_id: job_id.clone(),
                work: work.to_string(),
                committed_ms: crate::clock::now_ms(),
                incremental: kind == EntryKind::Incremental,
                imported: kind == EntryKind::Imported,
                objects: objects.clone(),
            };
            let key = records::entry(&self.name, entry.seq);
            let bytes = to_compact_json_bytes("ledger entry", &entry)?;
            match self.store.put_if_absent(&key, bytes).await? {
                PutOutcome::Created => {
                    let seq = entry.seq;
                    view.apply(entry, &key)?;
                    self.mark(job_id, seq).await?;
                    self.maybe_checkpoint(&view).await?;
                    return Ok(Recorded::Appended { seq });
                }
                PutOutcome::AlreadyExists => self.refresh(&mut view).await?,
            }
        }
        Err(Error::record(
            records::log(&self.name),
            format!("job {job_id}: {APPEND_TRIES} appends in a row lost to other writers"),
        ))
    }

    async fn mark(&self, job_id: &JobId, seq: u64) -> Result<()> {
        let marker = JobMarker {
            job_id: job_id.clone(),
            seq,
        };
        self.store
            .put_if_absent(
                &records::by_job(&self.name, job_id),
                to_json_bytes("ledger marker", &marker)?,
            )
            .await?;
        Ok(())
    }

    /// Writes a checkpoint of `view` when it is [`CHECKPOINT_EVERY`] entries past the last.
    async fn maybe_checkpoint(&self, view: &LedgerView) -> Result<()> {
        if view.seq < view.checkpoint_seq + CHECKPOINT_EVERY {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            seq: view.seq,
            name: self.name.clone(),
            entries: view.entries.clone(),
        };
        self.store
            .put_if_absent(
                &records::checkpoint(&self.name, view.seq),
                to_compact_json_bytes("ledger checkpoint", &checkpoint)?,
            )
            .await?;
        self.store
            .put(
                &records::checkpoint_pointer(&self.name),
                to_json_bytes(
                    "ledger checkpoint pointer",
                    &CheckpointPointer { seq: view.seq },
                )?,
            )
            .await?;
        Ok(())
    }
}

/// A ledger as read: every entry up to [`LedgerView::seq`], indexed.
#[derive(Debug, Clone)]
pub struct LedgerView {
    name: String,
    seq: u64,
    checkpoint_seq: u64,
    entries: Vec<LedgerEntry>,
    jobs: HashMap<JobId, u64>,
    /// (URI, version) → the first job that ingested it.
    objects: HashMap<(String, String), JobId>,
}

impl LedgerView {
    fn empty(name: &str) -> LedgerView {
        LedgerView {
            name: name.to_string(),
            seq: 0,
            checkpoint_seq: 0,
            entries: Vec::new(),
            jobs: HashMap::new(),
            objects: HashMap::new(),
        }
    }

    /// Adds the next entry; one out of order means a broken log, named by `key`.
    fn apply(&mut self, entry: LedgerEntry, key: &str) -> Result<()> {
        if entry.seq != self.seq + 1 || entry.name != self.name {
            return Err(Error::record(
                key,
                format!(
                    "ledger entry {} of `{}` where entry {} of `{}` was expected",
                    entry.seq,
                    entry.name,
                    self.seq + 1,
                    self.name
                ),
            ));
        }
        self.seq = entry.seq;
        self.jobs.entry(entry.job_id.clone()).or_insert(entry.seq);
        for o in &entry.objects {
            self.objects
                .entry((o.uri.clone(), o.etag.clone()))
                .or_insert_with(|| entry.job_id.clone());
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The last sequence number read (0 for an empty ledger).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// Whether no job was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a job, if recorded.
    pub fn job_seq(&self, job_id: &JobId) -> Option<u64> {
        self.jobs.get(job_id).copied()
    }

    /// The job that ingested an object (URI and version), if any.
    pub fn ingested_by(&self, uri: &str, etag: &str) -> Option<&JobId> {
        self.objects.get(&(uri.to_string(), etag.to_string()))
    }

    /// Distinct objects (URI and version) ingested.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// The ingested objects below `root` (an input store's `describe()`), as (key below
    /// it, version): the skip set of an incremental job over that input.
    pub fn committed_below(&self, root: &str) -> HashSet<(String, String)> {
        self.objects
            .keys()
            .filter_map(|(uri, etag)| Some((uri.strip_prefix(root)?.to_string(), etag.clone())))
            .collect()
    }

    /// [`Error::AlreadyIngested`] when another job ingested any of `objects`.
    pub fn refuse_ingested(&self, job_id: &JobId, objects: &[IngestedObject]) -> Result<()> {
        let taken: Vec<(String, JobId)> = objects
            .iter()
            .filter_map(|o| {
                let by = self.ingested_by(&o.uri, &o.etag)?;
                (by != job_id).then(|| (o.uri.clone(), by.clone()))
            })
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        Err(Error::AlreadyIngested {
            name: self.name.clone(),
            job_id: job_id.clone(),
            objects: taken,
        })
    }
}
