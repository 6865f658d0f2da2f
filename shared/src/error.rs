//! The crate's error type, and the one error model every part follows.
//!
//! # The error model
//!
//! Each port has its own error, naming nothing of the domain: [`StoreError`],
//! [`QueueError`], [`MetricsError`], [`CatalogError`]. The domain's [`Error`] wraps them (and the spec's,
//! arrow's, parquet's, DataFusion's and serde's errors) with the source kept, so
//! `Error::source()` walks down to the SDK or I/O error that started it.
//!
//! Every error is either **retryable** — the same call may succeed later: throttling, an
//! S3/SQS 5xx or timeout, a full or failing local staging disk, an injected crash — or
//! **permanent**: no retry alone can help (a refused spec, an object that changed or
//! vanished since planning, a corrupt object, a failing SQL transform, a record that does
//! not parse). [`Error::is_retryable`] is the classification, [`Error::kind`] its stable
//! name (a Lambda `errorType`, a failure record's `error_kind`).
//!
//! What each part does with an error:
//!
//! - **Record reads** (plans, commit records, manifests) try a retryable error again, three
//!   times with a short backoff, so one throttled GET among thousands does not fail a
//!   reducer; a permanent one is returned at once.
//! - **The worker** deletes a message whose body is not a chunk task (no attempt could ever
//!   process it). Any other failure of a chunk, retryable **or permanent**, is recorded (a
//!   failure record with the kind, the message, `permanent` and `last_attempt`) and the
//!   message is left on the queue: it comes back after its visibility timeout and, after
//!   the queue's `maxReceiveCount` receives, moves to the dead-letter queue. Permanent errors
//!   are retried too, deliberately: causes outside the input (a missing lookup, a denied
//!   permission, a bad deployment setting) are fixed by an operator, who then redrives the
//!   dead-lettered messages into the same job (RUNBOOK.md); a message deleted on its first
//!   permanent error would need a new job instead. A cause in the input itself (an object
//!   corrupt or changed since planning) needs a new job: a replaced object is a new
//!   version, which the job's plan does not name. The failure record says whether a retry alone can help, and `status` and the
//!   report show it.
//! - **The planner and reducer** return the error to their caller. In Lambda the runtime
//!   reports it with [`Error::kind`] as `errorType`; the Step Functions workflow retries
//!   only Lambda's own service errors and ends the execution in `JobFailed` on any of
//!   fanout's, with the kind and message in its output (the SDK clients have already retried
//!   throttling, and record reads their transient errors, before an error gets there). The
//!   CLI prints the error and exits non-zero. Both are idempotent, so starting them again
//!   after the cause is fixed redoes the same work.

use crate::catalog::CatalogError;
use crate::ids::IdError;
use crate::metrics::MetricsError;
use crate::queue::QueueError;
use crate::spec::SpecError;
use crate::store::StoreError;

