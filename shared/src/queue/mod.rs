//! The queue port: at-least-once delivery with SQS semantics.
//!
//! A received message stays invisible for the visibility timeout; if it is not deleted
//! it comes back with its receive count raised. A queue with a redrive policy moves a
//! message to its dead-letter queue when it would be received more than
//! `max_receive_count` times. [`LocalQueue`] implements exactly that in memory, so a
//! local run retries and dead-letters a failing chunk the way SQS would.
//!
//! Both adapters keep SQS's size limits: a message over the queue's limit refuses its
//! whole send, and a send batch holds at most [`MAX_BATCH`] messages and the limit's bytes
//! in all ([`batches_by_bytes`]).

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

/// The message size every SQS queue accepts: 256 KiB was SQS's limit until 2025 and is
/// still the `MaximumMessageSize` of older queues and some emulators. The same bound
/// applies to the sum of the bodies of one `SendMessageBatch`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The largest message (and batch payload) SQS accepts at all, since 2025: 1 MiB.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The smallest `MaximumMessageSize` an SQS queue can be given: 1 KiB.
pub const SQS_MIN_MESSAGE_BYTES: usize = 1024;

/// Cuts `bodies` into send batches of at most [`MAX_BATCH`] messages whose bodies add up
/// to at most `max_message_bytes`, as `SendMessageBatch` requires.
///
/// Every body is checked first: one body over the limit refuses the whole send, before
/// any batch goes out, so a caller never leaves half of its messages sent.
///
/// ```
/// use fanout::queue::batches_by_bytes;
/// let bodies = vec!["a".repeat(60), "b".repeat(60), "c".repeat(10)];
/// let batches = batches_by_bytes(&bodies, 100).unwrap();
/// assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![1, 2]);
/// assert!(batches_by_bytes(&["x".repeat(101)], 100).is_err());
/// ```
pub fn batches_by_bytes(bodies: &[String], max_message_bytes: usize) -> Result<Vec<&[String]>> {
    if let Some((i, b)) = bodies
        .iter()
        .enumerate()
        .find(|(_, b)| b.len() > max_message_bytes)
    {
        return Err(QueueError {
            op: "send",
            message: format!(
                "message {} of {} is {} bytes, over the queue's limit of {max_message_bytes} bytes; nothing was sent",
                i + 1,
                bodies.len(),
                b.len()
            ),
            retryable: false,
            source: None,
        });
    }
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, b) in bodies.iter().enumerate() {
        if i > start && (i - start == MAX_BATCH || bytes + b.len() > max_message_bytes) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    Ok(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn batches_keep_every_body_in_order_within_count_and_bytes(
            sizes in proptest::collection::vec(0usize..300, 0..60),
            limit in 310usize..1_000,
        ) {
            let bodies: Vec<String> = sizes.iter().enumerate().map(|(i, n)| format!("{i}:{}", "x".repeat(*n))).collect();
            let batches = batches_by_bytes(&bodies, limit).expect("every body fits");
            for b in &batches {
                prop_assert!(!b.is_empty() && b.len() <= MAX_BATCH);
                prop_assert!(b.iter().map(String::len).sum::<usize>() <= limit);
            }
            let flat: Vec<&String> = batches.iter().flat_map(|b| b.iter()).collect();
            prop_assert_eq!(flat, bodies.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_body_over_the_limit_refuses_the_whole_send_naming_its_size() {
        let bodies = vec!["a".into(), "b".repeat(101), "c".into()];
        let e = batches_by_bytes(&bodies, 100).expect_err("too large");
        assert!(!e.retryable);
        assert!(e.message.contains("message 2 of 3 is 101 bytes"), "{e}");
        assert!(e.message.contains("limit of 100 bytes"), "{e}");
    }
}
