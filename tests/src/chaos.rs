//! Fault injection for the chaos suite: a store that fails (and sometimes succeeds but
//! reports a failure), a queue that duplicates deliveries and half-fails batch sends, and
//! simulated worker crashes at every point of the chunk protocol — all driven by one
//! seeded generator, so a failing seed can be replayed.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fanout::queue::{Message, Queue, QueueDepth, QueueError};
use fanout::sample::SplitMix;
use fanout::store::{DynStore, ObjectMeta, ObjectStore, PutOutcome, StoreError, SwapOutcome};
use fanout::worker::{FaultPoint, Faults};

/// Probabilities of each fault, per opportunity.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// A store call fails with a retryable error before doing anything.
    pub store_error: f64,
    /// A write succeeds but reports a failure (the response was lost).
    pub store_lost_ack: f64,
    /// A worker crashes at a protocol point.
    pub crash: f64,
    /// A received message is delivered a second time.
    pub duplicate: f64,
    /// A batch send fails after part of it went through.
    pub partial_send: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            store_error: 0.04,
            store_lost_ack: 0.04,
            crash: 0.12,
            duplicate: 0.1,
            partial_send: 0.3,
        }
    }
}

/// The seeded source of faults and their tally.
pub struct Injector {
    rng: Mutex<SplitMix>,
    created: Mutex<BTreeMap<String, u64>>,
    rates: Rates,
    counts: Mutex<BTreeMap<String, u64>>,
    enabled: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Injector({:?})", self.counts())
    }
}

impl Injector {
    /// Faults from `seed` at `rates`.
    pub fn new(seed: u64, rates: Rates) -> Arc<Self> {
        Arc::new(Injector {
            rng: Mutex::new(SplitMix::new(seed)),
            created: Mutex::new(BTreeMap::new()),
            rates,
            counts: Mutex::new(BTreeMap::new()),
            enabled: true.into(),
        })
    }