/// A boxed error source kept for `Error::source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in fanout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job spec was refused.
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// An id (job, chunk) given on a command line, in an event or a message is malformed.
    #[error(transparent)]
    Id(#[from] IdError),

    /// An object store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A queue call failed.
    #[error(transparent)]
    Queue(#[from] QueueError),

    /// Sending metrics failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),

    /// A table catalog call failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),

    /// The job's output cannot be registered as the catalog's table (a column's type
    /// changed, partition keys differ, another location): nothing was changed.
    #[error("catalog table `{table}`: {message}")]
    TableIncompatible {
        /// `database.table`.
        table: String,
        /// What does not fit.
        message: String,
    },

    /// The worker's local staging disk (output files before upload) failed.
    #[error("local staging: {context}: {source}")]
    Staging {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A queue message body is not a chunk task.
    #[error("malformed chunk message: {message}")]
    Message {
        /// What was wrong with the body.
        message: String,
        /// The parse error, when there was one.
        #[source]
        source: Option<BoxError>,
    },

    /// An input object cannot be read as a whole (corrupt compression, unreadable footer).
    #[error("reading `{object}`: {message}")]
    Input {
        /// The object key.
        object: String,
        /// What failed.
        message: String,
        /// The decoder's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// Arrow failed on data fanout built itself.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// The transform or aggregate failed (a step of fanout's own: an overflowing sum, a
    /// missing column, a task that died).
    #[error("transform: {message}")]
    Transform {
        /// What failed.
        message: String,
    },

    /// DataFusion failed running the SQL transform or planning the aggregate.
    #[cfg(feature = "sql")]
    #[error("transform: {0}")]
    Sql(#[from] datafusion::error::DataFusionError),

    /// The SQL transform calls a function whose result may differ between two runs over
    /// the same rows (`random()`, `now()`): a retried chunk would write other bytes under
    /// the keys of its first attempt.
    #[cfg(feature = "sql")]
    #[error(
        "transform: the SQL calls `{function}`, a {volatility} function: its result differs \
         between runs, so a retried chunk would write different rows; compute the value \
         before the job (a column of the input or a lookup) instead"
    )]
    NotDeterministic {
        /// The function's name.
        function: String,
        /// `volatile` (differs per call) or `stable` (differs per query, such as the time).
        volatility: &'static str,
    },

    /// A task of the chunk pipeline (writer, aggregate) panicked or was cancelled.
    #[error("transform: {what} failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },

    /// A persisted record (plan, commit record, manifest) could not be read.
    #[error("record `{key}`: {message}")]
    Record {
        /// The record's key.
        key: String,
        /// What was wrong.
        message: String,
        /// The parse error, when there was one.
        #[source]
        source: Option<BoxError>,
    },

    /// A value could not be serialized (a record, a reject, a message body).
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// The job as a whole failed (chunks failed for good, reject ratio exceeded, …).
    #[error("job `{job_id}` failed: {message}")]
    Job {
        /// The job.
        job_id: crate::ids::JobId,
        /// Why.
        message: String,
    },

    /// Files a job's commit records list are gone or not the size recorded (deleted by a
    /// `gc`, a lifecycle rule or a hand): the finalize refuses to write a manifest listing
    /// them.
    #[error(
        "job `{job_id}` cannot be finalized: {} file(s) its commit records list are missing or changed: {}; \
         the records no longer match the output: collect the job as abandoned \
         (`fanout gc {job_id} --abandoned`) and run it again",
        files.len(),
        describe_files(files)
    )]
    FilesChanged {
        /// The job.
        job_id: crate::ids::JobId,
        /// Each file found wrong, sorted by location.
        files: Vec<ChangedFile>,
    },

    /// A configuration value (environment, command line) is wrong.
    #[error("configuration: {0}")]
    Config(String),

    /// Nothing to process: no input object matched (or every one that did is already in
    /// the ingestion ledger). No job is planned, so none can finalize as succeeded.
    #[error(
        "job `{name}`: no input object to process under {location}{detail}: no job was planned"
    )]
    NoInput {
        /// The job name.
        name: String,
        /// The input location.
        location: String,
        /// Which selection left nothing (`; include [..]`, `; 3 already ingested`, …).
        detail: String,
    },

    /// Another run of the job name holds its lease (`ledger/<name>/lease.json`).
    #[error(
        "job name `{name}` is being run by {holder} (lease {key}, held until {}, {} s from now): \
         wait for it to finish, or run with --wait-lease; if that run died, its lease is taken \
         over once it expires",
        crate::clock::format_ms(*expires_ms),
        expires_ms.saturating_sub(crate::clock::now_ms()).div_ceil(1000)
    )]
    LeaseHeld {
        /// The job name.
        name: String,
        /// Who holds it (host, process, token).
        holder: String,
        /// The lease's key below the work location.
        key: String,
        /// When it expires unless renewed (ms since the epoch).
        expires_ms: u64,
    },

    /// A run's lease was taken over by another run (it was not renewed in time).
    #[error("job name `{name}`: the lease {key} of this run ({holder}) was taken over by {taker}")]
    LeaseLost {
        /// The job name.
        name: String,
        /// The lease's key below the work location.
        key: String,
        /// This run.
        holder: String,
        /// Who holds the lease now.
        taker: String,
    },

    /// Input objects a job read are already in the ingestion ledger, committed by other
    /// jobs of the name: recording the job would ingest them twice.
    #[error(
        "job `{job_id}`: {} input object(s) are already ingested by other `{name}` jobs: {}",
        objects.len(),
        objects.iter().take(5).map(|(uri, job)| format!("{uri} (by {job})")).collect::<Vec<_>>().join(", ")
    )]
    AlreadyIngested {
        /// The job name.
        name: String,
        /// The job refused.
        job_id: crate::ids::JobId,
        /// Each object already ingested, and the job that did.
        objects: Vec<(String, crate::ids::JobId)>,
    },

    /// A fault injected by a test (a simulated crash at a point of the chunk protocol).
    #[error("injected fault at {point:?}")]
    Injected {
        /// Where.
        point: FaultPoint,
    },
}

/// A file a commit record lists that is not as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Where the file should be (its full location).
    pub location: String,
    /// The chunk whose commit record lists it.
    pub chunk_id: crate::ids::ChunkId,
    /// The size recorded (`None` for a rejects file, whose size is not recorded).
    pub recorded_bytes: Option<u64>,
    /// The size found, `None` when the file is missing.
    pub found_bytes: Option<u64>,
}

/// Files named in an error message: the first few, and how many more.
const FILES_NAMED: usize = 10;

