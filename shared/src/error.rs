//! The crate's error type, classified retryable vs permanent.
//!
//! The classification drives the worker's response to a failed chunk: a retryable error
//! leaves the message on the queue (it comes back after its visibility timeout and is
//! dead-lettered after the queue's maximum receive count); a permanent error is recorded
//! as a failure at once, because retrying it would only burn receives.

use crate::spec::SpecError;

/// A boxed error source kept for `Error::source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in fanout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job spec was refused.
    #[error(transparent)]
    Spec(#[from] SpecError),

    /// An object store call failed.
    #[error("object store {op} `{key}`: {message}")]
    Store {
        /// The store operation (`get`, `put`, `list`, …).
        op: &'static str,
        /// The key (or prefix) involved.
        key: String,
        /// What failed.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
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

    /// An object that must exist does not.
    #[error("object `{key}` not found")]
    NotFound {
        /// The missing key.
        key: String,
    },

    /// A queue call failed.
    #[error("queue {op}: {message}")]
    Queue {
        /// The queue operation.
        op: &'static str,
        /// What failed.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },

    /// A queue message body is not a chunk task.
    #[error("malformed chunk message: {message}")]
    Message {
        /// What was wrong with the body.
        message: String,
    },

    /// An input object cannot be read as a whole (corrupt compression, unreadable footer).
    #[error("reading `{object}`: {message}")]
    Input {
        /// The object key.
        object: String,
        /// What failed.
        message: String,
    },

    /// Arrow failed on data fanout built itself.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// The SQL transform or aggregate failed.
    #[error("transform: {message}")]
    Transform {
        /// What failed, as DataFusion reported it.
        message: String,
    },

    /// A persisted record (plan, commit record, manifest) could not be read.
    #[error("record `{key}`: {message}")]
    Record {
        /// The record's key.
        key: String,
        /// What was wrong.
        message: String,
    },

    /// The job as a whole failed (chunks failed for good, reject ratio exceeded, …).
    #[error("job `{job_id}` failed: {message}")]
    Job {
        /// The job.
        job_id: String,
        /// Why.
        message: String,
    },

    /// A configuration value (environment, command line) is wrong.
    #[error("configuration: {0}")]
    Config(String),

    /// A fault injected by a test (a simulated crash at a point of the chunk protocol).
    #[error("injected fault at {point:?}")]
    Injected {
        /// Where.
        point: crate::worker::FaultPoint,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the operation may succeed if tried again (throttling, I/O hiccups).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } | Error::Queue { retryable, .. } => *retryable,
            Error::Injected { .. } => true,
            // A full or failing /tmp is this container's; another attempt may run elsewhere.
            Error::Staging { .. } => true,
            Error::Parquet(parquet::errors::ParquetError::External(_)) => true,
            _ => false,
        }
    }

    /// A short stable name for the error kind, used as a Lambda `errorType` and in failure records.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Spec(_) => "SpecError",
            Error::Store { .. } => "StoreError",
            Error::Staging { .. } => "StagingError",
            Error::NotFound { .. } => "NotFound",
            Error::Queue { .. } => "QueueError",
            Error::Message { .. } => "MalformedMessage",
            Error::Input { .. } => "InputError",
            Error::Arrow(_) => "ArrowError",
            Error::Parquet(_) => "ParquetError",
            Error::Transform { .. } => "TransformError",
            Error::Record { .. } => "RecordError",
            Error::Job { .. } => "JobFailed",
            Error::Config(_) => "ConfigError",
            Error::Injected { .. } => "InjectedFault",
        }
    }

    pub(crate) fn record(key: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Record {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

#[cfg(feature = "sql")]
impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Error::Transform {
            message: e.to_string(),
        }
    }
}
