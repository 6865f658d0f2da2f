//! [`SqsQueue`]: Amazon SQS.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::{DEFAULT_MAX_MESSAGE_BYTES, MAX_BATCH, Message, Queue, QueueDepth, batches_by_bytes};
use super::{QueueError, Result};

/// Attempts at re-sending the entries of a batch that SQS refused.
const SEND_ATTEMPTS: u32 = 5;

/// An SQS queue by URL.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    max_message_bytes: usize,
}

impl SqsQueue {
    /// The queue at `url`, sending messages and batches of at most
    /// [`DEFAULT_MAX_MESSAGE_BYTES`] (what every SQS queue accepts).
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The same queue with another message size limit: the queue's `MaximumMessageSize`
    /// (at most 1 MiB), which also bounds the payload of one `SendMessageBatch`.
    pub fn with_max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

fn sdk_error<E>(op: &'static str, e: SdkError<E>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        _ => {
            status.is_some_and(|s| s >= 500)
                || e.code().is_some_and(|c| {
                    c.contains("Throttl")
                        || c == "RequestThrottled"
                        || c.contains("ServiceUnavailable")
                })
        }
    };
    let message = match e.code() {
        Some(c) => format!("{c}: {}", e.message().unwrap_or("")),
        None => aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
    };
    QueueError {
        op,
        message,
        retryable,
        source: Some(Box::new(e)),
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, bodies: &[String]) -> Result<()> {
        for batch in batches_by_bytes(bodies, self.max_message_bytes)? {
            let mut pending: Vec<(String, &String)> = batch
                .iter()
                .enumerate()
                .map(|(i, b)| (i.to_string(), b))
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                let entries = pending
                    .iter()
                    .map(|(id, body)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(id)
                            .message_body(body.as_str())
                            .build()
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| QueueError {
                        op: "send",
                        message: e.to_string(),
                        retryable: false,
                        source: Some(Box::new(e)),
                    })?;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| sdk_error("send", e))?;
                let failed: Vec<_> = out.failed().to_vec();
                if let Some(f) = failed.iter().find(|f| f.sender_fault) {
                    return Err(QueueError {
                        op: "send",
                        message: format!(
                            "SQS refused a message: {} {}",
                            f.code,
                            f.message().unwrap_or("")
                        ),
                        retryable: false,
                        source: None,
                    });
                }
                // Re-send only the entries that failed on SQS's side.
                pending.retain(|(id, _)| failed.iter().any(|f| &f.id == id));
                if !pending.is_empty() {
                    if attempt >= SEND_ATTEMPTS {
                        return Err(QueueError {
                            op: "send",
                            message: format!(
                                "{} messages still refused after {attempt} attempts",
                                pending.len()
                            ),
                            retryable: true,
                            source: None,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_error("receive", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("delete", e))
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_error("change_visibility", e))
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| sdk_error("depth", e))?;
        let get = |n: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&n))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}