    /// Stops injecting (for the checks after a run).
    pub fn disable(&self) {
        self.enabled
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn roll(&self, p: f64, kind: &str) -> bool {
        if !self.enabled.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let x = self.rng.lock().unwrap().next_u64() as f64 / u64::MAX as f64;
        let hit = x < p;
        if hit {
            *self
                .counts
                .lock()
                .unwrap()
                .entry(kind.to_string())
                .or_insert(0) += 1;
        }
        hit
    }

    /// Faults injected so far, by kind.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    /// How many times each key was created by a create-if-absent write.
    pub fn creations(&self) -> BTreeMap<String, u64> {
        self.created.lock().unwrap().clone()
    }

    /// Total faults injected.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

fn injected(op: &'static str, key: &str) -> StoreError {
    StoreError::Request {
        op,
        key: key.to_string(),
        message: "503 SlowDown (injected)".into(),
        retryable: true,
        source: None,
    }
}

/// A store wrapper that fails a share of calls.
#[derive(Debug)]
pub struct FaultyStore {
    /// The real store.
    pub inner: DynStore,
    /// The faults.
    pub inj: Arc<Injector>,
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, prefix: &str) -> fanout::store::Result<Vec<ObjectMeta>> {
        if self
            .inj
            .roll(self.inj.rates.store_error / 2.0, "store.list")
        {
            return Err(injected("list", prefix));
        }
        self.inner.list(prefix).await
    }
    async fn head(&self, key: &str) -> fanout::store::Result<Option<ObjectMeta>> {
        if self.inj.roll(self.inj.rates.store_error, "store.head") {
            return Err(injected("head", key));
        }
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> fanout::store::Result<Bytes> {
        if self.inj.roll(self.inj.rates.store_error, "store.get") {
            return Err(injected("get", key));
        }
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> fanout::store::Result<Bytes> {
        if self.inj.roll(self.inj.rates.store_error, "store.get_range") {
            return Err(injected("get_range", key));
        }
        self.inner.get_range(key, range).await
    }
    async fn get_range_if(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
    ) -> fanout::store::Result<Bytes> {
        if self.inj.roll(self.inj.rates.store_error, "store.get_range") {
            return Err(injected("get_range", key));
        }
        // Forwarded, so reads against S3 keep their `If-Match`.
        self.inner.get_range_if(key, range, etag).await
    }
    async fn put(&self, key: &str, data: Bytes) -> fanout::store::Result<()> {
        if self.inj.roll(self.inj.rates.store_error, "store.put") {
            return Err(injected("put", key));
        }
        self.inner.put(key, data).await?;
        if self
            .inj
            .roll(self.inj.rates.store_lost_ack, "store.put_lost_ack")
        {
            return Err(injected("put", key));
        }
        Ok(())
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> fanout::store::Result<PutOutcome> {
        if self
            .inj
            .roll(self.inj.rates.store_error, "store.put_if_absent")
        {
            return Err(injected("put_if_absent", key));
        }
        let out = self.inner.put_if_absent(key, data).await?;
        if out == PutOutcome::Created {
            *self
                .inj
                .created
                .lock()
                .unwrap()
                .entry(format!("{}{key}", self.inner.describe()))
                .or_insert(0) += 1;
        }
        if self.inj.roll(
            self.inj.rates.store_lost_ack,
            "store.put_if_absent_lost_ack",
        ) {
            return Err(injected("put_if_absent", key));
        }
        Ok(out)
    }
    async fn put_if_match(
        &self,
        key: &str,
        data: Bytes,
        etag: &str,
    ) -> fanout::store::Result<SwapOutcome> {
        if self
            .inj
            .roll(self.inj.rates.store_error, "store.put_if_match")
        {
            return Err(injected("put_if_match", key));
        }
        self.inner.put_if_match(key, data, etag).await
    }
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> fanout::store::Result<Vec<ObjectMeta>> {
        if self
            .inj
            .roll(self.inj.rates.store_error / 2.0, "store.list")
        {
            return Err(injected("list", prefix));
        }
        self.inner.list_after(prefix, start_after).await
    }
    async fn delete(&self, key: &str) -> fanout::store::Result<()> {
        self.inner.delete(key).await
    }
    async fn copy_from(
        &self,
        source: &fanout::location::Location,
        key: &str,
    ) -> fanout::store::Result<()> {
        if self.inj.roll(self.inj.rates.store_error, "store.copy") {
            return Err(injected("copy", key));
        }
        // Forwarded: the default refuses, and finalize publishes staged files this way.
        self.inner.copy_from(source, key).await?;
        if self
            .inj
            .roll(self.inj.rates.store_lost_ack, "store.copy_lost_ack")
        {
            return Err(injected("copy", key));
        }
        Ok(())
    }
}

/// A queue wrapper: duplicate deliveries and partial batch-send failures.
#[derive(Debug)]
pub struct FaultyQueue {
    /// The real queue.
    pub inner: Arc<dyn Queue>,
    /// The faults.
    pub inj: Arc<Injector>,
}

#[async_trait]
impl Queue for FaultyQueue {
    async fn send(&self, bodies: &[String]) -> fanout::queue::Result<()> {
        if bodies.len() > 1
            && self
                .inj
                .roll(self.inj.rates.partial_send, "queue.partial_send")
        {
            let half = bodies.len() / 2;
            self.inner.send(&bodies[..half]).await?;
            return Err(QueueError {
                op: "send",
                message: format!(
                    "{} of {} entries failed (injected)",
                    bodies.len() - half,
                    bodies.len()
                ),
                retryable: true,
                source: None,
            });
        }
        self.inner.send(bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration) -> fanout::queue::Result<Vec<Message>> {
        let msgs = self.inner.receive(max, wait).await?;
        for m in &msgs {
            if self
                .inj
                .roll(self.inj.rates.duplicate, "queue.duplicate_delivery")
            {
                self.inner.send(std::slice::from_ref(&m.body)).await?;
            }
        }
        Ok(msgs)
    }
    async fn delete(&self, receipt: &str) -> fanout::queue::Result<()> {
        self.inner.delete(receipt).await
    }
    async fn change_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> fanout::queue::Result<()> {
        self.inner.change_visibility(receipt, timeout).await
    }
    async fn depth(&self) -> fanout::queue::Result<QueueDepth> {
        self.inner.depth().await
    }
}

/// Simulated worker crashes.
#[derive(Debug)]
pub struct RandomCrashes(pub Arc<Injector>);

impl Faults for RandomCrashes {
    fn fire(&self, point: FaultPoint, _chunk_id: &fanout::ids::ChunkId) -> bool {
        self.0.roll(self.0.rates.crash, &format!("crash.{point:?}"))
    }
}
