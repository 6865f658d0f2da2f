//! The attempt record of a running chunk: written before the chunk reads anything,
//! rewritten at each stage and, for a worker that renews its message, at each renewal
//! (`alive_ms`), so that `status` can tell a killed attempt from a slow one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::Result;
use crate::clock::now_ms;
use crate::job::{AttemptRecord, layout, to_json_bytes};
use crate::store::DynStore;

/// How a worker's attempts are bounded in time: what lets `status` call a killed one lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Lease {
    /// The queue's visibility timeout.
    pub visibility: Option<Duration>,
    /// Whether the worker renews the visibility while a chunk runs (the fleet): the
    /// record is then refreshed at the same pace, a third of the timeout.
    pub renewed: bool,
    /// The end of the invocation running the attempts (a Lambda deadline), ms since the epoch.
    pub deadline_ms: Option<u64>,
}

impl Lease {
    /// How often a renewing worker says it is alive: as often as it renews the message,
    /// so three renewals are missed before `status` calls the attempt lost.
    fn beat_every(&self) -> Option<Duration> {
        match self.visibility {
            Some(v) if self.renewed => Some((v / 3).max(Duration::from_millis(100))),
            _ => None,
        }
    }
}

/// The live attempt record of one chunk attempt. Dropping it stops the heartbeat.
pub(super) struct AttemptTrace {
    store: DynStore,
    key: Arc<str>,
    record: Arc<Mutex<AttemptRecord>>,
    beat: Option<JoinHandle<()>>,
}

/// Writes `record` at `key`.
async fn put(store: &DynStore, key: &str, record: &AttemptRecord) -> Result<()> {
    store
        .put(key, to_json_bytes("attempt record", record)?)
        .await?;
    Ok(())
}

impl AttemptTrace {
    /// Writes the first record (a failure to write it fails the attempt: without it a
    /// killed worker would leave no trace) and starts the heartbeat of a renewing worker.
    pub async fn start(store: DynStore, record: AttemptRecord, lease: Lease) -> Result<Self> {
        let key = layout::attempt(&record.job_id, &record.chunk_id);
        Self::start_at(store, key, record, lease).await
    }

    /// [`start`](Self::start), the record at `key` (a compaction bin's attempts are
    /// kept apart from the chunks').
    pub async fn start_at(
        store: DynStore,
        key: String,
        mut record: AttemptRecord,
        lease: Lease,
    ) -> Result<Self> {
        let key: Arc<str> = key.into();
        record.visibility_timeout_s = lease.visibility.map(|v| v.as_secs().max(1));
        record.deadline_ms = lease.deadline_ms;
        if lease.renewed {
            record.alive_ms = Some(record.started_ms);
        }
        put(&store, &key, &record).await?;
        let record = Arc::new(Mutex::new(record));
        let beat = lease.beat_every().map(|every| {
            let (store, record, key) = (store.clone(), record.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    // Held across the write: a stage change and a beat never land out of
                    // order (a beat must not put back an earlier stage).
                    let mut r = record.lock().await;
                    r.alive_ms = Some(now_ms());
                    if let Err(e) = put(&store, &key, &r).await {
                        // The next beat tries again; only missing a whole visibility
                        // timeout of them makes the attempt look lost.
                        warn!(error = %e, chunk_id = %r.chunk_id, "attempt heartbeat failed");
                    }
                }
            })
        });
        Ok(AttemptTrace {
            store,
            key,
            record,
            beat,
        })
    }

    /// Records that the attempt reached `stage`.
    pub async fn stage(&self, stage: &str) -> Result<()> {
        let mut r = self.record.lock().await;
        r.stage = stage.to_string();
        if r.alive_ms.is_some() {
            r.alive_ms = Some(now_ms());
        }
        put(&self.store, &self.key, &r).await
    }
}

impl AttemptTrace {
    /// Stops the heartbeat once any write of it in flight has landed.
    pub async fn stop(mut self) {
        // A beat holds the lock across its write: with the lock taken none is in flight,
        // and aborted now the task cannot start another.
        let record = self.record.clone();
        let _guard = record.lock().await;
        if let Some(b) = self.beat.take() {
            b.abort();
        }
    }
}

impl Drop for AttemptTrace {
    fn drop(&mut self) {
        if let Some(b) = self.beat.take() {
            b.abort();
        }
    }
}
