//! The metrics port.
//!
//! Adapters: [`MemoryMetrics`] (the embedded default, printed as the run summary) and,
//! with the AWS adapters, CloudWatch EMF on stdout and PutMetricData.

#[cfg(feature = "aws")]
mod cloudwatch;
mod emf;
mod memory;

use async_trait::async_trait;

#[cfg(feature = "aws")]
pub use cloudwatch::CloudWatchMetrics;
pub use emf::EmfMetrics;
pub use memory::MemoryMetrics;

/// A metrics call that failed (sending buffered values): the port's own error.
#[derive(Debug, thiserror::Error)]
#[error("metrics {op}: {message}")]
pub struct MetricsError {
    /// The operation (`flush`).
    pub op: &'static str,
    /// What failed.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The metrics port's result type.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

/// Metric units (the CloudWatch set fanout uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Unit {
    /// A count.
    Count,
    /// Bytes.
    Bytes,
    /// Milliseconds.
    Milliseconds,
    /// A plain number.
    None,
}

/// A metrics sink.
#[async_trait]
pub trait Metrics: Send + Sync + std::fmt::Debug {
    /// Records one value of metric `name` for the job named `job` (the `JobName` dimension).
    fn record(&self, job: &str, name: &str, value: f64, unit: Unit);
    /// Sends buffered values (a no-op for sinks that do not buffer).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The CloudWatch name of a unit.
pub fn unit_name(u: Unit) -> &'static str {
    match u {
        Unit::Count => "Count",
        Unit::Bytes => "Bytes",
        Unit::Milliseconds => "Milliseconds",
        Unit::None => "None",
    }
}

/// Metric names, one place for the catalogue.
pub mod names {
    /// Records read from the input.
    pub const ROWS_READ: &str = "RowsRead";
    /// Records quarantined.
    pub const ROWS_REJECTED: &str = "RowsRejected";
    /// Rows written to the output.
    pub const ROWS_WRITTEN: &str = "RowsWritten";
    /// Input bytes read.
    pub const BYTES_READ: &str = "BytesRead";
    /// Output bytes written.
    pub const BYTES_WRITTEN: &str = "BytesWritten";
    /// Chunks committed.
    pub const CHUNKS_COMMITTED: &str = "ChunksCommitted";
    /// Chunk attempts that failed.
    pub const CHUNKS_FAILED: &str = "ChunksFailed";
    /// Deliveries of chunks already committed.
    pub const CHUNKS_DUPLICATE: &str = "ChunksDuplicate";
    /// Time to process one chunk.
    pub const CHUNK_DURATION: &str = "ChunkDuration";
    /// Files written.
    pub const FILES_WRITTEN: &str = "FilesWritten";
    /// Compaction bins committed.
    pub const BINS_COMMITTED: &str = "BinsCommitted";
    /// Compaction bin attempts that failed.
    pub const BINS_FAILED: &str = "BinsFailed";
    /// Time to merge one compaction bin.
    pub const BIN_DURATION: &str = "BinDuration";
    /// A finalized job's measured cost in USD (reducer).
    pub const JOB_COST: &str = "JobCost";
    /// A finalized job's Lambda GB-seconds (reducer).
    pub const JOB_LAMBDA_GB_SECONDS: &str = "JobLambdaGbSeconds";
    /// Plan to finalize, milliseconds (reducer).
    pub const JOB_DURATION: &str = "JobDuration";
}
