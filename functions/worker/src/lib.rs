//! The worker Lambda: an SQS batch of chunk messages → `process_chunk` per message →
//! `SqsBatchResponse` naming only the messages to retry (`ReportBatchItemFailures`).

use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use fanout::queue::Message;
use fanout::worker::{Disposition, Worker};
use lambda_runtime::LambdaEvent;
use tracing::warn;

/// Do not start a chunk with less time than this left: it would be cut off mid-way.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(30);

/// 2001-09-09 in ms since the epoch: any real Lambda deadline is later.
const PLAUSIBLE_EPOCH_MS: u64 = 1_000_000_000_000;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The queue's `maxReceiveCount` (so the last attempt is known to be the last).
    pub max_receive_count: u32,
    /// Least time left to start a chunk.
    pub min_remaining: Duration,
}

fn message(m: &SqsMessage) -> Message {
    Message {
        id: m.message_id.clone().unwrap_or_default(),
        receipt: m.receipt_handle.clone().unwrap_or_default(),
        body: m.body.clone().unwrap_or_default(),
        receive_count: m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    }
}

/// Handles one batch; never fails as a whole, so one bad chunk does not retry its neighbours.
pub async fn handle(
    worker: &Worker,
    settings: &Settings,
    event: LambdaEvent<SqsEvent>,
) -> SqsBatchResponse {
    let mut failures = Vec::new();
    let deadline_ms = event.context.deadline;
    // Each attempt record carries the invocation's deadline: past it, an attempt that left
    // no record was killed, well before the queue's visibility timeout says so.
    let invocation = (deadline_ms > PLAUSIBLE_EPOCH_MS).then(|| worker.until(deadline_ms));
    let worker = invocation.as_ref().unwrap_or(worker);
    for record in &event.payload.records {
        let msg = message(record);
        let remaining = Duration::from_millis(deadline_ms.saturating_sub(fanout::clock::now_ms()));
        // Lambda sends the deadline in ms since the epoch; a value before 2001 is not one
        // (local emulators send a duration) and is not enforced.
        if deadline_ms > PLAUSIBLE_EPOCH_MS && remaining < settings.min_remaining {
            // Left for the next invocation; the receive it used is not a failed attempt of ours.
            warn!(message_id = %msg.id, remaining_ms = remaining.as_millis() as u64, deadline_ms, "too little time left to start a chunk");
            failures.push(msg.id);
            continue;
        }
        match worker
            .handle_message(&msg, settings.max_receive_count)
            .await
        {
            Disposition::Ack(_) | Disposition::Reject(_) => {}
            Disposition::Retry(_) => failures.push(msg.id),
        }
    }
    if let Err(e) = worker.env().metrics.flush().await {
        warn!(error = %e, "metrics flush failed");
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
