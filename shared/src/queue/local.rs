//! [`LocalQueue`]: an in-process queue with SQS semantics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DEFAULT_MAX_MESSAGE_BYTES, Message, Queue, QueueDepth, batches_by_bytes};
use super::{QueueError, Result};

#[derive(Debug)]
struct Entry {
    id: String,
    body: String,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// By sequence number: receives hand out the oldest visible messages first.
    entries: BTreeMap<u64, Entry>,
}

/// An in-memory queue with visibility timeout, receive count, redrive and SQS's message
/// size limit.
#[derive(Debug)]
pub struct LocalQueue {
    name: String,
    state: Mutex<State>,
    visibility: Duration,
    redrive: Option<(Arc<LocalQueue>, u32)>,
    notify: Notify,
    max_message_bytes: usize,
}

impl LocalQueue {
    /// A queue without redrive, accepting messages of at most
    /// [`DEFAULT_MAX_MESSAGE_BYTES`] as every SQS queue does.
    pub fn new(name: impl Into<String>, visibility: Duration) -> Self {
        LocalQueue {
            name: name.into(),
            state: Mutex::new(State::default()),
            visibility,
            redrive: None,
            notify: Notify::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The same queue with another message size limit (an SQS queue's `MaximumMessageSize`).
    pub fn with_max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.max_message_bytes = max_message_bytes;
        self
    }

    /// Redrives to `dead_letter` a message received more than `max_receive_count` times.
    pub fn with_dead_letter(
        mut self,
        dead_letter: Arc<LocalQueue>,
        max_receive_count: u32,
    ) -> Self {
        self.redrive = Some((dead_letter, max_receive_count.max(1)));
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated: every update is one call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, body: String, receive_count: u32) -> String {
        let mut s = self.lock();
        s.next_seq += 1;
        let seq = s.next_seq;
        let id = format!("{}-{seq:08}", self.name);
        s.entries.insert(
            seq,
            Entry {
                id: id.clone(),
                body,
                receive_count,
                visible_at: Instant::now(),
                receipt: None,
            },
        );
        drop(s);
        self.notify.notify_waiters();
        id
    }

    /// Takes every visible message out (used to inspect or move a dead-letter queue).
    pub fn drain_visible(&self) -> Vec<(String, u32)> {
        let now = Instant::now();
        let mut s = self.lock();
        let seqs: Vec<u64> = s
            .entries
            .iter()
            .filter(|(_, e)| e.visible_at <= now)
            .map(|(k, _)| *k)
            .collect();
        seqs.into_iter()
            .filter_map(|k| s.entries.remove(&k))
            .map(|e| (e.body, e.receive_count))
            .collect()
    }

    fn find_by_receipt<'a>(s: &'a mut State, receipt: &str) -> Option<(u64, &'a mut Entry)> {
        let seq: u64 = receipt.split(':').next()?.parse().ok()?;
        let e = s.entries.get_mut(&seq)?;
        (e.receipt.as_deref() == Some(receipt)).then_some((seq, e))
    }
}

#[async_trait]
impl Queue for LocalQueue {
    async fn send(&self, bodies: &[String]) -> Result<()> {
        // Refused and batched as SQS would: a local run must fail where a deployed one would.
        for batch in batches_by_bytes(bodies, self.max_message_bytes)? {
            for b in batch {
                self.push(b.clone(), 0);
            }
        }
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let (out, next_visible) = {
                let now = Instant::now();
                let mut s = self.lock();
                let mut out = Vec::new();
                let mut redriven = Vec::new();
                let mut next_visible: Option<Instant> = None;
                for (&seq, e) in s.entries.iter_mut() {
                    if e.visible_at > now {
                        next_visible =
                            Some(next_visible.map_or(e.visible_at, |n| n.min(e.visible_at)));
                        continue;
                    }
                    if out.len() >= max {
                        break;
                    }
                    // SQS moves a message on the receive that would exceed maxReceiveCount.
                    if let Some((_, max_receive)) = &self.redrive
                        && e.receive_count >= *max_receive
                    {
                        redriven.push(seq);
                        continue;
                    }
                    e.receive_count += 1;
                    e.visible_at = now + self.visibility;
                    let receipt = format!("{seq}:{}", e.receive_count);
                    e.receipt = Some(receipt.clone());
                    out.push(Message {
                        id: e.id.clone(),
                        receipt,
                        body: e.body.clone(),
                        receive_count: e.receive_count,
                    });
                }
                let moved: Vec<Entry> = redriven
                    .iter()
                    .filter_map(|k| s.entries.remove(k))
                    .collect();
                drop(s);
                if let Some((dlq, _)) = &self.redrive {
                    for e in moved {
                        dlq.push(e.body, e.receive_count);
                    }
                }
                (out, next_visible)
            };
            if !out.is_empty() {
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_visible.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<()> {
        let mut s = self.lock();
        if receipt
            .split(':')
            .next()
            .and_then(|x| x.parse::<u64>().ok())
            .is_none()
        {
            return Err(QueueError {
                op: "delete",
                message: format!("`{receipt}` is not a receipt handle of queue {}", self.name),
                retryable: false,
                source: None,
            });
        }
        if let Some((seq, _)) = Self::find_by_receipt(&mut s, receipt) {
            s.entries.remove(&seq);
        }
        drop(s);
        self.notify.notify_waiters();
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<()> {
        let mut s = self.lock();
        match Self::find_by_receipt(&mut s, receipt) {
            Some((_, e)) => {
                e.visible_at = Instant::now() + timeout;
                drop(s);
                self.notify.notify_waiters();
                Ok(())
            }
            None => Err(QueueError {
                op: "change_visibility",
                message: format!(
                    "receipt `{receipt}` is no longer current on queue {}",
                    self.name
                ),
                retryable: false,
                source: None,
            }),
        }
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let now = Instant::now();
        let s = self.lock();
        let visible = s.entries.values().filter(|e| e.visible_at <= now).count() as u64;
        Ok(QueueDepth {
            visible,
            in_flight: s.entries.len() as u64 - visible,
        })
    }
}
