//! The queue port: at-least-once delivery with SQS semantics.
//!
//! A received message stays invisible for the visibility timeout; if it is not deleted
//! it comes back with its receive count raised. A queue with a redrive policy moves a
//! message to its dead-letter queue when it would be received more than
//! `max_receive_count` times. [`LocalQueue`] implements exactly that in memory, so a
//! local run retries and dead-letters a failing chunk the way SQS would.

mod local;
#[cfg(feature = "aws")]
mod sqs;

use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalQueue;
#[cfg(feature = "aws")]
pub use sqs::SqsQueue;

/// A boxed error source kept for `Error::source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A queue call that failed: the port's own error, naming nothing of the domain.
#[derive(Debug, thiserror::Error)]
#[error("queue {op}: {message}")]
pub struct QueueError {
    /// The queue operation.
    pub op: &'static str,
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// The underlying error.
    #[source]
    pub source: Option<BoxError>,
}

/// The queue port's result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// SQS's batch limit for send, receive and delete.
pub const MAX_BATCH: usize = 10;

/// A received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// Stable message id.
    pub id: String,
    /// Handle for this receipt; only the latest receipt can delete the message.
    pub receipt: String,
    /// Body.
    pub body: String,
    /// How many times the message has been received, this receipt included.
    pub receive_count: u32,
}

/// Approximate queue depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready to be received.
    pub visible: u64,
    /// Messages received and neither deleted nor visible again.
    pub in_flight: u64,
}

impl QueueDepth {
    /// No message left at all.
    pub fn is_drained(&self) -> bool {
        self.visible == 0 && self.in_flight == 0
    }
}

/// A message queue.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Sends the bodies (any count; adapters batch them).
    async fn send(&self, bodies: &[String]) -> Result<()>;
    /// Receives up to `max` messages, waiting up to `wait` for the first.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>>;
    /// Deletes a received message; a stale receipt succeeds without deleting (as in SQS).
    async fn delete(&self, receipt: &str) -> Result<()>;
    /// Makes a received message visible again after `timeout` (zero: at once).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<()>;
    /// Approximate depth.
    async fn depth(&self) -> Result<QueueDepth>;
}