fn describe_files(files: &[ChangedFile]) -> String {
    let mut parts: Vec<String> = files
        .iter()
        .take(FILES_NAMED)
        .map(|f| match (f.found_bytes, f.recorded_bytes) {
            (None, _) => format!("{} of chunk {} (missing)", f.location, f.chunk_id),
            (Some(found), Some(rec)) => format!(
                "{} of chunk {} ({found} bytes, {rec} recorded)",
                f.location, f.chunk_id
            ),
            (Some(found), None) => {
                format!("{} of chunk {} ({found} bytes)", f.location, f.chunk_id)
            }
        })
        .collect();
    if files.len() > FILES_NAMED {
        parts.push(format!("and {} more", files.len() - FILES_NAMED));
    }
    parts.join(", ")
}

/// Points of the chunk protocol where a test can simulate a crash
/// (`worker::Worker::with_faults`); a worker has no faults by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// After reading and transforming, before the first output file.
    BeforeFirstOutput,
    /// After some output files, before the next.
    BetweenOutputs,
    /// After every output file and the rejects, before the commit record.
    BeforeCommit,
    /// After the commit record, before the message is acknowledged.
    AfterCommit,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the operation may succeed if tried again (see the module's error model).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Queue(e) => e.retryable,
            Error::Catalog(e) => e.retryable,
            // A crash is what the queue's retry exists for.
            Error::Injected { .. } => true,
            // The other run ends, or its lease expires.
            Error::LeaseHeld { .. } => true,
            // A full or failing /tmp is this container's; another attempt may run elsewhere.
            Error::Staging { .. } => true,
            // The Parquet writer's sink is the staging disk.
            Error::Parquet(parquet::errors::ParquetError::External(_)) => true,
            _ => false,
        }
    }

    /// A short stable name for the error kind, used as a Lambda `errorType` and in failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Spec(_) => "SpecError",
            Error::Id(_) => "InvalidId",
            Error::Store(StoreError::NotFound { .. }) => "NotFound",
            Error::Store(StoreError::Changed { .. }) => "InputError",
            Error::Store(StoreError::Staging { .. }) | Error::Staging { .. } => "StagingError",
            Error::Store(StoreError::Request { .. }) => "StoreError",
            Error::Queue(_) => "QueueError",
            Error::Metrics(_) => "MetricsError",
            Error::Catalog(_) => "CatalogError",
            Error::TableIncompatible { .. } => "TableIncompatible",
            Error::Message { .. } => "MalformedMessage",
            Error::Input { .. } => "InputError",
            Error::Arrow(_) => "ArrowError",
            Error::Parquet(_) => "ParquetError",
            Error::Transform { .. } | Error::Task { .. } => "TransformError",
            #[cfg(feature = "sql")]
            Error::Sql(_) => "TransformError",
            #[cfg(feature = "sql")]
            Error::NotDeterministic { .. } => "NotDeterministic",
            Error::Record { .. } => "RecordError",
            Error::Serialize { .. } => "SerializeError",
            Error::Job { .. } => "JobFailed",
            Error::FilesChanged { .. } => "FilesChanged",
            Error::Config(_) => "ConfigError",
            Error::NoInput { .. } => "NoInput",
            Error::LeaseHeld { .. } => "LeaseHeld",
            Error::LeaseLost { .. } => "LeaseLost",
            Error::AlreadyIngested { .. } => "AlreadyIngested",
            Error::Injected { .. } => "InjectedFault",
        }
    }

    /// A record that is wrong in itself (no underlying error).
    pub(crate) fn record(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Record {
            key: key.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A record that does not parse.
    pub(crate) fn unreadable_record(key: impl Into<String>, e: serde_json::Error) -> Self {
        Error::Record {
            key: key.into(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    /// An object store call answered "not found" (the object vanished or never existed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Store(StoreError::NotFound { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn port_errors_keep_their_kind_retryability_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow disk");
        let e = Error::from(StoreError::Request {
            op: "get",
            key: "k".into(),
            message: "timed out".into(),
            retryable: true,
            source: Some(Box::new(io)),
        });
        assert!(e.is_retryable());
        assert_eq!(e.kind(), "StoreError");
        assert_eq!(e.to_string(), "object store get `k`: timed out");
        let source = e.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("slow disk"));

        let gone = Error::from(StoreError::NotFound { key: "k".into() });
        assert!(!gone.is_retryable() && gone.is_not_found());
        assert_eq!(gone.kind(), "NotFound");

        let q = Error::from(QueueError {
            op: "send",
            message: "throttled".into(),
            retryable: true,
            source: None,
        });
        assert!(q.is_retryable());
        assert_eq!(q.to_string(), "queue send: throttled");
    }

    #[test]
    fn unreadable_records_keep_the_parse_error() {
        let parse = serde_json::from_str::<u32>("x").unwrap_err();
        let e = Error::unreadable_record("jobs/j/_manifest.json", parse);
        assert_eq!(e.kind(), "RecordError");
        assert!(!e.is_retryable());
        assert!(e.source().is_some());
    }
}
